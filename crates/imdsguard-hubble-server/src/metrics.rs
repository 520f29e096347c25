//! Hubble's Prometheus metrics (docs/hubble.md#metrics) with Hubble's names and labels: flows
//! processed, drops, policy verdicts, TCP flags, HTTP requests (httpV2) and lost events. Context
//! labels (`sourceContext`, `labelsContext`) are not offered yet.
//!
//! Next to them, the agent's own `imdsguard_*` metrics, among them
//! `imdsguard_metadata_flows_total`: flows to a metadata endpoint by source workload and
//! container, with a bounded number of label sets (see [`MAX_METADATA_SERIES`]). Hubble's own
//! metrics keep Hubble's label sets: dashboards depend on them.

use imdsguard_flow::flow::{self, Flow, layer4, layer7};
use imdsguard_flow::names::{self, enum_name};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;

type Labels = Vec<(&'static str, String)>;

/// The most label sets `imdsguard_metadata_flows_total` creates for named sources.
///
/// Its labels are `source_namespace`, `source_workload` (the pod's first workload, else the pod;
/// `host`, `world` … for reserved identities), `container` (the container's name in its pod, from
/// the flow's process information; empty when the flow does not say), `destination` (the metadata
/// address, without the port: the table of metadata services bounds it) and `verdict` (Hubble's
/// name). Namespaces, workloads and containers come from the cluster, so they are counted: once
/// this many label sets exist, a flow that would make a new one is counted with
/// `source_namespace`, `source_workload` and `container` all `"other"` (keeping its destination
/// and verdict), and in `imdsguard_metadata_flows_overflow_total`. So the metric never has more
/// than this many series plus one per destination and verdict. Series are never removed while the
/// agent runs (Prometheus counters must not go back), so pods that come and go under one workload
/// cost nothing, and the bound is reached only by that many distinct workloads and containers.
pub const MAX_METADATA_SERIES: usize = 1_000;

/// The value that stands for every source past [`MAX_METADATA_SERIES`].
pub const OVERFLOW: &str = "other";

pub struct FlowMetrics {
    registry: Registry,
    flows: Family<Labels, Counter>,
    drops: Family<Labels, Counter>,
    verdicts: Family<Labels, Counter>,
    tcp_flags: Family<Labels, Counter>,
    http_requests: Family<Labels, Counter>,
    http_duration: Family<Labels, Histogram>,
    lost: Family<Labels, Counter>,
    input_errors: Family<Labels, Counter>,
    proxy_route_shadowed: Gauge,
    datapath: Family<Labels, Gauge>,
    metadata_flows: Family<Labels, Counter>,
    metadata_overflow: Counter,
    /// The label sets `metadata_flows` holds for named sources (overflow sets not included).
    metadata_series: Mutex<HashSet<Labels>>,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Default for FlowMetrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("hubble");
        let flows = Family::default();
        let drops = Family::default();
        let verdicts = Family::default();
        let tcp_flags = Family::default();
        let http_requests = Family::default();
        let http_duration = Family::<Labels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let lost = Family::default();
        registry.register(
            "flows_processed",
            "Total number of flows processed",
            flows.clone(),
        );
        registry.register("drop", "Number of drops", drops.clone());
        registry.register(
            "policy_verdicts",
            "Number of policy verdicts",
            verdicts.clone(),
        );
        registry.register("tcp_flags", "TCP flag occurrences", tcp_flags.clone());
        registry.register(
            "http_requests",
            "Count of HTTP requests",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Quantiles of HTTP request duration in seconds",
            http_duration.clone(),
        );
        registry.register("lost_events", "Number of lost events", lost.clone());
        // The agent's own state, under imdsguard_: what Hubble's flows cannot tell.
        let agent = root.sub_registry_with_prefix("imdsguard");
        let input_errors = Family::default();
        agent.register(
            "input_errors",
            "Inputs rejected (an invalid policy, an endpoints file that is empty, truncated or unparsable); the last good state stays in force",
            input_errors.clone(),
        );
        let proxy_route_shadowed = Gauge::default();
        agent.register(
            "proxy_route_shadowed",
            "1 while a routing rule ahead of the proxy's could catch redirected packets (redirects then fail closed)",
            proxy_route_shadowed.clone(),
        );
        let datapath = Family::default();
        agent.register(
            "datapath_packets",
            "The datapath's packet counters by name (invalid_source, unsupported_l3, fragment_dropped, ...), summed over CPUs",
            datapath.clone(),
        );
        let metadata_flows = Family::default();
        agent.register(
            "metadata_flows",
            format!("Flows to a metadata endpoint by source workload, container, destination address and verdict (at most {MAX_METADATA_SERIES} label sets for named sources; past them, source_namespace, source_workload and container are \"{OVERFLOW}\")"),
            metadata_flows.clone(),
        );
        let metadata_overflow = Counter::default();
        agent.register(
            "metadata_flows_overflow",
            format!("Flows counted in imdsguard_metadata_flows_total as \"{OVERFLOW}\" because its label sets reached their bound"),
            metadata_overflow.clone(),
        );
        FlowMetrics {
            registry: root,
            metadata_flows,
            metadata_overflow,
            metadata_series: Mutex::new(HashSet::new()),
            input_errors,
            proxy_route_shadowed,
            datapath,
            flows,
            drops,
            verdicts,
            tcp_flags,
            http_requests,
            http_duration,
            lost,
        }
    }
}

/// `v1.FlowProtocol`: the L7 protocol, else the L4 one.
fn protocol(f: &Flow) -> &'static str {
    if let Some(l7) = &f.l7 {
        return match &l7.record {
            Some(layer7::Record::Dns(_)) => "DNS",
            Some(layer7::Record::Http(_)) => "HTTP",
            #[allow(deprecated)]
            Some(layer7::Record::Kafka(_)) => "Kafka",
            None => "Unknown L7",
        };
    }
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(layer4::Protocol::Tcp(_)) => "TCP",
        Some(layer4::Protocol::Udp(_)) => "UDP",
        Some(layer4::Protocol::IcmPv4(_)) => "ICMPv4",
        Some(layer4::Protocol::IcmPv6(_)) => "ICMPv6",
        Some(layer4::Protocol::Sctp(_)) => "SCTP",
        Some(layer4::Protocol::Vrrp(_)) => "VRRP",
        Some(layer4::Protocol::Igmp(_)) => "IGMP",
        None if f.l4.is_some() => "Unknown L4",
        None => "Unknown flow",
    }
}

/// The metadata address a flow goes to (canonical: IPv4-mapped IPv6 as IPv4), if it goes to one.
fn metadata_destination(f: &Flow) -> Option<IpAddr> {
    let ip: IpAddr = f.ip.as_ref()?.destination.parse().ok()?;
    let port = match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(layer4::Protocol::Tcp(t)) => t.destination_port,
        Some(layer4::Protocol::Udp(u)) => u.destination_port,
        Some(layer4::Protocol::Sctp(s)) => s.destination_port,
        // Without ports, only services that own every port of their address match.
        _ => 0,
    };
    // A port past u16 comes from no real flow; as 0 it still finds the services that own every
    // port of their address.
    let port = u16::try_from(port).unwrap_or(0);
    imdsguard_metadata::kind_at(ip, port).map(|_| ip.to_canonical())
}

/// `source_namespace` and `source_workload` of [`MAX_METADATA_SERIES`].
fn metadata_source(f: &Flow) -> (String, String) {
    let Some(ep) = f.source.as_ref() else {
        return (String::new(), String::new());
    };
    let workload = if !ep.pod_name.is_empty() {
        ep.workloads
            .first()
            .map(|w| w.name.as_str())
            .filter(|n| !n.is_empty())
            .unwrap_or(&ep.pod_name)
            .to_owned()
    } else {
        names::reserved_identity_name(ep.identity)
            .unwrap_or_default()
            .to_owned()
    };
    (ep.namespace.clone(), workload)
}

impl FlowMetrics {
    /// Counts a flow to a metadata endpoint in `imdsguard_metadata_flows_total`, within the
    /// bound of [`MAX_METADATA_SERIES`].
    fn observe_metadata(&self, f: &Flow, verdict: &str) {
        let Some(destination) = metadata_destination(f) else {
            return;
        };
        let (namespace, workload) = metadata_source(f);
        let container = imdsguard_hubble_proto::process::get(f)
            .map(|p| p.container)
            .unwrap_or_default();
        let labels: Labels = vec![
            ("source_namespace", namespace),
            ("source_workload", workload),
            ("container", container),
            ("destination", destination.to_string()),
            ("verdict", verdict.to_owned()),
        ];
        let admitted = {
            // A poisoned lock only means another thread panicked while counting: the set is
            // still a set.
            let mut series = self
                .metadata_series
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if series.contains(&labels) {
                true
            } else if series.len() < MAX_METADATA_SERIES {
                series.insert(labels.clone());
                true
            } else {
                false
            }
        };
        if admitted {
            self.metadata_flows.get_or_create(&labels).inc();
            return;
        }
        self.metadata_overflow.inc();
        self.metadata_flows
            .get_or_create(&vec![
                ("source_namespace", OVERFLOW.to_owned()),
                ("source_workload", OVERFLOW.to_owned()),
                ("container", OVERFLOW.to_owned()),
                ("destination", destination.to_string()),
                ("verdict", verdict.to_owned()),
            ])
            .inc();
    }

    /// Counts one flow.
    pub fn observe(&self, f: &Flow) {
        let verdict = enum_name(f.verdict, |v: flow::Verdict| v.as_str_name());
        let event = f.event_type.as_ref().map_or(0, |e| e.r#type);
        let sub_type = f.event_type.as_ref().map_or(0, |e| e.sub_type);
        let (kind, subtype) = match (&f.l7, event) {
            (Some(_), _) => ("L7", protocol(f).to_owned()),
            (None, names::EVENT_DROP) => ("Drop", String::new()),
            (None, names::EVENT_CAPTURE) => ("Capture", String::new()),
            (None, names::EVENT_TRACE) => ("Trace", names::trace_point_name(sub_type).into_owned()),
            (None, names::EVENT_POLICY_VERDICT) => ("PolicyVerdict", String::new()),
            (None, other) => ("Unknown", other.to_string()),
        };
        self.flows
            .get_or_create(&vec![
                ("protocol", protocol(f).to_owned()),
                ("type", kind.to_owned()),
                ("subtype", subtype),
                ("verdict", verdict.clone().into_owned()),
            ])
            .inc();
        self.observe_metadata(f, &verdict);
        if f.verdict == flow::Verdict::Dropped as i32 {
            let reason = enum_name(f.drop_reason_desc, |d: flow::DropReason| d.as_str_name());
            self.drops
                .get_or_create(&vec![
                    ("reason", reason.into_owned()),
                    ("protocol", protocol(f).to_owned()),
                ])
                .inc();
        }
        let from_host = f.source.as_ref().is_some_and(|s| s.identity == 1);
        if event == names::EVENT_POLICY_VERDICT && !from_host {
            let direction = enum_name(f.traffic_direction, |d: flow::TrafficDirection| {
                d.as_str_name()
            })
            .to_lowercase();
            self.verdicts
                .get_or_create(&vec![
                    ("direction", direction),
                    (
                        "match",
                        names::match_type_name(f.policy_match_type).to_lowercase(),
                    ),
                    ("action", verdict.to_lowercase()),
                ])
                .inc();
        }
        if let Some(l7) = &f.l7
            && l7.r#type == flow::L7FlowType::Request as i32
            && !from_host
        {
            let direction = enum_name(f.traffic_direction, |d: flow::TrafficDirection| {
                d.as_str_name()
            })
            .to_lowercase();
            let m = match &l7.record {
                Some(layer7::Record::Http(_)) => "l7/http",
                Some(layer7::Record::Dns(_)) => "l7/dns",
                _ => "l7/kafka",
            };
            self.verdicts
                .get_or_create(&vec![
                    ("direction", direction),
                    ("match", m.to_owned()),
                    ("action", verdict.to_lowercase()),
                ])
                .inc();
        }
        let forwarded = f.verdict == flow::Verdict::Forwarded as i32
            || f.verdict == flow::Verdict::Redirected as i32;
        if forwarded
            && f.l7.is_none()
            && let Some(layer4::Protocol::Tcp(tcp)) =
                f.l4.as_ref().and_then(|l| l.protocol.as_ref())
            && let Some(flags) = &tcp.flags
        {
            let family = match f.ip.as_ref().map(|i| i.ip_version) {
                Some(2) => "IPv6",
                _ => "IPv4",
            };
            let flag = if flags.syn && flags.ack {
                Some("SYN-ACK")
            } else if flags.syn {
                Some("SYN")
            } else if flags.fin {
                Some("FIN")
            } else if flags.rst {
                Some("RST")
            } else {
                None
            };
            if let Some(flag) = flag {
                self.tcp_flags
                    .get_or_create(&vec![
                        ("flag", flag.to_owned()),
                        ("family", family.to_owned()),
                    ])
                    .inc();
            }
        }
        if let Some(l7) = &f.l7
            && let Some(layer7::Record::Http(http)) = &l7.record
        {
            // httpV2: count responses (they carry the status), reporter from the direction.
            let reporter = match flow::TrafficDirection::try_from(f.traffic_direction) {
                Ok(flow::TrafficDirection::Egress) => "client",
                Ok(flow::TrafficDirection::Ingress) => "server",
                _ => "unknown",
            };
            if l7.r#type == flow::L7FlowType::Response as i32 {
                self.http_requests
                    .get_or_create(&vec![
                        ("method", http.method.clone()),
                        ("protocol", http.protocol.clone()),
                        ("status", http.code.to_string()),
                        ("reporter", reporter.to_owned()),
                    ])
                    .inc();
                self.http_duration
                    .get_or_create(&vec![
                        ("method", http.method.clone()),
                        ("reporter", reporter.to_owned()),
                    ])
                    .observe(l7.latency_ns as f64 / 1e9);
            }
        }
    }

    /// Counts lost events (`source` as Hubble spells it: `hubble_ring_buffer` …).
    pub fn lost(&self, source: &str, n: u64) {
        self.lost
            .get_or_create(&vec![("source", source.to_owned())])
            .inc_by(n);
    }

    /// Counts one rejected input (`policy`, `endpoints`).
    pub fn input_error(&self, input: &str) {
        self.input_errors
            .get_or_create(&vec![("input", input.to_owned())])
            .inc();
    }

    pub fn set_proxy_route_shadowed(&self, shadowed: bool) {
        self.proxy_route_shadowed.set(i64::from(shadowed));
    }

    /// Publishes the datapath's counters (they are totals kept by the kernel).
    pub fn set_datapath_counters(&self, counters: &[(&'static str, u64)]) {
        for (name, v) in counters {
            self.datapath
                .get_or_create(&vec![("counter", (*name).to_owned())])
                .set(i64::try_from(*v).unwrap_or(i64::MAX));
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_verdicts_drops_and_flags() {
        let m = FlowMetrics::default();
        let verdict = Flow {
            verdict: flow::Verdict::Dropped as i32,
            drop_reason_desc: flow::DropReason::PolicyDeny as i32,
            l4: Some(flow::Layer4 {
                protocol: Some(layer4::Protocol::Tcp(flow::Tcp {
                    source_port: 1,
                    destination_port: 80,
                    flags: Some(flow::TcpFlags {
                        syn: true,
                        ..Default::default()
                    }),
                })),
            }),
            event_type: Some(flow::CiliumEventType {
                r#type: 5,
                sub_type: 0,
            }),
            traffic_direction: flow::TrafficDirection::Egress as i32,
            policy_match_type: 1,
            source: Some(flow::Endpoint {
                identity: 14226,
                ..Default::default()
            }),
            ..Default::default()
        };
        m.observe(&verdict);
        let forwarded = Flow {
            verdict: flow::Verdict::Forwarded as i32,
            drop_reason_desc: 0,
            event_type: Some(flow::CiliumEventType {
                r#type: 4,
                sub_type: 11,
            }),
            ..verdict.clone()
        };
        m.observe(&forwarded);
        m.lost("hubble_ring_buffer", 3);
        let text = m.encode();
        for want in [
            r#"hubble_flows_processed_total{protocol="TCP",type="PolicyVerdict",subtype="",verdict="DROPPED"} 1"#,
            r#"hubble_flows_processed_total{protocol="TCP",type="Trace",subtype="to-network",verdict="FORWARDED"} 1"#,
            r#"hubble_drop_total{reason="POLICY_DENY",protocol="TCP"} 1"#,
            r#"hubble_policy_verdicts_total{direction="egress",match="l3-only",action="dropped"} 1"#,
            r#"hubble_tcp_flags_total{flag="SYN",family="IPv4"} 1"#,
            r#"hubble_lost_events_total{source="hubble_ring_buffer"} 3"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    /// Audit mode: a would-be drop that passed is counted as Hubble's policy handler counts it,
    /// the verdict's name in lower case (`action="audit"`), and never as a drop.
    #[test]
    fn audit_verdicts_are_counted_as_action_audit() {
        let m = FlowMetrics::default();
        let audited = Flow {
            verdict: flow::Verdict::Audit as i32,
            drop_reason_desc: flow::DropReason::PolicyDeny as i32,
            event_type: Some(flow::CiliumEventType {
                r#type: 5,
                sub_type: 0,
            }),
            traffic_direction: flow::TrafficDirection::Egress as i32,
            policy_match_type: 1,
            source: Some(flow::Endpoint {
                identity: 14226,
                ..Default::default()
            }),
            ..Default::default()
        };
        m.observe(&audited);
        m.observe(&audited);
        let text = m.encode();
        assert!(
            text.contains(
                r#"hubble_policy_verdicts_total{direction="egress",match="l3-only",action="audit"} 2"#
            ),
            "{text}"
        );
        assert!(!text.contains("hubble_drop_total{"), "{text}");
    }

    fn call(ns: &str, pod: &str, workload: &str, container: &str, dst: &str, port: u32) -> Flow {
        let mut f = Flow {
            verdict: flow::Verdict::Forwarded as i32,
            ip: Some(flow::Ip {
                source: "10.244.1.17".into(),
                destination: dst.into(),
                ..Default::default()
            }),
            l4: Some(flow::Layer4 {
                protocol: Some(layer4::Protocol::Tcp(flow::Tcp {
                    source_port: 40132,
                    destination_port: port,
                    flags: None,
                })),
            }),
            event_type: Some(flow::CiliumEventType {
                r#type: 4,
                sub_type: 11,
            }),
            source: Some(flow::Endpoint {
                identity: 14226,
                namespace: ns.into(),
                pod_name: pod.into(),
                workloads: if workload.is_empty() {
                    vec![]
                } else {
                    vec![flow::Workload {
                        name: workload.into(),
                        kind: "Deployment".into(),
                    }]
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        if !container.is_empty() {
            imdsguard_hubble_proto::process::set(
                &mut f,
                &imdsguard_hubble_proto::process::ProcessInfo {
                    container: container.into(),
                    process: "envoy".into(),
                    pid: 4242,
                    uid: Some(1337),
                },
            );
        }
        f
    }

    #[test]
    fn metadata_flows_name_the_container() {
        let m = FlowMetrics::default();
        let sidecar = call(
            "go-webapp",
            "go-webapp-847857f68-2qlnd",
            "go-webapp",
            "istio-proxy",
            "169.254.169.254",
            80,
        );
        m.observe(&sidecar);
        m.observe(&sidecar);
        // Another replica of the same workload: the same series.
        m.observe(&call(
            "go-webapp",
            "go-webapp-847857f68-x9x9x",
            "go-webapp",
            "istio-proxy",
            "169.254.169.254",
            80,
        ));
        // No process information: an empty container. IPv4-mapped counts as IPv4.
        m.observe(&call(
            "logging",
            "fluent-bit-qg7vq",
            "fluent-bit",
            "",
            "::ffff:169.254.169.254",
            80,
        ));
        // A bare pod is its own workload.
        m.observe(&call("default", "debug", "", "", "169.254.169.254", 80));
        // Not a metadata endpoint: WireServer's address on a port it does not serve, and a pod.
        m.observe(&call("x", "y", "", "z", "168.63.129.16", 53));
        m.observe(&call("x", "y", "", "z", "10.0.0.1", 80));
        let mut host = call("", "", "", "", "168.63.129.16", 32526);
        host.source.as_mut().unwrap().identity = 1;
        m.observe(&host);
        let text = m.encode();
        for want in [
            r#"imdsguard_metadata_flows_total{source_namespace="go-webapp",source_workload="go-webapp",container="istio-proxy",destination="169.254.169.254",verdict="FORWARDED"} 3"#,
            r#"imdsguard_metadata_flows_total{source_namespace="logging",source_workload="fluent-bit",container="",destination="169.254.169.254",verdict="FORWARDED"} 1"#,
            r#"imdsguard_metadata_flows_total{source_namespace="default",source_workload="debug",container="",destination="169.254.169.254",verdict="FORWARDED"} 1"#,
            r#"imdsguard_metadata_flows_total{source_namespace="",source_workload="host",container="",destination="168.63.129.16",verdict="FORWARDED"} 1"#,
            "imdsguard_metadata_flows_overflow_total 0",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert!(!text.contains(r#"source_namespace="x""#), "{text}");
        // Hubble's own metrics keep their label sets.
        assert!(
            text.contains(
                r#"hubble_flows_processed_total{protocol="TCP",type="Trace",subtype="to-network",verdict="FORWARDED"} 8"#
            ),
            "{text}"
        );
        assert!(
            !text.contains("hubble_flows_processed_total{container"),
            "{text}"
        );
    }

    #[test]
    fn metadata_series_are_bounded() {
        let m = FlowMetrics::default();
        let n = MAX_METADATA_SERIES + 25;
        for i in 0..n {
            let c = format!("c{i}");
            m.observe(&call("ns", "p", "w", &c, "169.254.169.254", 80));
        }
        // A source that has its series keeps counting in it past the bound.
        m.observe(&call("ns", "p", "w", "c0", "169.254.169.254", 80));
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("imdsguard_metadata_flows_total{"))
            .count();
        assert_eq!(series, MAX_METADATA_SERIES + 1, "{text}");
        assert!(
            text.contains(r#"imdsguard_metadata_flows_total{source_namespace="other",source_workload="other",container="other",destination="169.254.169.254",verdict="FORWARDED"} 25"#),
            "{text}"
        );
        assert!(
            text.contains("imdsguard_metadata_flows_overflow_total 25"),
            "{text}"
        );
        assert!(
            text.contains(r#"imdsguard_metadata_flows_total{source_namespace="ns",source_workload="w",container="c0",destination="169.254.169.254",verdict="FORWARDED"} 2"#),
            "{text}"
        );
    }
}
