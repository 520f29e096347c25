//! Hubble's flow filters (docs/hubble.md#filters): a `GetFlowsRequest`'s whitelist and blacklist of
//! [`FlowFilter`]s, compiled once and applied to [`Flow`]s with the semantics of cilium's
//! `pkg/hubble/filters` (v1.19).
//!
//! * A flow passes when it matches **at least one** whitelist filter (an empty whitelist matches
//!   everything) and **none** of the blacklist filters.
//! * Within one `FlowFilter` every set field must match (AND); within one repeated field any
//!   value may match (OR). Unset (empty) fields are ignored.
//! * Everything that can be rejected is rejected by [`FlowFilters::new`] (bad IP/CIDR, empty pod
//!   or cluster name, bad FQDN/node-name pattern, bad label selector, bad port, bad HTTP status
//!   pattern, unknown protocol, HTTP filters without the `l7` event type, bad regex, CEL).
//!   [`FlowFilters::matches`] never fails and does not allocate in the common path.
//!
//! Regular expressions (`dns_query`, `http_path`, `http_url`) are Go RE2 syntax, translated by
//! `regex_go`. Unicode classes such as `\pL` are not available (the workspace builds `regex`
//! without `unicode-gencat`). Label selectors are `imdsguard_labels`' (see `labels` for how they
//! differ from the policy engine's).
//!
//! `--container` and `--process` have no `FlowFilter` field: the client applies them
//! ([`ClientFilter`], module `process`).
//!
//! Here: the compiled form and the matching loop. Each family of criteria has a module for its
//! parsing and helpers: `ip`, `k8s` (names and patterns), `l4`, `http`, `labels`, `regex_go`.

mod error;
mod http;
mod ip;
mod k8s;
mod l4;
mod labels;
mod process;
mod regex_go;
#[cfg(test)]
mod testutil;

use regex::Regex;

use crate::flow::{
    Endpoint, EventTypeFilter, Flow, FlowFilter, HttpHeader, NetworkInterface, Service, Verdict,
    Workload, layer4, layer7,
};
use crate::names;
use imdsguard_labels::LabelSelector;

pub use error::FilterError;
use http::{equal_fold, format_status, http, is_status_full, request_uri_path, status_prefix};
use ip::{IpField, IpMatcher};
use k8s::{
    NsName, compile_fqdn_patterns, compile_node_name_patterns, match_node_name, match_ns_names,
};
use l4::{parse_port, protocol_bits, protocol_mask, tcp_flag_bits};
use labels::compile_selectors;
pub use process::{ClientFilter, ProcessFilter};
use regex_go::compile_regexes;

/// A compiled whitelist and blacklist, ready to be applied to many flows.
#[derive(Debug, Clone, Default)]
pub struct FlowFilters {
    whitelist: Vec<Compiled>,
    blacklist: Vec<Compiled>,
}

impl FlowFilters {
    /// Validates and compiles `whitelist` and `blacklist` (regexes, CIDRs, selectors are parsed
    /// here, once). The first invalid filter is reported, whitelist first.
    pub fn new(whitelist: &[FlowFilter], blacklist: &[FlowFilter]) -> Result<Self, FilterError> {
        Ok(Self {
            whitelist: whitelist.iter().map(compile).collect::<Result<_, _>>()?,
            blacklist: blacklist.iter().map(compile).collect::<Result<_, _>>()?,
        })
    }

    /// `whitelist.MatchOne(f) && blacklist.MatchNone(f)`; an empty whitelist matches all flows.
    pub fn matches(&self, f: &Flow) -> bool {
        (self.whitelist.is_empty() || self.whitelist.iter().any(|c| c.matches(f)))
            && !self.blacklist.iter().any(|c| c.matches(f))
    }

    /// True when there is no filter at all (every flow matches).
    pub fn is_empty(&self) -> bool {
        self.whitelist.is_empty() && self.blacklist.is_empty()
    }
}

/// One `FlowFilter`: the AND of its criteria.
#[derive(Debug, Clone)]
struct Compiled {
    criteria: Vec<Criterion>,
}

impl Compiled {
    fn matches(&self, f: &Flow) -> bool {
        self.criteria.iter().all(|c| c.matches(f))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

impl Side {
    fn endpoint(self, f: &Flow) -> Option<&Endpoint> {
        match self {
            Side::Source => f.source.as_ref(),
            Side::Destination => f.destination.as_ref(),
        }
    }

    fn service(self, f: &Flow) -> Option<&Service> {
        match self {
            Side::Source => f.source_service.as_ref(),
            Side::Destination => f.destination_service.as_ref(),
        }
    }

    fn names(self, f: &Flow) -> &[String] {
        match self {
            Side::Source => &f.source_names,
            Side::Destination => &f.destination_names,
        }
    }

    /// The L4 port, for TCP, UDP and SCTP only (truncated to 16 bits like Hubble).
    fn port(self, f: &Flow) -> Option<u16> {
        let (src, dst) = match f.l4.as_ref()?.protocol.as_ref()? {
            layer4::Protocol::Tcp(p) => (p.source_port, p.destination_port),
            layer4::Protocol::Udp(p) => (p.source_port, p.destination_port),
            layer4::Protocol::Sctp(p) => (p.source_port, p.destination_port),
            _ => return None,
        };
        Some(match self {
            Side::Source => src as u16,
            Side::Destination => dst as u16,
        })
    }
}

#[derive(Debug, Clone)]
enum Criterion {
    Uuid(Vec<String>),
    EventType(Vec<EventTypeFilter>),
    Verdict(Vec<i32>),
    DropReasonDesc(Vec<i32>),
    Reply(Vec<bool>),
    Identity(Side, Vec<u32>),
    Protocol(u16),
    Ip(IpField, IpMatcher),
    Pod(Side, Vec<NsName>),
    Workload(Side, Vec<Workload>),
    Service(Side, Vec<NsName>),
    ClusterName(Side, Vec<String>),
    Fqdn(Side, Regex),
    DnsQuery(Vec<Regex>),
    Labels(Side, Vec<LabelSelector>),
    NodeLabels(Vec<LabelSelector>),
    Port(Side, Vec<u16>),
    HttpStatus {
        full: Vec<String>,
        prefix: Vec<String>,
    },
    HttpMethod(Vec<String>),
    HttpPath(Vec<Regex>),
    HttpUrl(Vec<Regex>),
    HttpHeader(Vec<HttpHeader>),
    TcpFlags(Vec<u16>),
    NodeName(Regex),
    IpVersion(Vec<i32>),
    TraceId(Vec<String>),
    IpTraceId(Vec<u64>),
    TrafficDirection(Vec<i32>),
    Interface(Vec<NetworkInterface>),
    Encrypted(Vec<bool>),
}

fn compile(ff: &FlowFilter) -> Result<Compiled, FilterError> {
    use Criterion as C;
    let mut c = Vec::new();

    if ff
        .experimental
        .as_ref()
        .is_some_and(|e| !e.cel_expression.is_empty())
    {
        return Err(FilterError::CelNotSupported);
    }
    if !ff.uuid.is_empty() {
        c.push(C::Uuid(ff.uuid.clone()));
    }
    if !ff.event_type.is_empty() {
        c.push(C::EventType(ff.event_type.clone()));
    }
    if !ff.verdict.is_empty() {
        c.push(C::Verdict(ff.verdict.clone()));
    }
    if !ff.drop_reason_desc.is_empty() {
        c.push(C::DropReasonDesc(ff.drop_reason_desc.clone()));
    }
    if !ff.reply.is_empty() {
        c.push(C::Reply(ff.reply.clone()));
    }
    if !ff.source_identity.is_empty() {
        c.push(C::Identity(Side::Source, ff.source_identity.clone()));
    }
    if !ff.destination_identity.is_empty() {
        c.push(C::Identity(
            Side::Destination,
            ff.destination_identity.clone(),
        ));
    }
    if !ff.protocol.is_empty() {
        let mut mask = 0;
        for p in &ff.protocol {
            mask |= protocol_mask(p)
                .ok_or_else(|| FilterError::UnknownProtocol { value: p.clone() })?;
        }
        c.push(C::Protocol(mask));
    }
    for (values, field) in [
        (&ff.source_ip, IpField::Source),
        (&ff.source_ip_xlated, IpField::SourceXlated),
        (&ff.destination_ip, IpField::Destination),
    ] {
        if !values.is_empty() {
            c.push(C::Ip(field, IpMatcher::new(values)?));
        }
    }
    for (values, side, name) in [
        (&ff.source_pod, Side::Source, "source_pod"),
        (&ff.destination_pod, Side::Destination, "destination_pod"),
    ] {
        if !values.is_empty() {
            let names = values
                .iter()
                .map(|v| NsName::parse(name, v))
                .collect::<Result<_, _>>()?;
            c.push(C::Pod(side, names));
        }
    }
    if !ff.source_workload.is_empty() {
        c.push(C::Workload(Side::Source, ff.source_workload.clone()));
    }
    if !ff.destination_workload.is_empty() {
        c.push(C::Workload(
            Side::Destination,
            ff.destination_workload.clone(),
        ));
    }
    for (values, side, name) in [
        (&ff.source_service, Side::Source, "source_service"),
        (
            &ff.destination_service,
            Side::Destination,
            "destination_service",
        ),
    ] {
        if !values.is_empty() {
            let names = values
                .iter()
                .map(|v| NsName::parse(name, v))
                .collect::<Result<_, _>>()?;
            c.push(C::Service(side, names));
        }
    }
    for (values, side, field) in [
        (&ff.source_cluster_name, Side::Source, "source_cluster_name"),
        (
            &ff.destination_cluster_name,
            Side::Destination,
            "destination_cluster_name",
        ),
    ] {
        if !values.is_empty() {
            if values.iter().any(String::is_empty) {
                return Err(FilterError::EmptyClusterName { field });
            }
            c.push(C::ClusterName(side, values.clone()));
        }
    }
    for (values, side, field) in [
        (&ff.source_fqdn, Side::Source, "source_fqdn"),
        (&ff.destination_fqdn, Side::Destination, "destination_fqdn"),
    ] {
        if !values.is_empty() {
            c.push(C::Fqdn(side, compile_fqdn_patterns(field, values)?));
        }
    }
    if !ff.dns_query.is_empty() {
        c.push(C::DnsQuery(compile_regexes("dns_query", &ff.dns_query)?));
    }
    for (values, side, field) in [
        (&ff.source_label, Side::Source, "source_label"),
        (
            &ff.destination_label,
            Side::Destination,
            "destination_label",
        ),
    ] {
        if !values.is_empty() {
            c.push(C::Labels(side, compile_selectors(field, values)?));
        }
    }
    if !ff.node_labels.is_empty() {
        c.push(C::NodeLabels(compile_selectors(
            "node_labels",
            &ff.node_labels,
        )?));
    }
    for (values, side, field) in [
        (&ff.source_port, Side::Source, "source_port"),
        (&ff.destination_port, Side::Destination, "destination_port"),
    ] {
        if !values.is_empty() {
            let ports = values
                .iter()
                .map(|p| {
                    parse_port(p).ok_or_else(|| FilterError::InvalidPort {
                        field,
                        value: p.clone(),
                    })
                })
                .collect::<Result<_, _>>()?;
            c.push(C::Port(side, ports));
        }
    }

    // HTTP: only meaningful for l7 events.
    let l7_ok =
        ff.event_type.is_empty() || ff.event_type.iter().any(|t| t.r#type == names::EVENT_L7);
    let require_l7 = |what| {
        if l7_ok {
            Ok(())
        } else {
            Err(FilterError::HttpRequiresL7 { what })
        }
    };
    if !ff.http_status_code.is_empty() {
        require_l7("status code")?;
        let (mut full, mut prefix) = (Vec::new(), Vec::new());
        for s in &ff.http_status_code {
            if is_status_full(s) {
                full.push(s.clone());
            } else if let Some(p) = status_prefix(s) {
                prefix.push(p.to_owned());
            } else {
                return Err(FilterError::InvalidHttpStatus { value: s.clone() });
            }
        }
        c.push(C::HttpStatus { full, prefix });
    }
    if !ff.http_method.is_empty() {
        require_l7("method")?;
        c.push(C::HttpMethod(ff.http_method.clone()));
    }
    if !ff.http_path.is_empty() {
        require_l7("path")?;
        c.push(C::HttpPath(compile_regexes("http_path", &ff.http_path)?));
    }
    if !ff.http_url.is_empty() {
        require_l7("url")?;
        c.push(C::HttpUrl(compile_regexes("http_url", &ff.http_url)?));
    }
    if !ff.http_header.is_empty() {
        require_l7("headers")?;
        c.push(C::HttpHeader(ff.http_header.clone()));
    }

    if !ff.tcp_flags.is_empty() {
        c.push(C::TcpFlags(
            ff.tcp_flags.iter().map(tcp_flag_bits).collect(),
        ));
    }
    if !ff.node_name.is_empty() {
        c.push(C::NodeName(compile_node_name_patterns(&ff.node_name)?));
    }
    if !ff.ip_version.is_empty() {
        c.push(C::IpVersion(ff.ip_version.clone()));
    }
    if !ff.trace_id.is_empty() {
        c.push(C::TraceId(ff.trace_id.clone()));
    }
    if !ff.ip_trace_id.is_empty() {
        c.push(C::IpTraceId(ff.ip_trace_id.clone()));
    }
    if !ff.traffic_direction.is_empty() {
        c.push(C::TrafficDirection(ff.traffic_direction.clone()));
    }
    if !ff.interface.is_empty() {
        c.push(C::Interface(ff.interface.clone()));
    }
    if !ff.encrypted.is_empty() {
        c.push(C::Encrypted(ff.encrypted.clone()));
    }
    Ok(Compiled { criteria: c })
}

impl Criterion {
    fn matches(&self, f: &Flow) -> bool {
        match self {
            Criterion::Uuid(ids) => ids.contains(&f.uuid),
            Criterion::EventType(types) => {
                let Some(ev) = f.event_type.as_ref() else {
                    return false;
                };
                types.iter().any(|t| {
                    (t.r#type == 0 || t.r#type == ev.r#type)
                        && (!t.match_sub_type || t.sub_type == ev.sub_type)
                })
            }
            Criterion::Verdict(v) => v.contains(&f.verdict),
            Criterion::DropReasonDesc(d) => {
                f.verdict == Verdict::Dropped as i32 && d.contains(&f.drop_reason_desc)
            }
            Criterion::Reply(values) => {
                // Hubble-UI compat: for DROPPED flows an unknown is_reply counts as false.
                if f.is_reply.is_none() && f.verdict != Verdict::Dropped as i32 {
                    return false;
                }
                let reply = f.is_reply.as_ref().is_some_and(|b| b.value);
                values.contains(&reply)
            }
            Criterion::Identity(side, ids) => side
                .endpoint(f)
                .is_some_and(|ep| ids.contains(&ep.identity)),
            Criterion::Protocol(mask) => protocol_bits(f) & mask != 0,
            Criterion::Ip(field, m) => m.matches(field.get(f)),
            Criterion::Pod(side, names) => {
                let (ns, pod) = side
                    .endpoint(f)
                    .map_or(("", ""), |e| (&e.namespace[..], &e.pod_name[..]));
                match_ns_names(names, ns, pod)
            }
            Criterion::Service(side, names) => {
                let (ns, name) = side
                    .service(f)
                    .map_or(("", ""), |s| (&s.namespace[..], &s.name[..]));
                match_ns_names(names, ns, name)
            }
            Criterion::Workload(side, filters) => side.endpoint(f).is_some_and(|ep| {
                ep.workloads.iter().any(|w| {
                    filters.iter().any(|fw| {
                        (fw.name.is_empty() || fw.name == w.name)
                            && (fw.kind.is_empty() || fw.kind == w.kind)
                    })
                })
            }),
            Criterion::ClusterName(side, names) => {
                let cluster = side.endpoint(f).map_or("", |e| &e.cluster_name[..]);
                names.iter().any(|n| n == cluster)
            }
            Criterion::Fqdn(side, re) => side.names(f).iter().any(|n| re.is_match(n)),
            Criterion::DnsQuery(res) => match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
                Some(layer7::Record::Dns(dns)) => res.iter().any(|r| r.is_match(&dns.query)),
                _ => false,
            },
            Criterion::Labels(side, selectors) => {
                let labels = side.endpoint(f).map_or(&[][..], |e| &e.labels[..]);
                selectors.iter().any(|s| s.matches(labels))
            }
            Criterion::NodeLabels(selectors) => selectors.iter().any(|s| s.matches(&f.node_labels)),
            Criterion::Port(side, ports) => side.port(f).is_some_and(|p| ports.contains(&p)),
            Criterion::HttpStatus { full, prefix } => {
                let Some(h) = http(f).filter(|h| h.code != 0) else {
                    return false;
                };
                let mut buf = [0u8; 10];
                let code = format_status(h.code, &mut buf);
                full.iter().any(|s| s == code)
                    || prefix.iter().any(|p| code.starts_with(p.as_str()))
            }
            Criterion::HttpMethod(methods) => match http(f) {
                Some(h) if !h.method.is_empty() => methods.iter().any(|m| equal_fold(&h.method, m)),
                _ => false,
            },
            Criterion::HttpPath(res) => {
                let Some(h) = http(f).filter(|h| !h.url.is_empty()) else {
                    return false;
                };
                match request_uri_path(&h.url) {
                    Some(path) => res.iter().any(|r| r.is_match(&path)),
                    None => false,
                }
            }
            Criterion::HttpUrl(res) => match http(f) {
                Some(h) if !h.url.is_empty() => res.iter().any(|r| r.is_match(&h.url)),
                _ => false,
            },
            Criterion::HttpHeader(headers) => http(f).is_some_and(|h| {
                h.headers.iter().any(|fh| {
                    headers
                        .iter()
                        .any(|w| w.key == fh.key && w.value == fh.value)
                })
            }),
            Criterion::TcpFlags(wanted) => {
                let flags = match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
                    Some(layer4::Protocol::Tcp(tcp)) => tcp.flags.as_ref(),
                    _ => None,
                };
                let Some(flags) = flags else {
                    return false;
                };
                let have = tcp_flag_bits(flags);
                wanted.iter().any(|w| w & have == *w)
            }
            Criterion::NodeName(re) => match_node_name(re, &f.node_name),
            Criterion::IpVersion(v) => v.contains(&f.ip.as_ref().map_or(0, |ip| ip.ip_version)),
            Criterion::TraceId(ids) => {
                let id = f
                    .trace_context
                    .as_ref()
                    .and_then(|t| t.parent.as_ref())
                    .map_or("", |p| &p.trace_id[..]);
                ids.iter().any(|i| i == id)
            }
            Criterion::IpTraceId(ids) => f
                .ip_trace_id
                .as_ref()
                .is_some_and(|t| ids.contains(&t.trace_id)),
            Criterion::TrafficDirection(d) => d.contains(&f.traffic_direction),
            Criterion::Interface(ifaces) => {
                let Some(iface) = f.interface.as_ref() else {
                    return false;
                };
                ifaces.iter().any(|i| {
                    (i.index == 0 || i.index == iface.index)
                        && (i.name.is_empty() || i.name == iface.name)
                })
            }
            Criterion::Encrypted(v) => v.contains(&f.ip.as_ref().is_some_and(|ip| ip.encrypted)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testutil::*;

    #[test]
    fn empty_filters_match_everything() {
        let fs = FlowFilters::new(&[], &[]).unwrap();
        assert!(fs.is_empty());
        assert!(fs.matches(&Flow::default()));
        // An empty FlowFilter in the whitelist matches everything too.
        assert!(
            FlowFilters::new(&[ff()], &[])
                .unwrap()
                .matches(&Flow::default())
        );
        // ... and in the blacklist excludes everything.
        assert!(
            !FlowFilters::new(&[], &[ff()])
                .unwrap()
                .matches(&Flow::default())
        );
    }

    #[test]
    fn whitelist_or_blacklist_nor() {
        let a = FlowFilter {
            source_ip: s(&["1.1.1.1"]),
            ..ff()
        };
        let b = FlowFilter {
            destination_ip: s(&["2.2.2.2"]),
            ..ff()
        };
        let fs = FlowFilters::new(&[a.clone(), b.clone()], &[]).unwrap();
        assert!(fs.matches(&Flow {
            ip: ip("1.1.1.1", "9.9.9.9"),
            ..Default::default()
        }));
        assert!(fs.matches(&Flow {
            ip: ip("9.9.9.9", "2.2.2.2"),
            ..Default::default()
        }));
        assert!(!fs.matches(&Flow {
            ip: ip("9.9.9.9", "9.9.9.9"),
            ..Default::default()
        }));
        let fs = FlowFilters::new(&[], &[a, b]).unwrap();
        assert!(!fs.matches(&Flow {
            ip: ip("1.1.1.1", "9.9.9.9"),
            ..Default::default()
        }));
        assert!(fs.matches(&Flow {
            ip: ip("9.9.9.9", "9.9.9.9"),
            ..Default::default()
        }));
        // AND across fields within one filter.
        let both = FlowFilter {
            source_ip: s(&["1.1.1.1"]),
            destination_port: s(&["80"]),
            ..ff()
        };
        check(
            both,
            &[
                (
                    Flow {
                        ip: ip("1.1.1.1", "x"),
                        l4: tcp(1, 80, None),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        ip: ip("1.1.1.1", "x"),
                        l4: tcp(1, 81, None),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
    }

    #[test]
    fn uuid() {
        check(
            FlowFilter {
                uuid: s(&["a", "b"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        uuid: "a".into(),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        uuid: "c".into(),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
    }

    #[test]
    fn identity_verdict_direction_version_encrypted() {
        let idf = |src: u32, dst: u32| Flow {
            source: Some(Endpoint {
                identity: src,
                ..Default::default()
            }),
            destination: Some(Endpoint {
                identity: dst,
                ..Default::default()
            }),
            ..Default::default()
        };
        check(
            FlowFilter {
                source_identity: vec![2, 16777218],
                destination_identity: vec![1],
                ..ff()
            },
            &[
                (idf(2, 1), true),
                (idf(16777218, 1), true),
                (idf(1, 2), false),
                (Flow::default(), false),
            ],
        );
        check(
            FlowFilter {
                verdict: vec![Verdict::Dropped as i32, Verdict::Audit as i32],
                ..ff()
            },
            &[
                (
                    Flow {
                        verdict: 2,
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        verdict: 4,
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        verdict: 1,
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        check(
            FlowFilter {
                traffic_direction: vec![2],
                ..ff()
            },
            &[
                (
                    Flow {
                        traffic_direction: 2,
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        traffic_direction: 1,
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        let v = |ver: i32| Flow {
            ip: Some(Ip {
                ip_version: ver,
                ..Default::default()
            }),
            ..Default::default()
        };
        check(
            FlowFilter {
                ip_version: vec![0, 2],
                ..ff()
            },
            &[
                (v(2), true),
                (v(1), false),
                (v(0), true),
                (Flow::default(), true),
            ],
        );
        let e = |enc: bool| Flow {
            ip: Some(Ip {
                encrypted: enc,
                ..Default::default()
            }),
            ..Default::default()
        };
        check(
            FlowFilter {
                encrypted: vec![true],
                ..ff()
            },
            &[(e(true), true), (e(false), false), (Flow::default(), false)],
        );
        check(
            FlowFilter {
                encrypted: vec![false],
                ..ff()
            },
            &[(Flow::default(), true)],
        );
    }

    #[test]
    fn drop_reason_desc() {
        check(
            FlowFilter {
                drop_reason_desc: vec![133, 181],
                ..ff()
            },
            &[
                (
                    Flow {
                        verdict: 2,
                        drop_reason_desc: 181,
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        verdict: 2,
                        drop_reason_desc: 132,
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        verdict: 1,
                        drop_reason_desc: 181,
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
    }

    #[test]
    fn interface() {
        let iface = |index: u32, name: &str| NetworkInterface {
            index,
            name: name.into(),
        };
        let flow = |index: u32, name: &str| Flow {
            interface: Some(iface(index, name)),
            ..Default::default()
        };
        check(
            FlowFilter {
                interface: vec![iface(0, "eth0"), iface(7, "")],
                ..ff()
            },
            &[
                (flow(3, "eth0"), true),
                (flow(7, "lxc1"), true),
                (flow(3, "eth1"), false),
                (Flow::default(), false),
            ],
        );
    }

    #[test]
    fn event_type_with_subtype() {
        let flow = |t: i32, st: i32| Flow {
            event_type: Some(CiliumEventType {
                r#type: t,
                sub_type: st,
            }),
            ..Default::default()
        };
        check(
            FlowFilter {
                event_type: vec![
                    EventTypeFilter {
                        r#type: 1,
                        match_sub_type: false,
                        sub_type: 0,
                    },
                    EventTypeFilter {
                        r#type: 4,
                        match_sub_type: true,
                        sub_type: 1,
                    },
                ],
                ..ff()
            },
            &[
                (flow(1, 133), true),
                (flow(4, 1), true),
                (flow(4, 0), false),
                (flow(5, 0), false),
                (Flow::default(), false),
            ],
        );
        // Type 0 matches any type; the subtype is then still compared.
        check(
            FlowFilter {
                event_type: vec![EventTypeFilter {
                    r#type: 0,
                    match_sub_type: true,
                    sub_type: 3,
                }],
                ..ff()
            },
            &[(flow(4, 3), true), (flow(1, 3), true), (flow(1, 4), false)],
        );
    }

    #[test]
    fn reply_quirk_for_dropped() {
        let flow = |reply: Option<bool>, verdict: Verdict| {
            let mut f = Flow {
                verdict: verdict as i32,
                ..Default::default()
            };
            if let Some(value) = reply {
                f.is_reply = Some(Default::default());
                if let Some(b) = f.is_reply.as_mut() {
                    b.value = value;
                }
            }
            f
        };
        check(
            FlowFilter {
                reply: vec![false],
                ..ff()
            },
            &[
                (flow(Some(false), Verdict::Forwarded), true),
                (flow(Some(true), Verdict::Forwarded), false),
                (flow(None, Verdict::Forwarded), false),
                (flow(None, Verdict::Dropped), true),
            ],
        );
        check(
            FlowFilter {
                reply: vec![true],
                ..ff()
            },
            &[
                (flow(Some(true), Verdict::Forwarded), true),
                (flow(None, Verdict::Dropped), false),
            ],
        );
    }

    #[test]
    fn trace_ids() {
        let traced = |id: &str| Flow {
            trace_context: Some(TraceContext {
                parent: Some(TraceParent {
                    trace_id: id.into(),
                }),
            }),
            ..Default::default()
        };
        check(
            FlowFilter {
                trace_id: s(&["abc"]),
                ..ff()
            },
            &[
                (traced("abc"), true),
                (traced("abd"), false),
                (Flow::default(), false),
            ],
        );
        let ipt = |id: u64| Flow {
            ip_trace_id: Some(IpTraceId {
                trace_id: id,
                ip_option_type: 0,
            }),
            ..Default::default()
        };
        check(
            FlowFilter {
                ip_trace_id: vec![7],
                ..ff()
            },
            &[(ipt(7), true), (ipt(8), false), (Flow::default(), false)],
        );
    }

    #[test]
    fn cel_is_rejected() {
        let f = FlowFilter {
            experimental: Some(Experimental {
                cel_expression: s(&["true"]),
            }),
            ..ff()
        };
        assert_eq!(build_err(f.clone()), FilterError::CelNotSupported);
        assert_eq!(
            FlowFilters::new(&[], &[f]).unwrap_err(),
            FilterError::CelNotSupported
        );
        // An empty experimental block is fine.
        let empty = FlowFilter {
            experimental: Some(Experimental::default()),
            ..ff()
        };
        assert!(FlowFilters::new(&[empty], &[]).is_ok());
    }
}
