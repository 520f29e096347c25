//! The two sides of a flow as the UI groups them: a workload (pods of one Deployment, DaemonSet
//! … in a namespace), the host, the world, a CIDR, a reserved identity, or a metadata service.
//!
//! A flow is oriented from the caller to the callee: a side that is a metadata address is always
//! the callee (Hubble records some responses with the client as source), otherwise a reply is
//! turned around.

use crate::metadata::{MetadataService, metadata_service};
use imdsguard_flow::flow::{Endpoint, Flow, layer4};
use imdsguard_flow::names;
use serde::Serialize;

/// What kind of map node a side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerKind {
    Workload,
    Host,
    /// Another reserved identity: remote-node, kube-apiserver, health, ingress, init, unmanaged,
    /// unknown.
    Reserved,
    Cidr,
    /// A world address known by its DNS name (Hubble's `source_names`/`destination_names`).
    Fqdn,
    World,
    Metadata,
}

/// One side of a flow, as a map node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Stable and unique on the map: `namespace/workload`, `host`, `world`, `cidr:…`,
    /// `fqdn:…`, `reserved:…`, `metadata:<ip>`.
    pub id: String,
    pub kind: PeerKind,
    pub label: String,
    /// The box the node is drawn in: the namespace for workloads, else the kind's group
    /// (`host`, `world`, `cidr`, `cluster`, `metadata`).
    pub group: String,
    pub namespace: String,
    /// Deployment, DaemonSet … (empty when the flow does not say).
    pub workload_kind: String,
    pub pod: String,
    pub identity: u32,
    pub ip: String,
    pub metadata: Option<MetadataService>,
}

fn label_value<'a>(labels: &'a [String], key: &str) -> Option<&'a str> {
    labels.iter().find_map(|l| {
        let (_, kv) = l.split_once(':')?;
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

fn has_label(labels: &[String], label: &str) -> bool {
    labels.iter().any(|l| l == label)
}

impl Peer {
    /// The side of a flow with endpoint `ep` at `ip`:`port`, known by `names` (DNS).
    pub fn of(ep: Option<&Endpoint>, ip: &str, port: u32, names: &[String]) -> Peer {
        let empty = Endpoint::default();
        let ep = ep.unwrap_or(&empty);
        let mut peer = Peer {
            id: String::new(),
            kind: PeerKind::World,
            label: String::new(),
            group: String::new(),
            namespace: ep.namespace.clone(),
            workload_kind: String::new(),
            pod: ep.pod_name.clone(),
            identity: ep.identity,
            ip: ip.to_owned(),
            metadata: None,
        };
        if let Some(service) = metadata_service(ip, port) {
            let ip: std::net::IpAddr = match ip.parse::<std::net::IpAddr>() {
                Ok(a) => a.to_canonical(),
                Err(_) => return peer,
            };
            peer.metadata = Some(service);
            return Peer {
                id: format!("metadata:{ip}"),
                kind: PeerKind::Metadata,
                label: format!("{} {ip}", service.label()),
                group: "metadata".into(),
                ..peer
            };
        }
        let labels = &ep.labels;
        if !ep.pod_name.is_empty() {
            let workload = ep.workloads.first();
            let name = workload
                .map(|w| w.name.as_str())
                .filter(|n| !n.is_empty())
                .or_else(|| label_value(labels, "app.kubernetes.io/name"))
                .or_else(|| label_value(labels, "app"))
                .or_else(|| label_value(labels, "k8s-app"))
                .unwrap_or(&ep.pod_name)
                .to_owned();
            return Peer {
                id: format!("{}/{name}", ep.namespace),
                kind: PeerKind::Workload,
                label: name,
                group: ep.namespace.clone(),
                workload_kind: workload.map(|w| w.kind.clone()).unwrap_or_default(),
                ..peer
            };
        }
        let reserved = |name: &str| {
            ep.identity != 0 && names::reserved_identity_name(ep.identity) == Some(name)
                || has_label(labels, &format!("reserved:{name}"))
        };
        if reserved("host") {
            return Peer {
                id: "host".into(),
                kind: PeerKind::Host,
                label: "host".into(),
                group: "host".into(),
                ..peer
            };
        }
        for name in [
            "remote-node",
            "kube-apiserver",
            "health",
            "ingress",
            "init",
            "unmanaged",
        ] {
            if reserved(name) {
                return Peer {
                    id: format!("reserved:{name}"),
                    kind: PeerKind::Reserved,
                    label: name.into(),
                    group: "cluster".into(),
                    ..peer
                };
            }
        }
        let group_label = labels.iter().find_map(|l| {
            l.strip_prefix("cidrgroup:")
                .map(|g| g.rsplit('/').next().unwrap_or(g))
        });
        let cidr = group_label
            .map(|g| (format!("cidrgroup:{g}"), g.to_owned()))
            .or_else(|| {
                labels
                    .iter()
                    .find_map(|l| l.strip_prefix("cidr:"))
                    .map(|c| (format!("cidr:{c}"), c.to_owned()))
            });
        if let Some((id, label)) = cidr {
            return Peer {
                id,
                kind: PeerKind::Cidr,
                label,
                group: "cidr".into(),
                ..peer
            };
        }
        if let Some(name) = names.first().filter(|n| !n.is_empty()) {
            return Peer {
                id: format!("fqdn:{name}"),
                kind: PeerKind::Fqdn,
                label: name.clone(),
                group: "world".into(),
                ..peer
            };
        }
        let world = reserved("world")
            || reserved("world-ipv4")
            || reserved("world-ipv6")
            || (ep.identity == 0 && labels.is_empty() && !ip.is_empty());
        if world {
            return Peer {
                id: "world".into(),
                kind: PeerKind::World,
                label: "world".into(),
                group: "world".into(),
                ..peer
            };
        }
        let name = names::reserved_identity_name(ep.identity).unwrap_or("unknown");
        Peer {
            id: format!("reserved:{name}"),
            kind: PeerKind::Reserved,
            label: name.into(),
            group: "cluster".into(),
            ..peer
        }
    }
}

/// `(protocol, source port, destination port)`; ports are 0 for protocols without them.
pub fn l4(f: &Flow) -> (&'static str, u32, u32) {
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(layer4::Protocol::Tcp(t)) => ("TCP", t.source_port, t.destination_port),
        Some(layer4::Protocol::Udp(u)) => ("UDP", u.source_port, u.destination_port),
        Some(layer4::Protocol::Sctp(s)) => ("SCTP", s.source_port, s.destination_port),
        Some(layer4::Protocol::IcmPv4(_)) => ("ICMPv4", 0, 0),
        Some(layer4::Protocol::IcmPv6(_)) => ("ICMPv6", 0, 0),
        Some(layer4::Protocol::Vrrp(_)) => ("VRRP", 0, 0),
        Some(layer4::Protocol::Igmp(_)) => ("IGMP", 0, 0),
        None => ("", 0, 0),
    }
}

/// A flow's caller and callee (see the module docs), and the callee's port.
#[derive(Debug, Clone)]
pub struct Sides {
    pub caller: Peer,
    pub callee: Peer,
    pub protocol: &'static str,
    pub port: u32,
}

/// A flow's two ends as it writes them (source, destination), before any turning.
pub struct Ends<'a> {
    pub src: Peer,
    pub dst: Peer,
    pub sip: &'a str,
    pub dip: &'a str,
    pub protocol: &'static str,
    pub sport: u32,
    pub dport: u32,
}

impl<'a> Ends<'a> {
    pub fn of(f: &'a Flow) -> Ends<'a> {
        let (sip, dip) =
            f.ip.as_ref()
                .map_or(("", ""), |ip| (ip.source.as_str(), ip.destination.as_str()));
        let (protocol, sport, dport) = l4(f);
        Ends {
            src: Peer::of(f.source.as_ref(), sip, sport, &f.source_names),
            dst: Peer::of(f.destination.as_ref(), dip, dport, &f.destination_names),
            sip,
            dip,
            protocol,
            sport,
            dport,
        }
    }
}

impl Sides {
    pub fn of(f: &Flow) -> Sides {
        let Ends {
            src,
            dst,
            protocol,
            sport,
            dport,
            ..
        } = Ends::of(f);
        let reply = f.is_reply.as_ref().is_some_and(|r| r.value);
        let turn = match (src.metadata.is_some(), dst.metadata.is_some()) {
            (true, false) => true,
            (false, true) => false,
            _ => reply,
        };
        if turn {
            Sides {
                caller: dst,
                callee: src,
                protocol,
                port: sport,
            }
        } else {
            Sides {
                caller: src,
                callee: dst,
                protocol,
                port: dport,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imdsguard_flow::flow::Workload;

    fn ep(identity: u32, ns: &str, pod: &str, labels: &[&str]) -> Endpoint {
        Endpoint {
            identity,
            namespace: ns.into(),
            pod_name: pod.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn sides_become_map_nodes() {
        let mut with_workload = ep(14226, "go-webapp", "go-webapp-847857f68-2qlnd", &[]);
        with_workload.workloads = vec![Workload {
            name: "go-webapp".into(),
            kind: "Deployment".into(),
        }];
        // (endpoint, ip, port, DNS names) → (id, kind, group)
        type Case<'a> = (
            Endpoint,
            &'a str,
            u32,
            Vec<String>,
            &'a str,
            PeerKind,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                with_workload,
                "10.244.1.17",
                40132,
                vec![],
                "go-webapp/go-webapp",
                PeerKind::Workload,
                "go-webapp",
            ),
            (
                ep(
                    21152,
                    "logging",
                    "fluent-bit-qg7vq",
                    &["k8s:app.kubernetes.io/name=fluent-bit"],
                ),
                "10.244.1.23",
                1,
                vec![],
                "logging/fluent-bit",
                PeerKind::Workload,
                "logging",
            ),
            (
                ep(5, "ns", "lonely-pod", &[]),
                "10.0.0.9",
                1,
                vec![],
                "ns/lonely-pod",
                PeerKind::Workload,
                "ns",
            ),
            (
                ep(
                    16777218,
                    "",
                    "",
                    &["cidr:169.254.169.254/32", "reserved:world"],
                ),
                "169.254.169.254",
                80,
                vec![],
                "metadata:169.254.169.254",
                PeerKind::Metadata,
                "metadata",
            ),
            (
                ep(1, "", "", &["reserved:host"]),
                "10.10.0.6",
                53210,
                vec![],
                "host",
                PeerKind::Host,
                "host",
            ),
            (
                ep(6, "", "", &[]),
                "10.10.0.7",
                1,
                vec![],
                "reserved:remote-node",
                PeerKind::Reserved,
                "cluster",
            ),
            (
                ep(16777300, "", "", &["cidr:10.0.0.0/8", "reserved:world"]),
                "10.1.2.3",
                443,
                vec![],
                "cidr:10.0.0.0/8",
                PeerKind::Cidr,
                "cidr",
            ),
            (
                ep(
                    16777301,
                    "",
                    "",
                    &[
                        "cidrgroup:io.cilium.policy.cidrgroupname/azure-imds",
                        "reserved:world",
                    ],
                ),
                "1.2.3.4",
                443,
                vec![],
                "cidrgroup:azure-imds",
                PeerKind::Cidr,
                "cidr",
            ),
            (
                ep(2, "", "", &["reserved:world"]),
                "1.1.1.1",
                443,
                vec!["one.one.one.one".into()],
                "fqdn:one.one.one.one",
                PeerKind::Fqdn,
                "world",
            ),
            (
                ep(2, "", "", &["reserved:world"]),
                "1.1.1.1",
                443,
                vec![],
                "world",
                PeerKind::World,
                "world",
            ),
            (
                ep(0, "", "", &[]),
                "",
                0,
                vec![],
                "reserved:unknown",
                PeerKind::Reserved,
                "cluster",
            ),
            (
                ep(0, "", "", &[]),
                "168.63.129.16",
                53,
                vec![],
                "world",
                PeerKind::World,
                "world",
            ),
        ];
        for (e, ip, port, names, id, kind, group) in cases {
            let p = Peer::of(Some(&e), ip, port, &names);
            assert_eq!(
                (p.id.as_str(), p.kind, p.group.as_str()),
                (id, kind, group),
                "{e:?} {ip}"
            );
        }
        let p = Peer::of(None, "::ffff:169.254.169.254", 80, &[]);
        assert_eq!(
            (p.id.as_str(), p.label.as_str()),
            ("metadata:169.254.169.254", "IMDS 169.254.169.254")
        );
        let p = Peer::of(None, "168.63.129.16", 32526, &[]);
        assert_eq!(p.label, "WireServer 168.63.129.16");
    }
}
