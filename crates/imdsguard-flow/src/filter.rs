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
//! Regular expressions (`dns_query`, `http_path`, `http_url`) are Go RE2 syntax; they are
//! translated so that `\d \w \s \b` (and their negations) stay ASCII-only as in Go, `\Q…\E`
//! works, and a `{` that does not start a repetition is a literal. Unicode classes such as
//! `\pL` are not available (the workspace builds `regex` without `unicode-gencat`).

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use regex::Regex;

use crate::flow::{
    Endpoint, EventTypeFilter, Flow, FlowFilter, Http, HttpHeader, NetworkInterface, Service,
    TcpFlags, Verdict, Workload, layer4, layer7,
};
use crate::names;

/// Why a set of flow filters (or `hubble observe` filter flags, see [`crate::filterflags`]) was
/// rejected. The texts follow Hubble's where Hubble has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// `source_ip`/`source_ip_xlated`/`destination_ip` entry without `/` that is no IP address.
    #[error("invalid IP address in filter: {value:?}")]
    InvalidIp { value: String },
    /// IP filter entry with `/` that is no CIDR.
    #[error("invalid CIDR in filter: {value:?}")]
    InvalidCidr { value: String },
    /// Empty `source_pod`/`destination_pod`/`source_service`/`destination_service` entry.
    #[error("invalid {field} filter, must be [namespace/][<name>], got {value:?}")]
    InvalidNamespacedName { field: &'static str, value: String },
    /// Bad FQDN or node name pattern (`source_fqdn`, `destination_fqdn`, `node_name`).
    #[error("invalid {field} filter {value:?}: {reason}")]
    InvalidPattern {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// Bad label selector (`source_label`, `destination_label`, `node_labels`).
    #[error("invalid {field} filter {selector:?}: {reason}")]
    InvalidLabelSelector {
        field: &'static str,
        selector: String,
        reason: String,
    },
    /// Port that is no decimal `u16`.
    #[error("invalid {field} filter: invalid port {value:?}")]
    InvalidPort { field: &'static str, value: String },
    /// `http_status_code` entry that is neither `NNN` nor `N+`/`NN+` (first digit 1-5).
    #[error("invalid http status code filter: invalid status code prefix: {value:?}")]
    InvalidHttpStatus { value: String },
    /// An HTTP filter while `event_type` is set but does not contain type 129 (`l7`).
    #[error("filtering by http {what} requires the event type filter to only match 'l7' events")]
    HttpRequiresL7 { what: &'static str },
    /// Regular expression that does not compile (`dns_query`, `http_path`, `http_url`).
    #[error("invalid {field} filter: {pattern}: {reason}")]
    InvalidRegex {
        field: &'static str,
        pattern: String,
        reason: String,
    },
    /// `protocol` entry outside icmp, icmpv4, icmpv6, tcp, udp, sctp, vrrp, igmp, dns, http, kafka.
    #[error("invalid protocol filter: unknown protocol: {value:?}")]
    UnknownProtocol { value: String },
    /// Empty `source_cluster_name`/`destination_cluster_name` entry.
    #[error("invalid {field} filter, name must not be empty")]
    EmptyClusterName { field: &'static str },
    /// `experimental.cel_expression` is set: CEL is not supported by this implementation.
    #[error("CEL expression filters (experimental.cel_expression) are not supported")]
    CelNotSupported,
    /// A `hubble observe` flag that is not a filter flag (long name, without dashes).
    #[error("unknown filter flag --{flag}")]
    UnknownFlag { flag: String },
    /// `--not --not`.
    #[error("consecutive --not statements")]
    ConsecutiveNot,
    /// `--not` as the last filter flag.
    #[error("trailing --not found in the arguments")]
    TrailingNot,
    /// Two flags of one conflict group in the same list (whitelist or blacklist).
    #[error("filters --{first} and --{second} cannot be combined")]
    Conflict {
        first: &'static str,
        second: &'static str,
    },
    /// A namespace flag contradicts the namespace of a pod/service flag (Hubble's messages, one
    /// per line).
    #[error("{message}")]
    NamespaceConflict { message: String },
    /// A filter flag value Hubble's CLI rejects (e.g. `--verdict forwarded`); `message` is the
    /// CLI's text.
    #[error("{message}")]
    InvalidFlagValue {
        flag: &'static str,
        value: String,
        message: String,
    },
}

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

// ---------------------------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------------------------

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

#[derive(Debug, Clone, Copy)]
enum IpField {
    Source,
    SourceXlated,
    Destination,
}

impl IpField {
    fn get(self, f: &Flow) -> &str {
        match (f.ip.as_ref(), self) {
            (None, _) => "",
            (Some(ip), IpField::Source) => &ip.source,
            (Some(ip), IpField::SourceXlated) => &ip.source_xlated,
            (Some(ip), IpField::Destination) => &ip.destination,
        }
    }
}

/// A network as Go's `net.IPNet` sees it: IPv4 and IPv4-mapped IPv6 both in the 4-byte form.
#[derive(Debug, Clone, Copy)]
enum GoNet {
    V4(Ipv4Net),
    V6(Ipv6Net),
}

impl GoNet {
    fn new(net: IpNet) -> Self {
        match net.trunc() {
            IpNet::V4(n) => GoNet::V4(n),
            IpNet::V6(n) => match n.network().to_ipv4_mapped() {
                // Go's networkNumberAndMask keeps the last 32 bits of the mask.
                Some(a) => GoNet::V4(
                    Ipv4Net::new(a, n.prefix_len().saturating_sub(96)).unwrap_or_default(),
                ),
                None => GoNet::V6(n),
            },
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip4 = match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        match (self, ip4, ip) {
            (GoNet::V4(n), Some(a), _) => n.contains(&a),
            (GoNet::V6(n), None, IpAddr::V6(a)) => n.contains(&a),
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct IpMatcher {
    exact: Vec<String>,
    cidrs: Vec<GoNet>,
}

impl IpMatcher {
    fn new(values: &[String]) -> Result<Self, FilterError> {
        let mut m = IpMatcher {
            exact: Vec::new(),
            cidrs: Vec::new(),
        };
        for v in values {
            if v.contains('/') {
                let net: IpNet = v
                    .parse()
                    .map_err(|_| FilterError::InvalidCidr { value: v.clone() })?;
                m.cidrs.push(GoNet::new(net));
            } else {
                v.parse::<IpAddr>()
                    .map_err(|_| FilterError::InvalidIp { value: v.clone() })?;
                m.exact.push(v.clone());
            }
        }
        Ok(m)
    }

    fn matches(&self, ip: &str) -> bool {
        if ip.is_empty() {
            return false;
        }
        if self.exact.iter().any(|e| e == ip) {
            return true;
        }
        if self.cidrs.is_empty() {
            return false;
        }
        match ip.parse::<IpAddr>() {
            Ok(addr) => self.cidrs.iter().any(|n| n.contains(addr)),
            Err(_) => false,
        }
    }
}

/// `[namespace/]prefix` as parsed by Hubble's `ParseNamespaceName`.
#[derive(Debug, Clone)]
struct NsName {
    ns: String,
    prefix: String,
}

impl NsName {
    fn parse(field: &'static str, s: &str) -> Result<Self, FilterError> {
        if s.is_empty() {
            return Err(FilterError::InvalidNamespacedName {
                field,
                value: s.to_owned(),
            });
        }
        let mut parts = s.split('/');
        let first = parts.next().unwrap_or_default();
        Ok(match parts.next() {
            Some(second) => NsName {
                ns: first.to_owned(),
                prefix: second.to_owned(),
            },
            None => NsName {
                ns: "default".to_owned(),
                prefix: first.to_owned(),
            },
        })
    }
}

fn match_ns_names(filters: &[NsName], ns: &str, name: &str) -> bool {
    if ns.is_empty() && name.is_empty() {
        return false;
    }
    filters.iter().any(|f| {
        (f.prefix.is_empty() || name.starts_with(f.prefix.as_str()))
            && (f.ns.is_empty() || f.ns == ns)
    })
}

const P_ICMP4: u16 = 1;
const P_ICMP6: u16 = 1 << 1;
const P_TCP: u16 = 1 << 2;
const P_UDP: u16 = 1 << 3;
const P_SCTP: u16 = 1 << 4;
const P_VRRP: u16 = 1 << 5;
const P_IGMP: u16 = 1 << 6;
const P_DNS: u16 = 1 << 7;
const P_HTTP: u16 = 1 << 8;
const P_KAFKA: u16 = 1 << 9;

fn protocol_bits(f: &Flow) -> u16 {
    let l4 = match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(layer4::Protocol::Tcp(_)) => P_TCP,
        Some(layer4::Protocol::Udp(_)) => P_UDP,
        Some(layer4::Protocol::IcmPv4(_)) => P_ICMP4,
        Some(layer4::Protocol::IcmPv6(_)) => P_ICMP6,
        Some(layer4::Protocol::Sctp(_)) => P_SCTP,
        Some(layer4::Protocol::Vrrp(_)) => P_VRRP,
        Some(layer4::Protocol::Igmp(_)) => P_IGMP,
        None => 0,
    };
    #[allow(deprecated)]
    let l7 = match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
        Some(layer7::Record::Dns(_)) => P_DNS,
        Some(layer7::Record::Http(_)) => P_HTTP,
        Some(layer7::Record::Kafka(_)) => P_KAFKA,
        None => 0,
    };
    l4 | l7
}

fn tcp_flag_bits(t: &TcpFlags) -> u16 {
    [t.fin, t.syn, t.rst, t.psh, t.ack, t.urg, t.ece, t.cwr, t.ns]
        .iter()
        .enumerate()
        .fold(0, |acc, (i, set)| if *set { acc | (1 << i) } else { acc })
}

fn http(f: &Flow) -> Option<&Http> {
    match f.l7.as_ref()?.record.as_ref()? {
        layer7::Record::Http(h) => Some(h),
        _ => None,
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
            mask |= match p.to_lowercase().as_str() {
                "icmp" => P_ICMP4 | P_ICMP6,
                "icmpv4" => P_ICMP4,
                "icmpv6" => P_ICMP6,
                "tcp" => P_TCP,
                "udp" => P_UDP,
                "sctp" => P_SCTP,
                "vrrp" => P_VRRP,
                "igmp" => P_IGMP,
                "dns" => P_DNS,
                "http" => P_HTTP,
                "kafka" => P_KAFKA,
                _ => return Err(FilterError::UnknownProtocol { value: p.clone() }),
            };
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
                    parse_decimal(p, u16::MAX.into())
                        .map(|v| v as u16)
                        .ok_or_else(|| FilterError::InvalidPort {
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

/// `^[1-5][0-9]{2}$`
fn is_status_full(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && b[1].is_ascii_digit() && b[2].is_ascii_digit()
}

/// `^[1-5][0-9]?\+$` → the digits before `+`.
fn status_prefix(s: &str) -> Option<&str> {
    let p = s.strip_suffix('+')?;
    let b = p.as_bytes();
    let ok = match b.len() {
        1 => (b'1'..=b'5').contains(&b[0]),
        2 => (b'1'..=b'5').contains(&b[0]) && b[1].is_ascii_digit(),
        _ => false,
    };
    ok.then_some(p)
}

/// Go's `strconv.ParseUint(s, 10, _)` with an upper bound: digits only (no sign), not empty.
fn parse_decimal(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|v| *v <= max)
}

fn compile_regexes(field: &'static str, patterns: &[String]) -> Result<Vec<Regex>, FilterError> {
    patterns
        .iter()
        .map(|p| {
            compile_go_regex(p).map_err(|reason| FilterError::InvalidRegex {
                field,
                pattern: p.clone(),
                reason,
            })
        })
        .collect()
}

fn compile_selectors(
    field: &'static str,
    selectors: &[String],
) -> Result<Vec<LabelSelector>, FilterError> {
    selectors
        .iter()
        .map(|s| {
            LabelSelector::parse(s).map_err(|reason| FilterError::InvalidLabelSelector {
                field,
                selector: s.clone(),
                reason,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------

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

/// `fmt.Sprintf("%03d", code)` into `buf`.
fn format_status(code: u32, buf: &mut [u8; 10]) -> &str {
    let mut digits = [b'0'; 10];
    let (mut n, mut len) = (code, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = len.max(3);
    for (i, d) in digits[..len].iter().rev().enumerate() {
        buf[i] = *d;
    }
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

/// Go's `strings.EqualFold` (simple case folding; ASCII fast path).
fn equal_fold(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

fn match_node_name(re: &Regex, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    if name.contains('/') {
        return re.is_match(name);
    }
    // The node name always includes a cluster name: prepend the default one, on the stack.
    const PREFIX: &[u8] = b"default/";
    let mut buf = [0u8; 320];
    let len = PREFIX.len() + name.len();
    if len > buf.len() {
        return re.is_match(&format!("default/{name}"));
    }
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    buf[PREFIX.len()..len].copy_from_slice(name.as_bytes());
    std::str::from_utf8(&buf[..len]).is_ok_and(|s| re.is_match(s))
}

// ---------------------------------------------------------------------------------------------
// FQDN and node name patterns (`patterns.go`)
// ---------------------------------------------------------------------------------------------

/// Matches an FQDN, including underscores (Hubble's `fqdnRegexpStr`).
const FQDN_REGEX: &str = r"(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)";

fn append_fqdn_pattern(out: &mut String, pattern: &str) -> Result<(), String> {
    let trimmed = pattern.trim();
    let p = trimmed.strip_suffix('.').unwrap_or(trimmed).to_lowercase();
    if p.is_empty() {
        return Err("empty pattern".into());
    }
    if p.ends_with('.') {
        return Err("multiple trailing dots in pattern".into());
    }
    for r in p.chars() {
        match r {
            '.' => out.push_str(r"\."),
            '*' => out.push_str("[-.0-9a-z]*"),
            '-' | '0'..='9' | '_' | 'a'..='z' => out.push(r),
            _ => return Err(format!("{r:?}: invalid rune in pattern")),
        }
    }
    Ok(())
}

fn compile_fqdn_patterns(field: &'static str, patterns: &[String]) -> Result<Regex, FilterError> {
    let mut re = String::from(r"\A(?:");
    for (i, p) in patterns.iter().enumerate() {
        if i > 0 {
            re.push('|');
        }
        append_fqdn_pattern(&mut re, p).map_err(|reason| FilterError::InvalidPattern {
            field,
            value: p.clone(),
            reason,
        })?;
    }
    re.push_str(r")\z");
    Regex::new(&re).map_err(|e| FilterError::InvalidPattern {
        field,
        value: patterns.join(","),
        reason: e.to_string(),
    })
}

fn append_node_name_pattern(out: &mut String, pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("empty pattern".into());
    }
    let elems: Vec<&str> = pattern.split('/').collect();
    let (cluster, node) = match elems[..] {
        [node] => ("", node),
        [cluster, node] => (cluster, node),
        _ => return Err("too many slashes in pattern".into()),
    };
    for (i, elem) in [cluster, node].into_iter().enumerate() {
        if i == 1 {
            out.push('/');
        }
        if elem.is_empty() {
            out.push_str(FQDN_REGEX);
        } else {
            append_fqdn_pattern(out, elem)?;
        }
    }
    Ok(())
}

fn compile_node_name_patterns(patterns: &[String]) -> Result<Regex, FilterError> {
    let mut re = String::from(r"\A(?:");
    for (i, p) in patterns.iter().enumerate() {
        if i > 0 {
            re.push('|');
        }
        append_node_name_pattern(&mut re, p).map_err(|reason| FilterError::InvalidPattern {
            field: "node_name",
            value: p.clone(),
            reason,
        })?;
    }
    re.push_str(r")\z");
    Regex::new(&re).map_err(|e| FilterError::InvalidPattern {
        field: "node_name",
        value: patterns.join(","),
        reason: e.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Go RE2 → Rust regex
// ---------------------------------------------------------------------------------------------

fn compile_go_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(&translate_go_regex(pattern)).map_err(|e| {
        // The regex crate's message spans several lines; keep the last (the reason).
        e.to_string()
            .lines()
            .last()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned()
    })
}

/// Perl classes with Go's ASCII-only meaning; `None` leaves the escape as it is.
fn go_perl_class(c: char, in_class: bool) -> Option<&'static str> {
    Some(match (c, in_class) {
        ('d', false) => "[0-9]",
        ('d', true) => "0-9",
        ('w', false) => "[0-9A-Za-z_]",
        ('w', true) => "0-9A-Za-z_",
        ('s', false) => r"[\t\n\x0C\r ]",
        ('s', true) => r"\t\n\x0C\r ",
        ('D', _) => "[^0-9]",
        ('W', _) => "[^0-9A-Za-z_]",
        ('S', _) => r"[^\t\n\x0C\r ]",
        ('b', false) => r"(?-u:\b)",
        ('B', false) => r"(?-u:\B)",
        _ => return None,
    })
}

/// Is `rest` (after a `{`) a Go repetition `n}`, `n,}` or `n,m}`?
fn is_go_repeat(rest: &str) -> bool {
    let Some(end) = rest.find('}') else {
        return false;
    };
    let body = &rest[..end];
    let (min, max) = body
        .split_once(',')
        .map_or((body, None), |(a, b)| (a, Some(b)));
    !min.is_empty()
        && min.bytes().all(|b| b.is_ascii_digit())
        && max.is_none_or(|m| m.bytes().all(|b| b.is_ascii_digit()))
}

fn translate_go_regex(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 16);
    let mut in_class = false;
    // Just after `[` (1) or `[^` (2): a `]` here is a literal.
    let mut class_start = 0u8;
    let mut i = 0;
    while i < p.len() {
        let Some(c) = p[i..].chars().next() else {
            break;
        };
        let next = p[i + c.len_utf8()..].chars().next();
        let was_start = std::mem::take(&mut class_start);
        if c == '\\' {
            let Some(n) = next else {
                out.push('\\');
                break;
            };
            i += 1 + n.len_utf8();
            if matches!(n, 'p' | 'P' | 'x') && p[i..].starts_with('{') {
                // \p{Name}, \x{hex}: copy the braces verbatim.
                let end = p[i..].find('}').map_or(p.len(), |e| i + e + 1);
                out.push('\\');
                out.push(n);
                out.push_str(&p[i..end]);
                i = end;
                continue;
            }
            if n == 'Q' && !in_class {
                let rest = &p[i..];
                let (lit, skip) = rest
                    .find(r"\E")
                    .map_or((rest, rest.len()), |e| (&rest[..e], e + 2));
                out.push_str(&regex::escape(lit));
                i += skip;
                continue;
            }
            match go_perl_class(n, in_class) {
                Some(r) => out.push_str(r),
                None => {
                    out.push('\\');
                    out.push(n);
                }
            }
            continue;
        }
        i += c.len_utf8();
        if in_class {
            match c {
                ']' if was_start > 0 => out.push_str(r"\]"),
                ']' => {
                    in_class = false;
                    out.push(']');
                }
                // [:name:] copied as is (Go looks for `:]` after the `[:`).
                '[' if next == Some(':') && p[i + 1..].contains(":]") => {
                    let end = p[i + 1..].find(":]").map_or(0, |e| e + 3);
                    out.push('[');
                    out.push_str(&p[i..i + end]);
                    i += end;
                }
                '[' | '&' | '~' => {
                    out.push('\\');
                    out.push(c);
                }
                '^' if was_start == 1 => {
                    out.push('^');
                    class_start = 2;
                }
                _ => out.push(c),
            }
        } else {
            match c {
                '[' => {
                    in_class = true;
                    class_start = 1;
                    out.push('[');
                }
                '{' if !is_go_repeat(&p[i..]) => out.push_str(r"\{"),
                _ => out.push(c),
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Go's url.ParseRequestURI(u).Path
// ---------------------------------------------------------------------------------------------

/// The (unescaped) path of `raw` as Go's `url.ParseRequestURI` returns it; `None` when Go
/// rejects the URL. Borrows unless the path has `%` escapes.
fn request_uri_path(raw: &str) -> Option<Cow<'_, str>> {
    if raw.is_empty() || raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return None;
    }
    if raw == "*" {
        return Some(Cow::Borrowed("*"));
    }
    let (scheme, rest) = split_scheme(raw)?;
    let rest = if rest.ends_with('?') && rest.bytes().filter(|b| *b == b'?').count() == 1 {
        &rest[..rest.len() - 1]
    } else {
        rest.split_once('?').map_or(rest, |(a, _)| a)
    };
    if !rest.starts_with('/') {
        // Rootless paths with a scheme are opaque (empty Path); without one Go errors.
        return (!scheme.is_empty()).then_some(Cow::Borrowed(""));
    }
    let mut path = rest;
    if !scheme.is_empty()
        && let Some(after) = rest.strip_prefix("//")
    {
        let (authority, p) = after
            .find('/')
            .map_or((after, ""), |i| (&after[..i], &after[i..]));
        if !valid_authority(authority) {
            return None;
        }
        path = p;
    }
    unescape_path(path)
}

fn split_scheme(raw: &str) -> Option<(&str, &str)> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return None,
            b':' => return Some((&raw[..i], &raw[i + 1..])),
            _ => return Some(("", raw)),
        }
    }
    Some(("", raw))
}

fn unhex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `shouldEscape(c, encodeHost)` for ASCII bytes.
fn host_byte_needs_escape(c: u8) -> bool {
    !(c.is_ascii_alphanumeric() || b"!$&'()*+,;=:[]<>\"-_.~".contains(&c))
}

fn valid_host_chars(host: &str) -> bool {
    let b = host.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (Some(h), Some(_)) = (
                    b.get(i + 1).and_then(|x| unhex(*x)),
                    b.get(i + 2).and_then(|x| unhex(*x)),
                ) else {
                    return false;
                };
                if h < 8 && &b[i..i + 3] != b"%25" {
                    return false;
                }
                i += 3;
            }
            c if c < 0x80 && host_byte_needs_escape(c) => return false,
            _ => i += 1,
        }
    }
    true
}

fn valid_optional_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_authority(authority: &str) -> bool {
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let host_ok = if host.starts_with('[') {
        match host.rfind(']') {
            None => false,
            Some(i) => {
                valid_optional_port(&host[i + 1..])
                    && match host[..i].find("%25") {
                        // The zone is permissive; validate the address part.
                        Some(z) => valid_host_chars(&host[..z]),
                        None => valid_host_chars(host),
                    }
            }
        }
    } else {
        host.rfind(':')
            .is_none_or(|i| valid_optional_port(&host[i..]))
            && valid_host_chars(host)
    };
    let user_ok = userinfo.is_none_or(|u| {
        u.chars()
            .all(|r| r.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(r))
            && unescape_path(u).is_some()
    });
    host_ok && user_ok
}

fn unescape_path(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).and_then(|x| unhex(*x))?;
            let lo = b.get(i + 2).and_then(|x| unhex(*x))?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

// ---------------------------------------------------------------------------------------------
// Label selectors: Kubernetes selector syntax over Cilium labels (`labels.go`, `labelparser.go`)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Equals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone)]
struct Requirement {
    /// Label source (`any` matches every source).
    source: String,
    key: String,
    /// For `cidr` sources: the prefix, for broader-prefix matching.
    cidr: Option<IpNet>,
    op: Op,
    /// Sorted, deduplicated.
    values: Vec<String>,
    /// The value of `>`/`<`.
    int: i64,
}

/// A Kubernetes label selector (AND of requirements; empty = everything).
#[derive(Debug, Clone)]
struct LabelSelector {
    reqs: Vec<Requirement>,
}

impl LabelSelector {
    fn parse(selector: &str) -> Result<Self, String> {
        let translated = translate_selector(selector);
        let reqs = SelectorParser::new(&translated).parse()?;
        Ok(LabelSelector { reqs })
    }

    fn matches(&self, labels: &[String]) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }
}

/// Cilium's `parseLabel(str, ':')`: `(source, key, value)`, source `unspec` when absent.
fn parse_cilium_label(s: &str) -> (&str, &str, &str) {
    let (src, next) = if s.is_empty() {
        ("", "")
    } else if let Some(rest) = s.strip_prefix('$') {
        ("reserved", rest)
    } else if let Some(i) = s.find(':') {
        (&s[..i], &s[i + 1..])
    } else if let Some(rest) = s.strip_prefix("reserved.") {
        ("reserved", rest)
    } else {
        ("", s)
    };
    let source = if src.is_empty() { "unspec" } else { src };
    match next.find('=') {
        None => (source, next, ""),
        Some(0) if src == "reserved" => (source, &next[1..], ""),
        Some(i) => (source, &next[..i], &next[i + 1..]),
    }
}

/// Cilium's `LabelToPrefix`: IPv6 CIDR labels use `-` for `:`.
fn label_to_prefix(key: &str) -> Option<IpNet> {
    if !key.contains('-') {
        return key.parse().ok();
    }
    let mut buf = [0u8; 64];
    let b = key.as_bytes();
    if b.len() > buf.len() {
        return key.replace('-', ":").parse().ok();
    }
    for (d, s) in buf.iter_mut().zip(b) {
        *d = if *s == b'-' { b':' } else { *s };
    }
    std::str::from_utf8(&buf[..b.len()]).ok()?.parse().ok()
}

impl Requirement {
    /// The value of the first label with this requirement's key (Cilium's `LabelArray.Has/Get`).
    fn lookup<'a>(&self, labels: &'a [String]) -> Option<&'a str> {
        labels.iter().find_map(|l| {
            let (src, key, value) = parse_cilium_label(l);
            self.has_key(src, key).then_some(value)
        })
    }

    fn has_key(&self, src: &str, key: &str) -> bool {
        if self.source != "any" && src != self.source {
            return false;
        }
        if src == "cidr"
            && let Some(target) = self.cidr
            && let Some(have) = label_to_prefix(key)
            && target.prefix_len() <= have.prefix_len()
            && target.contains(&have.addr())
        {
            return true;
        }
        key == self.key
    }

    fn matches(&self, labels: &[String]) -> bool {
        let value = self.lookup(labels);
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.op {
            Op::In | Op::Equals => value.is_some_and(has),
            Op::NotIn | Op::NotEquals => value.is_none_or(|v| !has(v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::GreaterThan => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > self.int),
            Op::LessThan => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < self.int),
        }
    }
}

/// Hubble's `translateSelector`: `k8s:foo` → `k8s.foo`, bare keys get `any.`.
fn translate_selector(selector: &str) -> String {
    let mut out = String::with_capacity(selector.len() + 8);
    let mut chars = selector.chars().peekable();
    while chars.peek().is_some() {
        while let Some(&c) = chars.peek() {
            if !c.is_whitespace() && c != '!' {
                break;
            }
            out.push(c);
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == '=' || c == '!' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.contains(':') {
            out.push_str(&key.replacen(':', ".", 1));
        } else {
            out.push_str("any.");
            out.push_str(&key);
        }
        let mut nesting = 0i32;
        for c in chars.by_ref() {
            match c {
                '(' => nesting += 1,
                ')' => nesting -= 1,
                _ => {}
            }
            out.push(c);
            if c == ',' && nesting == 0 {
                break;
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Error,
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "in" => Tok::In,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "notin" => Tok::NotIn,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The Kubernetes selector lexer (`k8s.io/apimachinery/pkg/labels`).
fn lex(s: &str) -> Vec<(Tok, &str)> {
    let b = s.as_bytes();
    let mut toks = Vec::new();
    let mut pos = 0;
    loop {
        while pos < b.len() && is_ws(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() {
            toks.push((Tok::End, ""));
            return toks;
        }
        let start = pos;
        if is_special(b[pos]) {
            let mut last: Option<(Tok, usize)> = None;
            while pos < b.len() && is_special(b[pos]) {
                match keyword(&s[start..=pos]) {
                    Some(t) => last = Some((t, pos + 1)),
                    None if last.is_some() => break,
                    None => {}
                }
                pos += 1;
            }
            match last {
                Some((t, end)) => {
                    toks.push((t, &s[start..end]));
                    pos = end;
                }
                None => {
                    toks.push((Tok::Error, &s[start..pos]));
                }
            }
        } else {
            while pos < b.len() && !is_special(b[pos]) && !is_ws(b[pos]) {
                pos += 1;
            }
            let lit = &s[start..pos];
            toks.push((keyword(lit).unwrap_or(Tok::Identifier), lit));
        }
    }
}

struct SelectorParser<'a> {
    toks: Vec<(Tok, &'a str)>,
    pos: usize,
}

impl<'a> SelectorParser<'a> {
    fn new(s: &'a str) -> Self {
        SelectorParser {
            toks: lex(s),
            pos: 0,
        }
    }

    /// In the "values" context `in`/`notin` are identifiers.
    fn values_tok(t: Tok) -> Tok {
        match t {
            Tok::In | Tok::NotIn => Tok::Identifier,
            t => t,
        }
    }

    fn lookahead(&self) -> (Tok, &'a str) {
        let (t, l) = self.toks[self.pos.min(self.toks.len() - 1)];
        (Self::values_tok(t), l)
    }

    fn consume_raw(&mut self) -> (Tok, &'a str) {
        let tok = self.toks[self.pos.min(self.toks.len() - 1)];
        self.pos += 1;
        tok
    }

    fn consume(&mut self) -> (Tok, &'a str) {
        let (t, l) = self.consume_raw();
        (Self::values_tok(t), l)
    }

    fn parse(mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (t, lit) = self.lookahead();
            match t {
                Tok::Identifier | Tok::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, lit) = self.consume();
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.lookahead();
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!("found '{lit}', expected: ',' or 'end of string'"));
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (mut t, mut key) = self.consume();
        let mut op = None;
        if t == Tok::DoesNotExist {
            op = Some(Op::DoesNotExist);
            (t, key) = self.consume();
        }
        if t != Tok::Identifier {
            return Err(format!("found '{key}', expected: identifier"));
        }
        validate_label_key(key)?;
        if matches!(self.lookahead().0, Tok::End | Tok::Comma) && op.is_none() {
            op = Some(Op::Exists);
        }
        if let Some(op) = op {
            return new_requirement(key, op, Vec::new());
        }
        let (t, lit) = self.consume_raw();
        let op = match t {
            Tok::In => Op::In,
            Tok::Equals | Tok::DoubleEquals => Op::Equals,
            Tok::GreaterThan => Op::GreaterThan,
            Tok::LessThan => Op::LessThan,
            Tok::NotIn => Op::NotIn,
            Tok::NotEquals => Op::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        };
        let values = match op {
            Op::In | Op::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(key, op, values)
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (t, lit) = self.consume();
        if t != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (t, lit) = self.lookahead();
        match t {
            Tok::Identifier | Tok::Comma => {
                let s = self.parse_identifiers_list()?;
                let (t, _) = self.consume();
                if t != Tok::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Tok::ClosedPar => {
                self.consume();
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut s: Vec<String> = Vec::new();
        loop {
            let (t, lit) = self.consume();
            match t {
                Tok::Identifier => {
                    s.push(lit.to_owned());
                    let (t2, l2) = self.lookahead();
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(s),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if s.is_empty() {
                        s.push(String::new());
                    }
                    let (t2, _) = self.lookahead();
                    if t2 == Tok::ClosedPar {
                        s.push(String::new());
                        return Ok(s);
                    }
                    if t2 == Tok::Comma {
                        self.consume();
                        s.push(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (t, _) = self.lookahead();
        if t == Tok::End || t == Tok::Comma {
            return Ok(vec![String::new()]);
        }
        let (t, lit) = self.consume();
        if t == Tok::Identifier {
            return Ok(vec![lit.to_owned()]);
        }
        Err(format!("found '{lit}', expected: identifier"))
    }
}

fn new_requirement(key: &str, op: Op, mut values: Vec<String>) -> Result<Requirement, String> {
    values.sort();
    values.dedup();
    let mut int = 0;
    match op {
        Op::In | Op::NotIn if values.is_empty() => {
            return Err("for 'in', 'notin' operators, values set can't be empty".into());
        }
        Op::Equals | Op::NotEquals if values.len() != 1 => {
            return Err("exact-match compatibility requires one single value".into());
        }
        Op::GreaterThan | Op::LessThan => {
            int = match values.as_slice() {
                [v] => v.parse::<i64>().map_err(|_| {
                    format!("{v:?}: for 'Gt', 'Lt' operators, the value must be an integer")
                })?,
                _ => return Err("for 'Gt', 'Lt' operators, exactly one value is required".into()),
            };
        }
        _ => {}
    }
    for v in &values {
        validate_label_value(v)?;
    }
    // The key is `source.key` (Cilium's `parseSelectLabel(key, '.')`).
    let (src, rest) = if let Some(r) = key.strip_prefix('$') {
        ("reserved", r)
    } else {
        key.split_once('.').unwrap_or(("", key))
    };
    let rest = match rest.find('=') {
        Some(0) if src == "reserved" => &rest[1..],
        Some(i) => &rest[..i],
        None => rest,
    };
    let source = if src.is_empty() { "any" } else { src };
    Ok(Requirement {
        source: source.to_owned(),
        key: rest.to_owned(),
        cidr: if source == "cidr" {
            label_to_prefix(rest)
        } else {
            None
        },
        op,
        values,
        int,
    })
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// RFC 1123 subdomain.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// `validation.IsQualifiedName`.
fn validate_label_key(k: &str) -> Result<(), String> {
    let name = match k.split('/').collect::<Vec<_>>()[..] {
        [name] => name,
        [prefix, name] => {
            if !is_dns1123_subdomain(prefix) {
                return Err(format!("{k:?}: prefix part must be a DNS-1123 subdomain"));
            }
            name
        }
        _ => return Err(format!("{k:?}: a qualified name must have at most one '/'")),
    };
    if name.len() > 63 || !is_qualified_name_part(name) {
        return Err(format!(
            "{k:?}: name part must be at most 63 alphanumeric characters, '-', '_' or '.', \
             starting and ending with an alphanumeric character"
        ));
    }
    Ok(())
}

/// `validation.IsValidLabelValue`.
fn validate_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || (v.len() <= 63 && is_qualified_name_part(v)) {
        Ok(())
    } else {
        Err(format!(
            "{v:?}: a valid label value must be an empty string or at most 63 alphanumeric \
             characters, '-', '_' or '.', starting and ending with an alphanumeric character"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{
        CiliumEventType, Dns, FlowType, Ip, IpTraceId, Layer4, Layer7, Tcp, TraceContext,
        TraceParent, Udp, flow_filter::Experimental,
    };

    fn ff() -> FlowFilter {
        FlowFilter::default()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    fn ep(ns: &str, pod: &str) -> Option<Endpoint> {
        Some(Endpoint {
            namespace: ns.into(),
            pod_name: pod.into(),
            ..Default::default()
        })
    }

    fn labeled(labels: &[&str]) -> Option<Endpoint> {
        Some(Endpoint {
            labels: s(labels),
            ..Default::default()
        })
    }

    fn tcp(src: u32, dst: u32, flags: Option<TcpFlags>) -> Option<Layer4> {
        Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: src,
                destination_port: dst,
                flags,
            })),
        })
    }

    fn ip(src: &str, dst: &str) -> Option<Ip> {
        Some(Ip {
            source: src.into(),
            destination: dst.into(),
            ..Default::default()
        })
    }

    fn http_flow(method: &str, url: &str, code: u32) -> Flow {
        Flow {
            r#type: FlowType::L7 as i32,
            l7: Some(Layer7 {
                record: Some(layer7::Record::Http(Http {
                    code,
                    method: method.into(),
                    url: url.into(),
                    headers: vec![HttpHeader {
                        key: "x-a".into(),
                        value: "1".into(),
                    }],
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Builds `filter` as the only whitelist filter and checks each flow.
    #[track_caller]
    fn check(filter: FlowFilter, cases: &[(Flow, bool)]) {
        let fs = FlowFilters::new(&[filter], &[]).expect("filter builds");
        for (i, (flow, want)) in cases.iter().enumerate() {
            assert_eq!(fs.matches(flow), *want, "case {i}: {flow:?}");
        }
    }

    #[track_caller]
    fn build_err(filter: FlowFilter) -> FilterError {
        FlowFilters::new(&[filter], &[]).expect_err("filter must be rejected")
    }

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
    fn ip_exact_and_cidr() {
        let f = FlowFilter {
            source_ip: s(&["10.0.0.1", "192.168.0.0/16", "fd00::/8"]),
            ..ff()
        };
        let flow = |src: &str| Flow {
            ip: ip(src, ""),
            ..Default::default()
        };
        check(
            f,
            &[
                (flow("10.0.0.1"), true),
                (flow("10.0.0.2"), false),
                (flow("192.168.3.4"), true),
                (flow("::ffff:192.168.3.4"), true),
                (flow("fd00::1"), true),
                (flow("fe80::1"), false),
                (flow(""), false),
                (Flow::default(), false),
            ],
        );
        // Host bits in a CIDR are fine (Go's ParseCIDR masks them).
        check(
            FlowFilter {
                destination_ip: s(&["10.1.2.3/8"]),
                ..ff()
            },
            &[(
                Flow {
                    ip: ip("", "10.9.9.9"),
                    ..Default::default()
                },
                true,
            )],
        );
        // SNAT (source_ip_xlated).
        check(
            FlowFilter {
                source_ip_xlated: s(&["1.2.3.4"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        ip: Some(Ip {
                            source_xlated: "1.2.3.4".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        ip: ip("1.2.3.4", ""),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        assert_eq!(
            build_err(FlowFilter {
                source_ip: s(&["10.0.0.0/33"]),
                ..ff()
            }),
            FilterError::InvalidCidr {
                value: "10.0.0.0/33".into()
            }
        );
        assert_eq!(
            build_err(FlowFilter {
                destination_ip: s(&["nope"]),
                ..ff()
            }),
            FilterError::InvalidIp {
                value: "nope".into()
            }
        );
        assert_eq!(
            build_err(FlowFilter {
                source_ip_xlated: s(&["1.2.3"]),
                ..ff()
            })
            .to_string(),
            "invalid IP address in filter: \"1.2.3\""
        );
    }

    #[test]
    fn pod_namespace_parsing() {
        let f = FlowFilter {
            source_pod: s(&["xwing", "kube-system/coredns-"]),
            ..ff()
        };
        check(
            f,
            &[
                (
                    Flow {
                        source: ep("default", "xwing"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        source: ep("default", "xwing-t-65b"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        source: ep("kube-system", "coredns-12345"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        source: ep("kube-system", "-coredns-1"),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        source: ep("kube-system", "xwing"),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        source: ep("", "xwing"),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        destination: ep("default", "xwing"),
                        ..Default::default()
                    },
                    false,
                ),
                (Flow::default(), false),
            ],
        );
        // "ns/" = any pod in ns; "/x" = prefix x in any namespace; "/" = any namespaced endpoint.
        check(
            FlowFilter {
                destination_pod: s(&["kube-system/"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        destination: ep("kube-system", "a"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination: ep("default", "a"),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        check(
            FlowFilter {
                destination_pod: s(&["/core"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        destination: ep("kube-system", "coredns"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination: ep("default", "coreutils"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination: ep("default", "xcore"),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        check(
            FlowFilter {
                source_pod: s(&["/"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        source: ep("any", ""),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        source: ep("", "pod-without-ns"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        source: ep("", ""),
                        ..Default::default()
                    },
                    false,
                ),
                (Flow::default(), false),
            ],
        );
        assert_eq!(
            build_err(FlowFilter {
                source_pod: s(&[""]),
                ..ff()
            }),
            FilterError::InvalidNamespacedName {
                field: "source_pod",
                value: String::new()
            }
        );
        assert!(matches!(
            build_err(FlowFilter {
                destination_pod: s(&[""]),
                ..ff()
            }),
            FilterError::InvalidNamespacedName {
                field: "destination_pod",
                ..
            }
        ));
    }

    #[test]
    fn service() {
        let svc = |ns: &str, name: &str| {
            Some(Service {
                namespace: ns.into(),
                name: name.into(),
            })
        };
        check(
            FlowFilter {
                source_service: s(&["deathstar", "kube-system/kube-dns"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        source_service: svc("default", "xwing"),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        source_service: svc("default", "deathstar"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        source_service: svc("kube-system", "kube-dns"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination_service: svc("default", "deathstar"),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        check(
            FlowFilter {
                destination_service: s(&["default/", "kube-system/kube-"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        destination_service: svc("default", "x"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination_service: svc("kube-system", "kube-dns"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination_service: svc("kube-system", "core"),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        assert!(matches!(
            build_err(FlowFilter {
                source_service: s(&[""]),
                ..ff()
            }),
            FilterError::InvalidNamespacedName {
                field: "source_service",
                ..
            }
        ));
    }

    #[test]
    fn fqdn_glob() {
        let f = FlowFilter {
            destination_fqdn: s(&["*.cilium.io", "Example.COM."]),
            ..ff()
        };
        let flow = |names: &[&str]| Flow {
            destination_names: s(names),
            ..Default::default()
        };
        check(
            f,
            &[
                (flow(&["docs.cilium.io"]), true),
                (flow(&["a.b.cilium.io"]), true),
                (flow(&["cilium.io"]), false),
                (flow(&["other", "example.com"]), true),
                (flow(&["www.example.com"]), false),
                (flow(&["Docs.cilium.io"]), false),
                (flow(&[]), false),
            ],
        );
        check(
            FlowFilter {
                source_fqdn: s(&["api_v1.example.com"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        source_names: s(&["api_v1.example.com"]),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination_names: s(&["api_v1.example.com"]),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        for (bad, reason) in [
            ("", "empty pattern"),
            ("a..", "multiple trailing dots in pattern"),
            ("a b", "' ': invalid rune in pattern"),
            ("a/b", "'/': invalid rune in pattern"),
        ] {
            assert_eq!(
                build_err(FlowFilter {
                    source_fqdn: s(&[bad]),
                    ..ff()
                }),
                FilterError::InvalidPattern {
                    field: "source_fqdn",
                    value: bad.into(),
                    reason: reason.into()
                },
                "{bad:?}"
            );
        }
    }

    #[test]
    fn label_selectors() {
        let flow = |labels: &[&str]| Flow {
            source: labeled(labels),
            ..Default::default()
        };
        // Without value.
        check(
            FlowFilter {
                source_label: s(&["label1", "label2"]),
                ..ff()
            },
            &[
                (flow(&["label1"]), true),
                (flow(&["label1=val1"]), true),
                (flow(&["label2", "label3", "label4=val4"]), true),
                (flow(&["label3"]), false),
            ],
        );
        // With value.
        check(
            FlowFilter {
                source_label: s(&["label1=val1", "label2==val2"]),
                ..ff()
            },
            &[
                (flow(&["label1"]), false),
                (flow(&["label1=val1"]), true),
                (flow(&["label1=val2", "label2=val1", "label3"]), false),
                (flow(&["label2=val2", "label3"]), true),
                (flow(&["label3=val1"]), false),
                (flow(&[""]), false),
                (flow(&[]), false),
                (flow(&["label1=val1=toomuch"]), false),
            ],
        );
        // in / notin, "()" is the set {""}.
        check(
            FlowFilter {
                source_label: s(&["label1 in (val1, val2), label3 notin ()"]),
                ..ff()
            },
            &[
                (flow(&["label1"]), false),
                (flow(&["label1=val1"]), true),
                (flow(&["label1=val2", "label2=val1", "label3=val3"]), true),
                (flow(&["label2=val2", "label3"]), false),
                (flow(&["label1=val1", "label3=val3"]), true),
                (flow(&["label1=val1", "label3"]), false),
            ],
        );
        // Source and destination must both match.
        let both = FlowFilter {
            source_label: s(&["src1, src2=val2"]),
            destination_label: s(&["dst1, dst2=val2"]),
            ..ff()
        };
        check(
            both,
            &[
                (
                    Flow {
                        source: labeled(&["src1", "src2=val2"]),
                        destination: labeled(&["dst1", "dst2=val2"]),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        source: labeled(&["dst1", "dst2=val2"]),
                        destination: labeled(&["src1", "src2=val2"]),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        destination: labeled(&["dst1", "dst2=val2"]),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        // "" matches everything, even flows without endpoint.
        check(
            FlowFilter {
                source_label: s(&[""]),
                ..ff()
            },
            &[
                (flow(&["a"]), true),
                (flow(&[]), true),
                (Flow::default(), true),
            ],
        );
        // Cilium sources: explicit source must match; keys without source get `any:`.
        check(
            FlowFilter {
                source_label: s(&["k8s:app=bar", "foo", "reserved:host"]),
                ..ff()
            },
            &[
                (flow(&["k8s:app=bar"]), true),
                (flow(&["k8s:foo=baz"]), true),
                (flow(&["k8s.app=bar"]), false),
                (flow(&["container:app=bar"]), false),
                (flow(&["container:foo=bar", "reserved:host"]), true),
            ],
        );
        check(
            FlowFilter {
                source_label: s(&["any:key"]),
                ..ff()
            },
            &[
                (flow(&["key"]), true),
                (flow(&["reserved:key"]), true),
                (flow(&["any.key"]), false),
            ],
        );
        // Dotted keys and !key, != and exists.
        check(
            FlowFilter {
                destination_label: s(&[
                    "k8s:io.kubernetes.pod.namespace=kube-system, !k8s:app, tier!=db",
                ]),
                ..ff()
            },
            &[
                (
                    Flow {
                        destination: labeled(&["k8s:io.kubernetes.pod.namespace=kube-system"]),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination: labeled(&[
                            "k8s:app=x",
                            "k8s:io.kubernetes.pod.namespace=kube-system",
                        ]),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        destination: labeled(&[
                            "container:app=x",
                            "k8s:io.kubernetes.pod.namespace=kube-system",
                            "k8s:tier=db",
                        ]),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        destination: labeled(&[
                            "container:app=x",
                            "k8s:io.kubernetes.pod.namespace=kube-system",
                            "k8s:tier=web",
                        ]),
                        ..Default::default()
                    },
                    true,
                ),
            ],
        );
        // Prefixed keys, gt/lt, `$` reserved shorthand, reserved.<key> form.
        check(
            FlowFilter {
                source_label: s(&["k8s:app.kubernetes.io/name=web,k8s:replicas>2,k8s:replicas<10"]),
                ..ff()
            },
            &[
                (
                    flow(&["k8s:app.kubernetes.io/name=web", "k8s:replicas=3"]),
                    true,
                ),
                (
                    flow(&["k8s:app.kubernetes.io/name=web", "k8s:replicas=2"]),
                    false,
                ),
                (
                    flow(&["k8s:app.kubernetes.io/name=web", "k8s:replicas=x"]),
                    false,
                ),
            ],
        );
        check(
            FlowFilter {
                source_label: s(&["reserved:world"]),
                ..ff()
            },
            &[
                (flow(&["$world"]), true),
                (flow(&["reserved.world"]), true),
                (flow(&["world"]), false),
            ],
        );
        // CIDR labels match broader selector prefixes.
        check(
            FlowFilter {
                destination_label: s(&["cidr:10.0.0.0/8"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        destination: labeled(&["cidr:10.1.2.3/32"]),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination: labeled(&["cidr:10.0.0.0/8"]),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination: labeled(&["cidr:0.0.0.0/0"]),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        destination: labeled(&["cidr:11.0.0.0/8"]),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        // Node labels.
        check(
            FlowFilter {
                node_labels: s(&["io.cilium/egress-gateway", "zone in (a,b)"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        node_labels: s(&["io.cilium/egress-gateway=true"]),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        node_labels: s(&["zone=b"]),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        node_labels: s(&["zone=c"]),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        for bad in [
            "()",
            "=",
            "any:k8s:bla",
            "a=b=c",
            "a,",
            "a in b",
            "a>x",
            "a=%",
            " ",
        ] {
            let err = build_err(FlowFilter {
                destination_label: s(&[bad]),
                ..ff()
            });
            assert!(
                matches!(
                    err,
                    FilterError::InvalidLabelSelector {
                        field: "destination_label",
                        ..
                    }
                ),
                "{bad:?}: {err}"
            );
        }
        assert!(matches!(
            build_err(FlowFilter {
                node_labels: s(&["!"]),
                ..ff()
            }),
            FilterError::InvalidLabelSelector {
                field: "node_labels",
                ..
            }
        ));
    }

    #[test]
    fn translate_selector_like_hubble() {
        for (input, want) in [
            ("foo", "any.foo"),
            ("foo, bar", "any.foo, any.bar"),
            ("k8s:foo, !bar", "k8s.foo, !any.bar"),
            ("foo, bar!= buzz", "any.foo, any.bar!= buzz"),
            ("foo notin   (a,b,c)", "any.foo notin   (a,b,c)"),
            (
                "x in (foo,,baz),y,z notin ()",
                "any.x in (foo,,baz),any.y,any.z notin ()",
            ),
            (
                "a=b, foo:bar, !k8s:b, foo in  (a, ,   c, d), !any:buzz, c!= d.e, \
                 foo:bar.example.com=any.value, !any.other, k8s.example.com in (foo.bar, bar.buzz,  a)",
                "any.a=b, foo.bar, !k8s.b, any.foo in  (a, ,   c, d), !any.buzz, any.c!= d.e, \
                 foo.bar.example.com=any.value, !any.any.other, any.k8s.example.com in (foo.bar, bar.buzz,  a)",
            ),
        ] {
            assert_eq!(translate_selector(input), want);
        }
    }

    #[test]
    fn workload() {
        let wl = |kind: &str, name: &str| Workload {
            kind: kind.into(),
            name: name.into(),
        };
        let flow = |w: Workload| Flow {
            destination: Some(Endpoint {
                workloads: vec![w],
                ..Default::default()
            }),
            ..Default::default()
        };
        check(
            FlowFilter {
                destination_workload: vec![wl("Deployment", "api"), wl("", "db"), wl("Job", "")],
                ..ff()
            },
            &[
                (flow(wl("Deployment", "api")), true),
                (flow(wl("StatefulSet", "api")), false),
                (flow(wl("StatefulSet", "db")), true),
                (flow(wl("Job", "anything")), true),
                (Flow::default(), false),
            ],
        );
        check(
            FlowFilter {
                source_workload: vec![wl("", "db")],
                ..ff()
            },
            &[(flow(wl("", "db")), false)],
        );
    }

    #[test]
    fn cluster_name() {
        let flow = |c: &str| Flow {
            source: Some(Endpoint {
                cluster_name: c.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        check(
            FlowFilter {
                source_cluster_name: s(&["c1", "c2"]),
                ..ff()
            },
            &[
                (flow("c1"), true),
                (flow("c3"), false),
                (Flow::default(), false),
            ],
        );
        assert_eq!(
            build_err(FlowFilter {
                destination_cluster_name: s(&["a", ""]),
                ..ff()
            }),
            FilterError::EmptyClusterName {
                field: "destination_cluster_name"
            }
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
    fn protocol() {
        let l4 = |p: layer4::Protocol| Flow {
            l4: Some(Layer4 { protocol: Some(p) }),
            ..Default::default()
        };
        let icmp4 = l4(layer4::Protocol::IcmPv4(Default::default()));
        let icmp6 = l4(layer4::Protocol::IcmPv6(Default::default()));
        let udp = l4(layer4::Protocol::Udp(Udp::default()));
        let vrrp = l4(layer4::Protocol::Vrrp(Default::default()));
        let dns = Flow {
            l7: Some(Layer7 {
                record: Some(layer7::Record::Dns(Dns::default())),
                ..Default::default()
            }),
            ..udp.clone()
        };
        check(
            FlowFilter {
                protocol: s(&["ICMP", "vrrp"]),
                ..ff()
            },
            &[
                (icmp4.clone(), true),
                (icmp6.clone(), true),
                (vrrp, true),
                (udp.clone(), false),
            ],
        );
        check(
            FlowFilter {
                protocol: s(&["icmpv6"]),
                ..ff()
            },
            &[(icmp4, false), (icmp6, true)],
        );
        check(
            FlowFilter {
                protocol: s(&["dns"]),
                ..ff()
            },
            &[(dns.clone(), true), (udp.clone(), false)],
        );
        check(
            FlowFilter {
                protocol: s(&["udp"]),
                ..ff()
            },
            &[(dns, true), (udp, true)],
        );
        check(
            FlowFilter {
                protocol: s(&["http"]),
                ..ff()
            },
            &[(http_flow("GET", "/", 200), true), (Flow::default(), false)],
        );
        assert_eq!(
            build_err(FlowFilter {
                protocol: s(&["tcp", "quic"]),
                ..ff()
            })
            .to_string(),
            "invalid protocol filter: unknown protocol: \"quic\""
        );
    }

    #[test]
    fn ports_only_for_tcp_udp_sctp() {
        let f = FlowFilter {
            source_port: s(&["53", "080"]),
            ..ff()
        };
        let udp = |src: u32| Flow {
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::Udp(Udp {
                    source_port: src,
                    destination_port: 1,
                })),
            }),
            ..Default::default()
        };
        let icmp = Flow {
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::IcmPv4(Default::default())),
            }),
            ..Default::default()
        };
        check(
            f,
            &[
                (udp(53), true),
                (udp(80), true),
                (udp(54), false),
                (
                    Flow {
                        l4: tcp(53, 1, None),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        l4: Some(Layer4 {
                            protocol: Some(layer4::Protocol::Sctp(crate::flow::Sctp {
                                source_port: 53,
                                destination_port: 0,
                            })),
                        }),
                        ..Default::default()
                    },
                    true,
                ),
                (icmp, false),
                (Flow::default(), false),
            ],
        );
        check(
            FlowFilter {
                destination_port: s(&["0"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        l4: tcp(1, 0, None),
                        ..Default::default()
                    },
                    true,
                ),
                (Flow::default(), false),
            ],
        );
        for bad in ["", "+80", "65536", "http", "-1"] {
            assert!(
                matches!(
                    build_err(FlowFilter {
                        destination_port: s(&[bad]),
                        ..ff()
                    }),
                    FilterError::InvalidPort {
                        field: "destination_port",
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
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
    fn dns_query_regex() {
        let dns = |q: &str| Flow {
            l7: Some(Layer7 {
                record: Some(layer7::Record::Dns(Dns {
                    query: q.into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        check(
            FlowFilter {
                dns_query: s(&[r"^api\.", r"\.svc\.cluster\.local\.$"]),
                ..ff()
            },
            &[
                (dns("api.example.com."), true),
                (dns("kube-dns.kube-system.svc.cluster.local."), true),
                (dns("www.example.com."), false),
                (http_flow("GET", "/", 200), false),
            ],
        );
        assert!(matches!(
            build_err(FlowFilter {
                dns_query: s(&["("]),
                ..ff()
            }),
            FilterError::InvalidRegex {
                field: "dns_query",
                ..
            }
        ));
    }

    #[test]
    fn http_filters() {
        check(
            FlowFilter {
                http_status_code: s(&["404", "5+", "20+"]),
                ..ff()
            },
            &[
                (http_flow("GET", "/", 404), true),
                (http_flow("GET", "/", 403), false),
                (http_flow("GET", "/", 503), true),
                (http_flow("GET", "/", 201), true),
                (http_flow("GET", "/", 210), false),
                (http_flow("GET", "/", 0), false),
                (Flow::default(), false),
            ],
        );
        // Codes are zero-padded to three digits before prefix matching, like Hubble.
        check(
            FlowFilter {
                http_status_code: s(&["1+"]),
                ..ff()
            },
            &[
                (http_flow("GET", "/", 1000), true),
                (http_flow("GET", "/", 10), false),
            ],
        );
        for bad in ["40", "600", "4++", "+", "404 "] {
            assert_eq!(
                build_err(FlowFilter {
                    http_status_code: s(&[bad]),
                    ..ff()
                }),
                FilterError::InvalidHttpStatus { value: bad.into() }
            );
        }
        check(
            FlowFilter {
                http_method: s(&["get", "Post"]),
                ..ff()
            },
            &[
                (http_flow("GET", "/", 200), true),
                (http_flow("POST", "/", 200), true),
                (http_flow("PUT", "/", 200), false),
                (http_flow("", "/", 200), false),
            ],
        );
        check(
            FlowFilter {
                http_path: s(&[r"^/api/v\d+/"]),
                ..ff()
            },
            &[
                (
                    http_flow("GET", "http://svc.ns:8080/api/v1/users?x=1", 200),
                    true,
                ),
                (http_flow("GET", "/api/v2/x", 200), true),
                (http_flow("GET", "http://svc/%61pi/v1/x", 200), true),
                (http_flow("GET", "http://svc/other/api/v1/", 200), false),
                (http_flow("GET", "api/v1/", 200), false),
                (http_flow("GET", "http://svc/api/v1/%zz", 200), false),
                (http_flow("GET", "http://sv c/api/v1/", 200), false),
                (http_flow("GET", "", 200), false),
            ],
        );
        // Go's \d is ASCII only.
        check(
            FlowFilter {
                http_path: s(&[r"^/\d$"]),
                ..ff()
            },
            &[
                (http_flow("GET", "/5", 200), true),
                (http_flow("GET", "/%D9%A5", 200), false),
            ],
        );
        check(
            FlowFilter {
                http_url: s(&[r"http://.*cilium\.io/page/\d+"]),
                ..ff()
            },
            &[
                (http_flow("GET", "http://docs.cilium.io/page/12", 200), true),
                (http_flow("GET", "http://docs.cilium.io/page/x", 200), false),
            ],
        );
        check(
            FlowFilter {
                http_header: vec![HttpHeader {
                    key: "x-a".into(),
                    value: "1".into(),
                }],
                ..ff()
            },
            &[(http_flow("GET", "/", 200), true), (Flow::default(), false)],
        );
        check(
            FlowFilter {
                http_header: vec![HttpHeader {
                    key: "x-a".into(),
                    value: "2".into(),
                }],
                ..ff()
            },
            &[(http_flow("GET", "/", 200), false)],
        );
        // HTTP filters are valid with an l7 event type, rejected with only other types.
        let l7 = EventTypeFilter {
            r#type: 129,
            ..Default::default()
        };
        let trace = EventTypeFilter {
            r#type: 4,
            ..Default::default()
        };
        assert!(
            FlowFilters::new(
                &[FlowFilter {
                    http_method: s(&["get"]),
                    event_type: vec![trace, l7],
                    ..ff()
                }],
                &[]
            )
            .is_ok()
        );
        for (f, what) in [
            (
                FlowFilter {
                    http_status_code: s(&["200"]),
                    ..ff()
                },
                "status code",
            ),
            (
                FlowFilter {
                    http_method: s(&["get"]),
                    ..ff()
                },
                "method",
            ),
            (
                FlowFilter {
                    http_path: s(&["/"]),
                    ..ff()
                },
                "path",
            ),
            (
                FlowFilter {
                    http_url: s(&["x"]),
                    ..ff()
                },
                "url",
            ),
            (
                FlowFilter {
                    http_header: vec![HttpHeader::default()],
                    ..ff()
                },
                "headers",
            ),
        ] {
            let err = build_err(FlowFilter {
                event_type: vec![trace],
                ..f
            });
            assert_eq!(err, FilterError::HttpRequiresL7 { what });
        }
        assert_eq!(
            FilterError::HttpRequiresL7 { what: "method" }.to_string(),
            "filtering by http method requires the event type filter to only match 'l7' events"
        );
        assert!(matches!(
            build_err(FlowFilter {
                http_url: s(&["a(b"]),
                ..ff()
            }),
            FilterError::InvalidRegex {
                field: "http_url",
                ..
            }
        ));
    }

    #[test]
    fn tcp_flags_subset() {
        let syn = TcpFlags {
            syn: true,
            ..Default::default()
        };
        let syn_ack = TcpFlags {
            syn: true,
            ack: true,
            ..Default::default()
        };
        let fin = TcpFlags {
            fin: true,
            ..Default::default()
        };
        let flow = |f: Option<TcpFlags>| Flow {
            l4: tcp(1, 2, f),
            ..Default::default()
        };
        check(
            FlowFilter {
                tcp_flags: vec![syn_ack, fin],
                ..ff()
            },
            &[
                (flow(Some(syn_ack)), true),
                (
                    flow(Some(TcpFlags {
                        psh: true,
                        ..syn_ack
                    })),
                    true,
                ),
                (flow(Some(syn)), false),
                (
                    flow(Some(TcpFlags {
                        fin: true,
                        ack: true,
                        ..Default::default()
                    })),
                    true,
                ),
                (flow(None), false),
                (Flow::default(), false),
            ],
        );
    }

    #[test]
    fn node_name_glob() {
        let flow = |n: &str| Flow {
            node_name: n.into(),
            ..Default::default()
        };
        check(
            FlowFilter {
                node_name: s(&["k8s*", "test-cluster/*.company.com"]),
                ..ff()
            },
            &[
                (flow("k8s1"), true),
                (flow("default/k8s2"), true),
                (flow("other/k8s1"), true),
                (flow("test-cluster/node01.company.com"), true),
                (flow("node01.company.com"), false),
                // `*` is `[-.0-9a-z]*`: it spans dots.
                (flow("k8s1.example"), true),
                (flow("xk8s1"), false),
                (flow("K8S1"), false),
                (flow(""), false),
            ],
        );
        check(
            FlowFilter {
                node_name: s(&["default/"]),
                ..ff()
            },
            &[
                (flow("anything.example"), true),
                (flow("c2/anything"), false),
            ],
        );
        check(
            FlowFilter {
                node_name: s(&["/node-1"]),
                ..ff()
            },
            &[
                (flow("node-1"), true),
                (flow("c2/node-1"), true),
                (flow("c2/node-2"), false),
            ],
        );
        for (bad, reason) in [
            ("", "empty pattern"),
            ("a/b/c", "too many slashes in pattern"),
        ] {
            assert_eq!(
                build_err(FlowFilter {
                    node_name: s(&[bad]),
                    ..ff()
                }),
                FilterError::InvalidPattern {
                    field: "node_name",
                    value: bad.into(),
                    reason: reason.into()
                }
            );
        }
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

    #[test]
    fn go_regex_translation() {
        for (go, want) in [
            (r"\d+", "[0-9]+"),
            (r"[\d.]", "[0-9.]"),
            (r"[^\D]", "[^[^0-9]]"),
            (r"\bword\b", r"(?-u:\b)word(?-u:\b)"),
            (r"\Qa.b\E+", r"a\.b+"),
            (r"a{", r"a\{"),
            (r"a{2,3}", "a{2,3}"),
            (r"[]a]", r"[\]a]"),
            (r"[^]a]", r"[^\]a]"),
            (r"[^^]x", r"[^^]x"),
            (r"[[:]", r"[\[:]"),
            (r"[[:digit:]x]", r"[[:digit:]x]"),
            (r"[[:alpha:]&]", r"[[:alpha:]\&]"),
            (r"\p{Greek}", r"\p{Greek}"),
            (r"\x{41}{2}", r"\x{41}{2}"),
        ] {
            assert_eq!(translate_go_regex(go), want, "{go}");
        }
        assert!(compile_go_regex(r"^\w+$").unwrap().is_match("a_1"));
        assert!(!compile_go_regex(r"^\w+$").unwrap().is_match("é"));
        assert!(!compile_go_regex(r"^\s$").unwrap().is_match("\u{a0}"));
    }

    #[test]
    fn request_uri_paths() {
        for (url, want) in [
            ("/a/b?c", Some("/a/b")),
            ("http://h:80/a%20b", Some("/a b")),
            ("http://h", Some("")),
            ("HTTP://user:pw@h/x", Some("/x")),
            ("http://[::1]:8080/x", Some("/x")),
            ("mailto:x", Some("")),
            ("*", Some("*")),
            ("//h/x", Some("//h/x")),
            ("a/b", None),
            (":x", None),
            ("http://h:x/", None),
            ("http://[::1/x", None),
            ("/a\n", None),
            ("/%4", None),
        ] {
            assert_eq!(request_uri_path(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn status_format() {
        let mut buf = [0u8; 10];
        assert_eq!(format_status(7, &mut buf), "007");
        assert_eq!(format_status(404, &mut buf), "404");
        assert_eq!(format_status(u32::MAX, &mut buf), "4294967295");
    }
}
