//! Datapath events as Hubble flows (docs/hubble.md#flow-fields and
//! #verdicts-event-types-and-drop-reasons). Pure: what the agent knows
//! about endpoints, identities and policies comes in through `Directory`.

use crate::abi::{
    DIR_EGRESS, EV_DROP, EV_POLICY_VERDICT, EV_TRACE, Event, PROC_FROM_HOOK, PROC_HAS_SOCK,
    PROC_HAS_TASK,
};
use imdsguard_hubble_proto::flow::{
    CiliumEventType, Endpoint, Flow, FlowType, IcmPv4, IcmPv6, Ip, IpVersion, Layer4,
    NetworkInterface, Policy, Tcp, TcpFlags, TraceObservationPoint, TrafficDirection, Udp, Verdict,
    layer4,
};
use imdsguard_hubble_proto::process::{self, ProcessInfo};
use imdsguard_hubble_proto::wkt::Timestamp;
use std::net::IpAddr;

/// Cilium's monitor event types (`event_type.type`).
const MONITOR_DROP: i32 = 1;
const MONITOR_TRACE: i32 = 4;
const MONITOR_POLICY_VERDICT: i32 = 5;

/// What the agent knows about the world, for naming the two sides of a flow.
pub trait Directory {
    /// A local pod by address: ID, identity, namespace, labels, pod name, workloads.
    fn endpoint(&self, ip: IpAddr) -> Option<Endpoint>;
    /// The labels of any identity (`reserved:world`, `cidr:169.254.169.254/32` …).
    fn identity_labels(&self, identity: u32) -> Vec<String>;
    /// The policy behind a table entry's rule ID.
    fn policy(&self, rule_id: u32) -> Option<Policy>;
    fn interface_name(&self, ifindex: u32) -> Option<String>;
    /// The name of the container whose cgroup (or a descendant of it) has this id.
    fn container(&self, cgroup_id: u64) -> Option<String> {
        let _ = cgroup_id;
        None
    }
    /// A local endpoint by its datapath ID, for events judged at connect()/sendmsg() (hostNetwork
    /// pods), which have no pod address.
    fn endpoint_by_id(&self, ep_id: u32) -> Option<Endpoint> {
        let _ = ep_id;
        None
    }
    /// (pid, comm) of the process behind a cgroup when it is the cgroup's only one: for sockets
    /// opened before the hooks, which carry no process.
    fn process_of(&self, cgroup_id: u64) -> Option<(u32, String)> {
        let _ = cgroup_id;
        None
    }
}

/// Converts one event. `wall_offset_ns` turns the event's CLOCK_MONOTONIC time into wall time.
// `Summary` and `drop_reason` are deprecated in Hubble's proto, but the CLI reads them.
#[allow(deprecated)]
pub fn to_flow(e: &Event, dir: &dyn Directory, node_name: &str, wall_offset_ns: i64) -> Flow {
    let (src_ip, dst_ip) = (e.saddr.ip(), e.daddr.ip());
    let side = |ip: IpAddr, identity: u32| match dir.endpoint(ip) {
        Some(mut ep) => {
            ep.identity = identity;
            ep
        }
        None => Endpoint {
            identity,
            labels: dir.identity_labels(identity),
            ..Default::default()
        },
    };
    // A hook's event has no packet: a hostNetwork pod's socket may have no source address yet,
    // and once bound it has the node's, which every hostNetwork pod shares. The pod is named by
    // its endpoint ID.
    let source = match (e.proc_flags & PROC_FROM_HOOK != 0)
        .then_some(e.ep_id)
        .and_then(|id| dir.endpoint_by_id(id))
    {
        Some(mut ep) => {
            ep.identity = e.src_identity;
            ep
        }
        None => side(src_ip, e.src_identity),
    };
    // A reply belongs to the connection, whose direction is the other hook's.
    let egress = (e.dir == DIR_EGRESS) != e.is_reply;
    let direction = if egress {
        TrafficDirection::Egress
    } else {
        TrafficDirection::Ingress
    };
    let nanos = i64::try_from(e.ts_ns)
        .unwrap_or(i64::MAX)
        .saturating_add(wall_offset_ns);
    let mut f = Flow {
        time: Some(Timestamp::new(
            nanos.div_euclid(1_000_000_000),
            nanos.rem_euclid(1_000_000_000) as i32,
        )),
        ip: has_ip(e).then(|| Ip {
            source: src_ip.to_string(),
            destination: dst_ip.to_string(),
            ip_version: if e.ipver == 6 {
                IpVersion::IPv6
            } else {
                IpVersion::IPv4
            } as i32,
            ..Default::default()
        }),
        l4: layer4(e),
        source: Some(source),
        destination: Some(side(dst_ip, e.dst_identity)),
        r#type: FlowType::L3L4 as i32,
        node_name: node_name.to_owned(),
        traffic_direction: direction as i32,
        interface: Some(NetworkInterface {
            index: e.ifindex,
            name: dir.interface_name(e.ifindex).unwrap_or_default(),
        }),
        summary: summary(e),
        ..Default::default()
    };
    let policy = dir.policy(e.rule_id);
    match e.kind {
        EV_POLICY_VERDICT => {
            f.event_type = Some(CiliumEventType {
                r#type: MONITOR_POLICY_VERDICT,
                sub_type: 0,
            });
            f.verdict = verdict(e.verdict) as i32;
            f.policy_match_type = u32::from(e.match_type);
            // An audited verdict carries the reason it would have been dropped for, as
            // Hubble's audit flows do.
            if verdict(e.verdict) == Verdict::Audit && e.sub_type != 0 {
                f.drop_reason = u32::from(e.sub_type);
                f.drop_reason_desc = i32::from(e.sub_type);
            }
            let denied = matches!(verdict(e.verdict), Verdict::Dropped | Verdict::Audit);
            if let Some(p) = policy {
                match (egress, denied) {
                    (true, false) => f.egress_allowed_by.push(p),
                    (true, true) => f.egress_denied_by.push(p),
                    (false, false) => f.ingress_allowed_by.push(p),
                    (false, true) => f.ingress_denied_by.push(p),
                }
            }
            // As Cilium's parser (`decodeIsReply`): a verdict that lets the packet through is for
            // the first packet of a connection, so not a reply; for a denied one the direction is
            // unknown, and Hubble prints `<>`. AUDIT and REDIRECTED let the packet through.
            f.is_reply = (verdict(e.verdict) != Verdict::Dropped)
                .then_some(pbjson_types::BoolValue { value: false });
        }
        EV_DROP => {
            f.event_type = Some(CiliumEventType {
                r#type: MONITOR_DROP,
                sub_type: i32::from(e.sub_type),
            });
            f.verdict = Verdict::Dropped as i32;
            f.drop_reason = u32::from(e.sub_type);
            f.drop_reason_desc = i32::from(e.sub_type);
            // Cilium's drop notifications do not say whether the packet was a reply.
        }
        EV_TRACE => {
            f.event_type = Some(CiliumEventType {
                r#type: MONITOR_TRACE,
                sub_type: i32::from(e.sub_type),
            });
            f.verdict = Verdict::Forwarded as i32;
            f.trace_observation_point = match e.sub_type {
                0 => TraceObservationPoint::ToEndpoint,
                1 => TraceObservationPoint::ToProxy,
                11 => TraceObservationPoint::ToNetwork,
                _ => TraceObservationPoint::UnknownPoint,
            } as i32;
            f.is_reply = Some(pbjson_types::BoolValue { value: e.is_reply });
            f.proxy_port = u32::from(e.proxy_port);
        }
        _ => {}
    }
    attribute(&mut f, e, dir);
    f
}

/// The socket and process behind the flow: Hubble's `socket_cookie` and `cgroup_id`, and
/// imdsguard's process extension (`imdsguard_hubble_proto::process`) with what is known.
fn attribute(f: &mut Flow, e: &Event, dir: &dyn Directory) {
    if e.proc_flags & PROC_HAS_SOCK == 0 {
        return;
    }
    f.socket_cookie = e.sock_cookie;
    f.cgroup_id = e.cgroup_id;
    let mut p = ProcessInfo {
        container: dir.container(e.cgroup_id).unwrap_or_default(),
        ..Default::default()
    };
    if e.proc_flags & PROC_HAS_TASK != 0 {
        p.process = e.comm();
        p.pid = e.pid;
        p.uid = Some(e.uid);
    } else if let Some((pid, comm)) = dir.process_of(e.cgroup_id) {
        // A socket from before the hooks: the cgroup's only process sent it.
        p.process = comm;
        p.pid = pid;
    }
    process::set(f, &p);
}

/// The datapath's verdict codes (`VERDICT_*` in `bpf/datapath.h`) as Hubble's. They are Hubble's
/// numbers except AUDIT: `VERDICT_AUDIT` is 6, which is Hubble's TRACED; Hubble's AUDIT (4) is
/// taken as well, should the datapath move to it.
fn verdict(v: u8) -> Verdict {
    match v {
        1 => Verdict::Forwarded,
        2 => Verdict::Dropped,
        4 | 6 => Verdict::Audit,
        5 => Verdict::Redirected,
        _ => Verdict::Unknown,
    }
}

/// Drop reasons for packets the datapath refused before it read their L4 header (`parse` in
/// `bpf/datapath.c`): an invalid IP header (134), an L4 header too short (135), an IPv6 extension
/// header chain it would not walk (156), a first fragment too short to carry the ports (157), a
/// later fragment whose first was not seen (175).
const DROPS_WITHOUT_L4: [u8; 5] = [134, 135, 156, 157, 175];

/// The event is for an IP packet. A frame the datapath could not read as IPv4 or IPv6 (drop reasons
/// 139 "Unsupported L3 protocol" and 134 before the IP header) has no IP layer in Hubble's flow.
fn has_ip(e: &Event) -> bool {
    matches!(e.ipver, 4 | 6)
}

/// The event's L4 header was read. When it was not (the drops above), the flow has no L4 layer and
/// no ports, and the summary names the IP layer (`IPv4`), as Hubble's does for a packet whose L4
/// header gopacket does not decode (a fragment, an extension header it does not know).
fn has_l4(e: &Event) -> bool {
    has_ip(e) && !(e.kind == EV_DROP && DROPS_WITHOUT_L4.contains(&e.sub_type))
}

fn layer4(e: &Event) -> Option<Layer4> {
    if !has_l4(e) {
        return None;
    }
    let protocol = match e.proto {
        6 => layer4::Protocol::Tcp(Tcp {
            source_port: u32::from(e.sport),
            destination_port: u32::from(e.dport),
            flags: Some(tcp_flags(e.tcp_flags)),
        }),
        17 => layer4::Protocol::Udp(Udp {
            source_port: u32::from(e.sport),
            destination_port: u32::from(e.dport),
        }),
        1 => layer4::Protocol::IcmPv4(IcmPv4 {
            r#type: u32::from(e.dport),
            code: u32::from(e.sport),
        }),
        58 => layer4::Protocol::IcmPv6(IcmPv6 {
            r#type: u32::from(e.dport),
            code: u32::from(e.sport),
        }),
        _ => return None,
    };
    Some(Layer4 {
        protocol: Some(protocol),
    })
}

fn tcp_flags(b: u8) -> TcpFlags {
    TcpFlags {
        fin: b & 0x01 != 0,
        syn: b & 0x02 != 0,
        rst: b & 0x04 != 0,
        psh: b & 0x08 != 0,
        ack: b & 0x10 != 0,
        urg: b & 0x20 != 0,
        ece: b & 0x40 != 0,
        cwr: b & 0x80 != 0,
        ns: false,
    }
}

/// Hubble's L3/L4 summary: `TCP Flags: SYN, ACK` (in Hubble's order), `UDP`, `ICMPv4 EchoRequest`;
/// the name of the last layer decoded (`IPv4`, `Ethernet`) when there is no L4 layer.
pub fn summary(e: &Event) -> String {
    if !has_ip(e) {
        return "Ethernet".to_owned();
    }
    let proto = if has_l4(e) { e.proto } else { 0 };
    match proto {
        6 => {
            const ORDER: [(u8, &str); 8] = [
                (0x02, "SYN"),
                (0x10, "ACK"),
                (0x04, "RST"),
                (0x01, "FIN"),
                (0x08, "PSH"),
                (0x20, "URG"),
                (0x40, "ECE"),
                (0x80, "CWR"),
            ];
            let set: Vec<&str> = ORDER
                .iter()
                .filter(|(bit, _)| e.tcp_flags & bit != 0)
                .map(|(_, n)| *n)
                .collect();
            format!("TCP Flags: {}", set.join(", "))
        }
        17 => "UDP".to_owned(),
        132 => "SCTP".to_owned(),
        1 => format!("ICMPv4 {}", icmp4_name(e.dport as u8, e.sport as u8)),
        58 => format!("ICMPv6 {}", icmp6_name(e.dport as u8, e.sport as u8)),
        _ if e.ipver == 6 => "IPv6".to_owned(),
        _ => "IPv4".to_owned(),
    }
}

/// gopacket's ICMPv4 TypeCode names.
fn icmp4_name(t: u8, code: u8) -> String {
    match t {
        0 => "EchoReply".to_owned(),
        3 => {
            let c = [
                "Net",
                "Host",
                "Protocol",
                "Port",
                "FragmentationNeeded",
                "SourceRoutingFailed",
            ];
            match c.get(usize::from(code)) {
                Some(c) => format!("DestinationUnreachable({c})"),
                None => format!("DestinationUnreachable(Code: {code})"),
            }
        }
        8 => "EchoRequest".to_owned(),
        11 => "TimeExceeded(TTLExceeded)".to_owned(),
        _ => format!("{t}(Code: {code})"),
    }
}

/// gopacket's ICMPv6 TypeCode names.
fn icmp6_name(t: u8, code: u8) -> String {
    match t {
        1 => format!("DestinationUnreachable(Code: {code})"),
        128 => "EchoRequest".to_owned(),
        129 => "EchoReply".to_owned(),
        _ => format!("{t}(Code: {code})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{Addr, DIR_INGRESS};
    use imdsguard_flow::printer::{PrintOptions, compact};
    use std::net::Ipv4Addr;

    struct Dir;

    impl Directory for Dir {
        fn endpoint(&self, ip: IpAddr) -> Option<Endpoint> {
            (ip == IpAddr::V4(Ipv4Addr::new(10, 244, 1, 17))).then(|| Endpoint {
                id: 1201,
                namespace: "go-webapp".to_owned(),
                pod_name: "go-webapp-847857f68-2qlnd".to_owned(),
                labels: vec!["k8s:app=go-webapp".to_owned()],
                ..Default::default()
            })
        }
        fn identity_labels(&self, identity: u32) -> Vec<String> {
            match identity {
                16_777_217 => vec![
                    "cidr:169.254.169.254/32".to_owned(),
                    "reserved:world".to_owned(),
                ],
                _ => vec![],
            }
        }
        fn policy(&self, rule_id: u32) -> Option<Policy> {
            (rule_id == 1).then(|| Policy {
                name: "azure-imds-deny".to_owned(),
                kind: "CiliumClusterwideNetworkPolicy".to_owned(),
                ..Default::default()
            })
        }
        fn interface_name(&self, _: u32) -> Option<String> {
            Some("lxc1".to_owned())
        }
    }

    fn event(kind: u8, sub_type: u8, verdict: u8) -> Event {
        Event {
            ts_ns: 1_000_000_000,
            saddr: Addr::from(Ipv4Addr::new(10, 244, 1, 17)),
            daddr: Addr::from(Ipv4Addr::new(169, 254, 169, 254)),
            ep_id: 1201,
            src_identity: 14226,
            dst_identity: 16_777_217,
            rule_id: 1,
            sport: 40132,
            dport: 80,
            kind,
            sub_type,
            proto: 6,
            ipver: 4,
            tcp_flags: 0x02,
            dir: DIR_EGRESS,
            verdict,
            match_type: 1,
            ..Default::default()
        }
    }

    fn line(e: &Event) -> String {
        // 2025-07-15T21:49:39.668Z, as in the seed.
        let offset = 1_752_616_179_668_000_000 - 1_000_000_000;
        let f = to_flow(e, &Dir, "aks-node", offset);
        compact(&f, &PrintOptions::default())
    }

    #[test]
    fn policy_verdict_and_drop_print_as_hubble_does() {
        assert_eq!(
            line(&event(EV_POLICY_VERDICT, 0, 2)),
            "Jul 15 21:49:39.668: go-webapp/go-webapp-847857f68-2qlnd:40132 (ID:14226) <> \
             169.254.169.254:80 (ID:16777217) policy-verdict:L3-Only EGRESS DENIED (TCP Flags: SYN)\n"
        );
        assert_eq!(
            line(&event(EV_POLICY_VERDICT, 0, 1)),
            "Jul 15 21:49:39.668: go-webapp/go-webapp-847857f68-2qlnd:40132 (ID:14226) -> \
             169.254.169.254:80 (ID:16777217) policy-verdict:L3-Only EGRESS ALLOWED (TCP Flags: SYN)\n"
        );
        assert_eq!(
            line(&event(EV_DROP, 181, 2)),
            "Jul 15 21:49:39.668: go-webapp/go-webapp-847857f68-2qlnd:40132 (ID:14226) <> \
             169.254.169.254:80 (ID:16777217) Policy denied by denylist DROPPED (TCP Flags: SYN)\n"
        );
        let f = to_flow(&event(EV_POLICY_VERDICT, 0, 2), &Dir, "n", 0);
        assert_eq!(f.egress_denied_by[0].name, "azure-imds-deny");
        assert_eq!(f.destination.as_ref().map(|d| d.labels.len()), Some(2));
        assert_eq!(f.source.as_ref().map(|s| s.id), Some(1201));
    }

    #[test]
    #[allow(deprecated)]
    fn an_audited_verdict_carries_the_would_be_reason_and_names_the_policy() {
        let f = to_flow(&event(EV_POLICY_VERDICT, 181, 6), &Dir, "n", 0);
        assert_eq!(f.verdict, Verdict::Audit as i32);
        assert_eq!((f.drop_reason, f.drop_reason_desc), (181, 181));
        assert_eq!(f.egress_denied_by[0].name, "azure-imds-deny");
        assert!(f.egress_allowed_by.is_empty());
        // Allowed and denied verdicts keep no reason on the verdict (the drop event has it).
        let f = to_flow(&event(EV_POLICY_VERDICT, 0, 2), &Dir, "n", 0);
        assert_eq!(f.drop_reason_desc, 0);
    }

    #[test]
    fn a_reply_at_the_ingress_hook_belongs_to_the_egress_connection() {
        let mut e = event(EV_TRACE, 0, 1);
        std::mem::swap(&mut e.saddr, &mut e.daddr);
        std::mem::swap(&mut e.src_identity, &mut e.dst_identity);
        std::mem::swap(&mut e.sport, &mut e.dport);
        e.dir = DIR_INGRESS;
        e.is_reply = true;
        e.tcp_flags = 0x12;
        let f = to_flow(&e, &Dir, "n", 0);
        assert_eq!(f.traffic_direction, TrafficDirection::Egress as i32);
        assert!(
            line(&e).ends_with(
                "go-webapp/go-webapp-847857f68-2qlnd:40132 (ID:14226) <- 169.254.169.254:80 \
                 (ID:16777217) to-endpoint FORWARDED (TCP Flags: SYN, ACK)\n"
            ),
            "{}",
            line(&e)
        );
    }

    /// `Dir`, plus the container, endpoint-by-ID and process answers of a node that knows them.
    struct Procs;

    impl Directory for Procs {
        fn endpoint(&self, ip: IpAddr) -> Option<Endpoint> {
            Dir.endpoint(ip)
        }
        fn identity_labels(&self, identity: u32) -> Vec<String> {
            Dir.identity_labels(identity)
        }
        fn policy(&self, rule_id: u32) -> Option<Policy> {
            Dir.policy(rule_id)
        }
        fn interface_name(&self, ifindex: u32) -> Option<String> {
            Dir.interface_name(ifindex)
        }
        fn container(&self, cgroup_id: u64) -> Option<String> {
            (cgroup_id == 120).then(|| "istio-proxy".to_owned())
        }
        fn endpoint_by_id(&self, ep_id: u32) -> Option<Endpoint> {
            (ep_id == 77).then(|| Endpoint {
                id: 77,
                namespace: "kube-system".to_owned(),
                pod_name: "node-agent-x1".to_owned(),
                ..Default::default()
            })
        }
        fn process_of(&self, cgroup_id: u64) -> Option<(u32, String)> {
            (cgroup_id == 120).then(|| (4242, "envoy".to_owned()))
        }
    }

    fn attributed(proc_flags: u32) -> Event {
        Event {
            sock_cookie: 4101,
            cgroup_id: 120,
            pid: 17708,
            uid: 1337,
            comm: *b"python3\0\0\0\0\0\0\0\0\0",
            proc_flags,
            ..event(EV_POLICY_VERDICT, 0, 2)
        }
    }

    #[test]
    fn a_known_process_fills_the_socket_fields_and_the_process_extension() {
        use crate::abi::{PROC_HAS_SOCK, PROC_HAS_TASK};
        let f = to_flow(&attributed(PROC_HAS_SOCK | PROC_HAS_TASK), &Procs, "n", 0);
        assert_eq!((f.socket_cookie, f.cgroup_id), (4101, 120));
        let p = process::get(&f).expect("process extension");
        assert_eq!(
            p,
            ProcessInfo {
                container: "istio-proxy".into(),
                process: "python3".into(),
                pid: 17708,
                uid: Some(1337),
            }
        );
        // The compact line stays Hubble's.
        assert_eq!(
            compact(&f, &PrintOptions::default()),
            compact(
                &to_flow(&event(EV_POLICY_VERDICT, 0, 2), &Dir, "n", 0),
                &PrintOptions::default()
            )
        );
    }

    #[test]
    fn a_socket_from_before_the_hooks_takes_the_cgroups_only_process() {
        use crate::abi::PROC_HAS_SOCK;
        let f = to_flow(&attributed(PROC_HAS_SOCK), &Procs, "n", 0);
        let p = process::get(&f).expect("process extension");
        assert_eq!(
            (p.container.as_str(), p.process.as_str(), p.pid, p.uid),
            ("istio-proxy", "envoy", 4242, None)
        );
        // Without a directory that knows more: the socket fields, no process.
        let f = to_flow(&attributed(PROC_HAS_SOCK), &Dir, "n", 0);
        assert_eq!(f.cgroup_id, 120);
        assert_eq!(process::get(&f), None);
        // Nothing known: no fields at all (the process fields are not trusted without the flag).
        let f = to_flow(&attributed(0), &Procs, "n", 0);
        assert_eq!((f.socket_cookie, f.cgroup_id, f.extensions), (0, 0, None));
    }

    #[test]
    fn a_hook_event_names_its_pod_by_endpoint_id() {
        use crate::abi::{PROC_FROM_HOOK, PROC_HAS_SOCK, PROC_HAS_TASK};
        let e = Event {
            saddr: Addr::from(Ipv4Addr::UNSPECIFIED),
            ep_id: 77,
            sport: 0,
            ifindex: 0,
            ..attributed(PROC_HAS_SOCK | PROC_HAS_TASK | PROC_FROM_HOOK)
        };
        let f = to_flow(&e, &Procs, "n", 0);
        let src = f.source.as_ref().expect("source");
        assert_eq!((src.id, src.pod_name.as_str()), (77, "node-agent-x1"));
        assert_eq!(src.identity, 14226);
        assert_eq!(f.verdict, Verdict::Dropped as i32);
        // An ordinary event from the same ID is named by its address, as before.
        let f = to_flow(&attributed(PROC_HAS_SOCK), &Procs, "n", 0);
        assert_eq!(f.source.as_ref().map(|s| s.id), Some(1201));
    }
}
