//! Hubble's Prometheus metrics (docs/hubble.md#metrics) with Hubble's names and labels: flows
//! processed, drops, policy verdicts, TCP flags, HTTP requests (httpV2) and lost events. Context
//! labels (`sourceContext`, `labelsContext`) are not offered yet.

use imdsguard_flow::flow::{self, Flow, layer4, layer7};
use imdsguard_flow::names::{self, enum_name};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

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
        FlowMetrics {
            registry: root,
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

impl FlowMetrics {
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
}
