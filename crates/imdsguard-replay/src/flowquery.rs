//! A recorded flow as a policy question: who talked to whom, on which port, with which HTTP
//! request, and what the recording says happened.

use crate::{GroupBy, Outcome};
use imdsguard_flow::flow::{Endpoint, Flow, FlowType, L7FlowType, Verdict, layer4, layer7};
use imdsguard_policy::identity::{CLUSTER_LABEL, NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX};
use imdsguard_policy::labels::{Label, LabelSet};
use imdsguard_policy::{EndpointSpec, FlowQuery, HttpRequest, Identity, Peer, Protocol};
use std::net::IpAddr;

/// Why a flow is not judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Reply,
    NotPolicyDrop,
    Unjudgeable,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerKey {
    Pod { namespace: String, name: String },
    Identity(u32),
    Ip(IpAddr),
}

impl PeerKey {
    fn peer(&self) -> Peer {
        match self {
            PeerKey::Pod { namespace, name } => Peer::Endpoint(format!("{namespace}/{name}")),
            PeerKey::Identity(id) => Peer::Identity(Identity(*id)),
            PeerKey::Ip(ip) => Peer::Ip(*ip),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpKey {
    method: String,
    path: String,
    host: String,
    headers: Vec<(String, String)>,
}

/// Everything the verdict depends on; flows with equal keys get equal verdicts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query {
    pub from: PeerKey,
    pub to: PeerKey,
    pub protocol: Protocol,
    pub port: u16,
    pub http: Option<HttpKey>,
}

impl Query {
    pub fn flow_query(&self) -> FlowQuery {
        FlowQuery {
            from: self.from.peer(),
            to: self.to.peer(),
            protocol: self.protocol,
            port: self.port,
            http: self.http.as_ref().map(|h| HttpRequest {
                method: h.method.clone(),
                path: h.path.clone(),
                host: h.host.clone(),
                headers: h.headers.clone(),
            }),
        }
    }
}

/// A judged flow's description.
#[derive(Debug, Clone)]
pub struct Observed {
    pub query: Query,
    pub before: Outcome,
    pub source_label: String,
    pub destination_label: String,
    /// `METHOD /path` without the query.
    pub route: Option<String>,
    pub url: Option<String>,
}

/// Drop reasons that are policy decisions (docs/policy-semantics.md §6.2).
const POLICY_DROPS: [u32; 3] = [133, 181, 189];

/// Reserved identities that are not addresses outside the cluster: judged by identity, because
/// the engine cannot tell a node's address from the world's.
fn reserved_non_world(identity: u32) -> bool {
    matches!(identity, 1 | 3..=8)
}

#[allow(deprecated)] // `drop_reason` is deprecated in Hubble's proto but older recordings carry only it.
pub fn observe(flow: &Flow, group_by: GroupBy) -> Result<Observed, Skip> {
    let l7 = flow
        .l7
        .as_ref()
        .filter(|_| flow.r#type == FlowType::L7 as i32);
    if flow.is_reply.is_some_and(|r| r.value)
        || l7.is_some_and(|l| l.r#type == L7FlowType::Response as i32)
    {
        return Err(Skip::Reply);
    }
    let http = l7.and_then(|l| match &l.record {
        Some(layer7::Record::Http(h)) => Some(h),
        _ => None,
    });
    let before = match Verdict::try_from(flow.verdict) {
        Ok(Verdict::Forwarded | Verdict::Redirected | Verdict::Traced | Verdict::Translated) => {
            Outcome::Allowed
        }
        Ok(Verdict::Audit) => Outcome::Audited,
        Ok(Verdict::Dropped) if http.is_some() => Outcome::HttpDenied,
        // A refused DNS or Kafka request: imdsguard does not judge those parsers.
        Ok(Verdict::Dropped) if l7.is_some() => return Err(Skip::Unjudgeable),
        Ok(Verdict::Dropped) => {
            let reason = u32::try_from(flow.drop_reason_desc)
                .ok()
                .filter(|r| *r != 0)
                .unwrap_or(flow.drop_reason);
            if !POLICY_DROPS.contains(&reason) {
                return Err(Skip::NotPolicyDrop);
            }
            Outcome::Denied
        }
        _ => return Err(Skip::Unjudgeable),
    };
    let ip = flow.ip.as_ref().ok_or(Skip::Unjudgeable)?;
    let src_ip: IpAddr = ip.source.parse().map_err(|_| Skip::Unjudgeable)?;
    let dst_ip: IpAddr = ip.destination.parse().map_err(|_| Skip::Unjudgeable)?;
    let (protocol, port) = match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(layer4::Protocol::Tcp(t)) => (Protocol::Tcp, t.destination_port),
        Some(layer4::Protocol::Udp(u)) => (Protocol::Udp, u.destination_port),
        Some(layer4::Protocol::Sctp(s)) => (Protocol::Sctp, s.destination_port),
        Some(layer4::Protocol::IcmPv4(i)) => (Protocol::Icmp, i.r#type),
        Some(layer4::Protocol::IcmPv6(i)) => (Protocol::Icmpv6, i.r#type),
        _ => return Err(Skip::Unjudgeable),
    };
    let port = u16::try_from(port).map_err(|_| Skip::Unjudgeable)?;
    let from = peer_key(flow.source.as_ref(), src_ip);
    let to = peer_key(flow.destination.as_ref(), dst_ip);
    let (http_key, route, url) = match http {
        Some(h) => {
            let (host, path) = split_url(&h.url);
            let route = format!("{} {}", h.method, path.split('?').next().unwrap_or(path));
            let key = HttpKey {
                method: h.method.clone(),
                path: path.to_owned(),
                host: host.to_owned(),
                headers: h
                    .headers
                    .iter()
                    .map(|x| (x.key.clone(), x.value.clone()))
                    .collect(),
            };
            (Some(key), Some(route), Some(h.url.clone()))
        }
        None => (None, None, None),
    };
    let source_label = match (&from, group_by) {
        (PeerKey::Pod { namespace, name }, GroupBy::Workload) => flow
            .source
            .as_ref()
            .and_then(|e| e.workloads.first())
            .map(|w| format!("{namespace}/{}", w.name))
            .unwrap_or_else(|| format!("{namespace}/{name}")),
        (k, _) => label(k),
    };
    let destination_label = {
        let addr = label(&to);
        match protocol {
            Protocol::Tcp => format!("{addr}:{port}"),
            Protocol::Icmp | Protocol::Icmpv6 => {
                format!("{addr} {} type {port}", protocol.as_str())
            }
            p => format!("{addr}:{port}/{}", p.as_str()),
        }
    };
    Ok(Observed {
        query: Query {
            from,
            to,
            protocol,
            port,
            http: http_key,
        },
        before,
        source_label,
        destination_label,
        route,
        url,
    })
}

fn peer_key(ep: Option<&Endpoint>, ip: IpAddr) -> PeerKey {
    match ep {
        Some(e) if !e.pod_name.is_empty() => PeerKey::Pod {
            namespace: if e.namespace.is_empty() {
                "default".to_owned()
            } else {
                e.namespace.clone()
            },
            name: e.pod_name.clone(),
        },
        Some(e) if reserved_non_world(e.identity) => PeerKey::Identity(e.identity),
        _ => PeerKey::Ip(ip),
    }
}

fn label(k: &PeerKey) -> String {
    match k {
        PeerKey::Pod { namespace, name } => format!("{namespace}/{name}"),
        PeerKey::Identity(id) => Identity(*id).to_string(),
        PeerKey::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        PeerKey::Ip(ip) => ip.to_string(),
    }
}

/// `http://169.254.169.254:80/metadata?x` → (`169.254.169.254`, `/metadata?x`). The default port
/// is dropped: clients rarely send it in Host, and `host` rules match what they send.
fn split_url(url: &str) -> (&str, &str) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = authority
        .strip_suffix(":80")
        .filter(|_| url.starts_with("http://"))
        .unwrap_or(authority);
    (authority, path)
}

/// The pods a flow names, as the engine should know them: the labels the flow carries (its
/// identity's labels) plus the namespace labels Cilium always adds.
pub fn pods(flow: &Flow, q: &Query) -> Vec<EndpointSpec> {
    let mut out = Vec::new();
    for (key, ep, ip) in [
        (
            &q.from,
            flow.source.as_ref(),
            flow.ip.as_ref().map(|i| &i.source),
        ),
        (
            &q.to,
            flow.destination.as_ref(),
            flow.ip.as_ref().map(|i| &i.destination),
        ),
    ] {
        let (PeerKey::Pod { namespace, name }, Some(ep)) = (key, ep) else {
            continue;
        };
        let mut labels: Vec<Label> = ep.labels.iter().map(|l| Label::parse(l)).collect();
        let mut ensure = |key: &str, value: &str| {
            if !labels.iter().any(|l| &*l.key == key) {
                labels.push(Label::k8s(key, value));
            }
        };
        ensure(NAMESPACE_LABEL, namespace);
        ensure(
            &format!("{NAMESPACE_LABELS_PREFIX}kubernetes.io/metadata.name"),
            namespace,
        );
        let cluster = if ep.cluster_name.is_empty() {
            "default"
        } else {
            &ep.cluster_name
        };
        ensure(CLUSTER_LABEL, cluster);
        out.push(EndpointSpec {
            name: name.clone(),
            namespace: namespace.clone(),
            ips: ip.and_then(|s| s.parse().ok()).into_iter().collect(),
            raw_labels: Some(LabelSet::new(labels)),
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_and_target() {
        assert_eq!(
            split_url("http://169.254.169.254:80/metadata/instance?api-version=1"),
            ("169.254.169.254", "/metadata/instance?api-version=1")
        );
        assert_eq!(
            split_url("http://example.com:8080"),
            ("example.com:8080", "/")
        );
        assert_eq!(split_url("/x?y"), ("", "/x?y"));
    }
}
