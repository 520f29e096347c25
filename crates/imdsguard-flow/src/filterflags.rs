//! How `hubble observe` filter flags become `FlowFilter`s (docs/hubble.md#filters, Hubble's
//! `flows_filter.go`), as a pure builder: feed the filter flags in command-line order with
//! [`FilterBuilder::add`], then [`FilterBuilder::build`] returns `(whitelist, blacklist)`.
//!
//! Flags are given by their **long name without dashes** (`"from-ip"`, `"namespace"`, `"not"`).
//! Short forms must be mapped by the caller (see [`long_flag_for_short`]): `-n` namespace,
//! `-A` all-namespaces, `-l` label, `-t` type, `-4` ipv4, `-6` ipv6. Flags that take no value
//! on the command line (`not`, `ipv4`, `ipv6`, `all-namespaces`, `from-all-namespaces`,
//! `to-all-namespaces`, `encrypted`, `unencrypted`; see [`flag_takes_value`]) ignore `value`.
//!
//! Rules (Hubble's):
//! * Two trackers, whitelist and blacklist; `--not` sends the next filter flag (only that one)
//!   to the blacklist. Each tracker holds a `left` and a `right` filter and yields
//!   `[left, right]`, or `[left]` when both are equal.
//! * `from-X`/`to-X`/non-directional flags go to both filters; the "either" flags (`ip`, `pod`,
//!   `fqdn`, `label`, `service`, `port`, `workload`, `identity`, `cluster`) put `source_*` into
//!   `left` and `destination_*` into `right`. Repeating a flag appends (OR).
//! * Namespace flags are applied when building: `to-namespace N` rewrites `destination_pod`/
//!   `destination_service` entries without `/` to `N/entry` (an empty pod list becomes
//!   `["N/"]`) on both filters, `from-namespace` the same on the source side, `namespace`
//!   source side of `left` and destination side of `right`; `all-namespaces` is namespace "".
//! * Flags of one conflict group cannot be combined in one tracker, and namespaces must agree
//!   with the namespaces written in pod/service values.
//!
//! imdsguard adds `--container` and `--process` ([`FilterFlag::client_side`]), with the same
//! tracker rules (`--not`, repetition, AND with the other flags of a list). No `FlowFilter` field
//! holds them, so [`FilterBuilder::build_with_client`] returns them apart, as a
//! [`ClientFilter`]; [`FilterBuilder::build`] refuses them.

use crate::filter::{ClientFilter, FilterError, ProcessFilter};
use crate::flow::flow_filter::Experimental;
use crate::flow::{
    DropReason, EventTypeFilter, FlowFilter, HttpHeader, IpVersion, NetworkInterface, TcpFlags,
    TrafficDirection, Verdict, Workload,
};
use crate::names;

/// One `hubble observe` filter flag, as a command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterFlag {
    /// The long name without dashes: `"to-ip"`.
    pub long: &'static str,
    pub short: Option<char>,
    /// Whether it takes a value; otherwise it is a switch.
    pub takes_value: bool,
    /// Whether `imdsguard observe` offers it. All do but `cel-expression`: CEL filters are
    /// rejected when compiled ([`FilterError::CelNotSupported`]), so the flag could only fail.
    pub observe: bool,
    /// imdsguard's own flag, applied by the client after the server's filters (`container`,
    /// `process`); the hubble CLI does not have it.
    pub client_side: bool,
    /// The help text of an imdsguard flag; Hubble's flags have none here.
    pub help: &'static str,
}

/// A filter flag that takes a value, with no short form.
const fn value(long: &'static str) -> FilterFlag {
    FilterFlag {
        long,
        short: None,
        takes_value: true,
        observe: true,
        client_side: false,
        help: "",
    }
}

/// A filter flag without a value, with no short form.
const fn switch(long: &'static str) -> FilterFlag {
    FilterFlag {
        takes_value: false,
        ..value(long)
    }
}

impl FilterFlag {
    const fn with_short(self, short: char) -> FilterFlag {
        FilterFlag {
            short: Some(short),
            ..self
        }
    }

    const fn not_in_observe(self) -> FilterFlag {
        FilterFlag {
            observe: false,
            ..self
        }
    }

    const fn on_client(self, help: &'static str) -> FilterFlag {
        FilterFlag {
            client_side: true,
            help,
            ..self
        }
    }
}

/// Every filter flag, in Hubble's order (which `--help` keeps), then imdsguard's own.
/// `imdsguard observe` builds its command line from this table and [`FilterBuilder::add`] takes
/// exactly these names.
pub const FILTER_FLAGS: &[FilterFlag] = &[
    switch("not"),
    value("uuid"),
    value("node-name"),
    value("node-label"),
    value("from-cluster"),
    value("cluster"),
    value("to-cluster"),
    value("protocol"),
    value("tcp-flags"),
    value("type").with_short('t'),
    value("verdict"),
    value("drop-reason-desc"),
    value("http-status"),
    value("http-method"),
    value("http-path"),
    value("http-url"),
    value("http-header"),
    value("trace-id"),
    value("ip-trace-id"),
    value("from-fqdn"),
    value("fqdn"),
    value("to-fqdn"),
    value("from-ip"),
    value("snat-ip"),
    value("ip"),
    value("to-ip"),
    switch("ipv4").with_short('4'),
    switch("ipv6").with_short('6'),
    value("ip-version"),
    value("from-pod"),
    value("pod"),
    value("to-pod"),
    value("from-namespace"),
    value("namespace").with_short('n'),
    value("to-namespace"),
    switch("from-all-namespaces"),
    switch("all-namespaces").with_short('A'),
    switch("to-all-namespaces"),
    value("from-label"),
    value("label").with_short('l'),
    value("to-label"),
    value("from-service"),
    value("service"),
    value("to-service"),
    value("from-port"),
    value("port"),
    value("to-port"),
    value("from-workload"),
    value("workload"),
    value("to-workload"),
    value("from-identity"),
    value("identity"),
    value("to-identity"),
    value("traffic-direction"),
    value("cel-expression").not_in_observe(),
    value("interface"),
    switch("encrypted"),
    switch("unencrypted"),
    value("container").on_client(
        "Show only flows of this container (its name in the pod), matched by the client",
    ),
    value("process").on_client(
        "Show only flows of this process (its name, the kernel's comm), matched by the client",
    ),
];

/// Hubble's conflict groups (`newFlowFilter()`), checked in this order.
const CONFLICTS: &[&[&str]] = &[
    &[
        "from-fqdn",
        "from-ip",
        "ip",
        "fqdn",
        "from-namespace",
        "namespace",
        "from-all-namespaces",
        "all-namespaces",
    ],
    &["from-fqdn", "from-ip", "ip", "fqdn", "from-pod", "pod"],
    &[
        "to-fqdn",
        "to-ip",
        "ip",
        "fqdn",
        "to-namespace",
        "namespace",
        "to-all-namespaces",
        "all-namespaces",
    ],
    &["to-fqdn", "to-ip", "ip", "fqdn", "to-pod", "pod"],
    &["to-pod", "namespace", "all-namespaces"],
    &["from-pod", "namespace", "all-namespaces"],
    &["to-service", "namespace", "all-namespaces"],
    &["from-service", "namespace", "all-namespaces"],
    &["label", "from-label"],
    &["label", "to-label"],
    &["service", "from-service"],
    &["service", "to-service"],
    &["port", "to-port"],
    &["port", "from-port"],
    &["identity", "to-identity"],
    &["identity", "from-identity"],
    &["workload", "to-workload"],
    &["workload", "from-workload"],
    &["encrypted", "unencrypted"],
];

/// Agent event sub-type names for `--type agent:NAME` (`agentEventSubtypes`).
const AGENT_SUBTYPES: &[(&str, i32)] = &[
    ("unspecified", 0),
    ("message", 1),
    ("agent-started", 2),
    ("endpoint-regenerate-success", 3),
    ("endpoint-regenerate-failure", 4),
    ("policy-updated", 5),
    ("policy-deleted", 6),
    ("endpoint-created", 7),
    ("endpoint-deleted", 8),
    ("ipcache-upserted", 9),
    ("ipcache-deleted", 10),
];

/// The long names of all filter flags.
pub fn filter_flags() -> impl Iterator<Item = &'static str> {
    FILTER_FLAGS.iter().map(|f| f.long)
}

/// `Some(true)` if the filter flag takes a value, `Some(false)` if it is a switch (an explicit
/// `--flag=value` is still accepted and ignored), `None` if it is no filter flag.
pub fn flag_takes_value(flag: &str) -> Option<bool> {
    FILTER_FLAGS
        .iter()
        .find(|f| f.long == flag)
        .map(|f| f.takes_value)
}

/// The long name of a short filter flag: `n`, `A`, `l`, `t`, `4`, `6`.
pub fn long_flag_for_short(short: char) -> Option<&'static str> {
    FILTER_FLAGS
        .iter()
        .find(|f| f.short == Some(short))
        .map(|f| f.long)
}

/// Builds the whitelist and blacklist of a `GetFlowsRequest` from `hubble observe` filter
/// flags, given in command-line order.
#[derive(Debug, Clone, Default)]
pub struct FilterBuilder {
    whitelist: Option<Tracker>,
    blacklist: Option<Tracker>,
    /// The next filter goes to the blacklist (`--not` was seen).
    blacklisting: bool,
}

impl FilterBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one filter flag: `flag` is the long name without dashes (`"to-ip"`), `value`
    /// its argument (ignored by switches such as `"not"`, `"ipv4"`, `"all-namespaces"`).
    pub fn add(&mut self, flag: &str, value: &str) -> Result<(), FilterError> {
        let Some(flag) = FILTER_FLAGS.iter().find(|f| f.long == flag).map(|f| f.long) else {
            return Err(FilterError::UnknownFlag {
                flag: flag.to_owned(),
            });
        };
        if flag == "not" {
            if self.blacklisting {
                return Err(FilterError::ConsecutiveNot);
            }
            self.blacklisting = true;
            return Ok(());
        }
        let tracker = if std::mem::take(&mut self.blacklisting) {
            self.blacklist.get_or_insert_with(Tracker::default)
        } else {
            self.whitelist.get_or_insert_with(Tracker::default)
        };
        tracker.set(flag, value)
    }

    /// `(whitelist, blacklist)`. Fails on a trailing `--not`, and on client-side flags, which
    /// a caller of this cannot apply (see [`FilterBuilder::build_with_client`]).
    pub fn build(self) -> Result<(Vec<FlowFilter>, Vec<FlowFilter>), FilterError> {
        for t in [&self.whitelist, &self.blacklist].into_iter().flatten() {
            if let Some(flag) = t.changed.iter().find(|f| is_client_side(f)) {
                return Err(FilterError::ClientSideFlag { flag });
            }
        }
        let built = self.build_with_client()?;
        Ok((built.whitelist, built.blacklist))
    }

    /// The lists for a server and what the client must apply to the flows it sends. Fails on a
    /// trailing `--not`, and on filters that do not compile where the client needs them.
    pub fn build_with_client(self) -> Result<BuiltFilters, FilterError> {
        if self.blacklisting {
            return Err(FilterError::TrailingNot);
        }
        let (white, whitelist) = self.whitelist.map(Tracker::split).unwrap_or_default();
        let (black, blacklist) = self.blacklist.map(Tracker::split).unwrap_or_default();
        let client = ClientFilter::new(white, black, &blacklist)?;
        let blacklist = if client.server_applies_blacklist() {
            blacklist
        } else {
            Vec::new()
        };
        Ok(BuiltFilters {
            whitelist,
            blacklist,
            client,
        })
    }
}

/// Filter flags built: what a `GetFlowsRequest` carries, and what only the client can apply.
/// A flow passes when the lists let it through (on the server, or with
/// [`crate::filter::FlowFilters`] for a file) and then `client` keeps it.
#[derive(Debug, Clone, Default)]
pub struct BuiltFilters {
    pub whitelist: Vec<FlowFilter>,
    /// Empty when the blacklist has process criteria: then `client` holds all of it.
    pub blacklist: Vec<FlowFilter>,
    pub client: ClientFilter,
}

fn is_client_side(flag: &str) -> bool {
    FILTER_FLAGS.iter().any(|f| f.long == flag && f.client_side)
}

/// One list (whitelist or blacklist): `left OR right`, plus deferred namespaces.
#[derive(Debug, Clone, Default)]
struct Tracker {
    left: Option<FlowFilter>,
    right: Option<FlowFilter>,
    ns: Vec<String>,
    src_ns: Vec<String>,
    dst_ns: Vec<String>,
    /// `--container` and `--process`, which no `FlowFilter` holds.
    process: ProcessFilter,
    /// Flags used so far (for conflicts, and to wipe defaults on first use).
    changed: Vec<&'static str>,
}

type Field = fn(&mut FlowFilter) -> &mut Vec<String>;

fn invalid(flag: &'static str, value: &str, message: String) -> FilterError {
    FilterError::InvalidFlagValue {
        flag,
        value: value.to_owned(),
        message,
    }
}

/// Go's `strconv.ParseUint(s, 10, bits)` with its error text.
fn parse_uint(s: &str, bits: u32) -> Result<u64, String> {
    let max = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseUint: parsing {s:?}: invalid syntax"));
    }
    match s.parse::<u64>() {
        Ok(v) if v <= max => Ok(v),
        _ => Err(format!(
            "strconv.ParseUint: parsing {s:?}: value out of range"
        )),
    }
}

impl Tracker {
    fn apply(&mut self, update: impl Fn(&mut FlowFilter)) {
        update(self.left.get_or_insert_with(FlowFilter::default));
        update(self.right.get_or_insert_with(FlowFilter::default));
    }

    /// A non-directional or `from-`/`to-` flag: the value goes to both filters.
    fn both(&mut self, field: Field, value: &str) {
        self.apply(|f| field(f).push(value.to_owned()));
    }

    /// An "either" flag: source field in `left`, destination field in `right`.
    fn either(&mut self, src: Field, dst: Field, value: &str) {
        src(self.left.get_or_insert_with(FlowFilter::default)).push(value.to_owned());
        dst(self.right.get_or_insert_with(FlowFilter::default)).push(value.to_owned());
    }

    fn either_with<T: Clone>(
        &mut self,
        src: fn(&mut FlowFilter) -> &mut Vec<T>,
        dst: fn(&mut FlowFilter) -> &mut Vec<T>,
        value: T,
    ) {
        src(self.left.get_or_insert_with(FlowFilter::default)).push(value.clone());
        dst(self.right.get_or_insert_with(FlowFilter::default)).push(value);
    }

    fn check_conflict(&self) -> Result<(), FilterError> {
        for group in CONFLICTS {
            for &flag in *group {
                if !self.changed.contains(&flag) {
                    continue;
                }
                if let Some(&other) = group
                    .iter()
                    .find(|other| **other != flag && self.changed.contains(other))
                {
                    return Err(FilterError::Conflict {
                        first: flag,
                        second: other,
                    });
                }
            }
        }
        Ok(())
    }

    fn set(&mut self, flag: &'static str, val: &str) -> Result<(), FilterError> {
        // The first use of a flag wipes its defaults (`--type`, `--verdict`).
        let wipe = !self.changed.contains(&flag);
        if wipe {
            self.changed.push(flag);
        }
        self.check_conflict()?;

        match flag {
            "uuid" => self.both(|f| &mut f.uuid, val),
            "fqdn" => self.either(|f| &mut f.source_fqdn, |f| &mut f.destination_fqdn, val),
            "from-fqdn" => self.both(|f| &mut f.source_fqdn, val),
            "to-fqdn" => self.both(|f| &mut f.destination_fqdn, val),
            "pod" => self.either(|f| &mut f.source_pod, |f| &mut f.destination_pod, val),
            "from-pod" => self.both(|f| &mut f.source_pod, val),
            "to-pod" => self.both(|f| &mut f.destination_pod, val),
            "from-ip" => self.both(|f| &mut f.source_ip, val),
            "snat-ip" => self.both(|f| &mut f.source_ip_xlated, val),
            "ip" => self.either(|f| &mut f.source_ip, |f| &mut f.destination_ip, val),
            "to-ip" => self.both(|f| &mut f.destination_ip, val),
            "ipv4" => self.apply(|f| f.ip_version.push(IpVersion::IPv4 as i32)),
            "ipv6" => self.apply(|f| f.ip_version.push(IpVersion::IPv6 as i32)),
            "ip-version" => {
                let v = match val.to_lowercase().as_str() {
                    "4" | "v4" | "ipv4" | "ip4" => IpVersion::IPv4,
                    "6" | "v6" | "ipv6" | "ip6" => IpVersion::IPv6,
                    _ => IpVersion::IpNotUsed,
                };
                self.apply(|f| f.ip_version.push(v as i32));
            }
            "label" => self.either(|f| &mut f.source_label, |f| &mut f.destination_label, val),
            "from-label" => self.both(|f| &mut f.source_label, val),
            "to-label" => self.both(|f| &mut f.destination_label, val),
            "namespace" => self.ns.push(val.to_owned()),
            "from-namespace" => self.src_ns.push(val.to_owned()),
            "to-namespace" => self.dst_ns.push(val.to_owned()),
            "all-namespaces" => self.ns.push(String::new()),
            "from-all-namespaces" => self.src_ns.push(String::new()),
            "to-all-namespaces" => self.dst_ns.push(String::new()),
            "service" => {
                self.either(
                    |f| &mut f.source_service,
                    |f| &mut f.destination_service,
                    val,
                );
            }
            "from-service" => self.both(|f| &mut f.source_service, val),
            "to-service" => self.both(|f| &mut f.destination_service, val),
            "port" => self.either(|f| &mut f.source_port, |f| &mut f.destination_port, val),
            "from-port" => self.both(|f| &mut f.source_port, val),
            "to-port" => self.both(|f| &mut f.destination_port, val),
            "trace-id" => self.both(|f| &mut f.trace_id, val),
            "ip-trace-id" => {
                if val == "0" {
                    return Err(invalid(
                        flag,
                        val,
                        "invalid --ip-trace-id value; must be greater than 0".into(),
                    ));
                }
                let id = parse_uint(val, 64)
                    .map_err(|e| invalid(flag, val, format!("invalid --ip-trace-id value: {e}")))?;
                self.apply(|f| f.ip_trace_id.push(id));
            }
            "verdict" => {
                if wipe {
                    self.apply(|f| f.verdict.clear());
                }
                let v = Verdict::from_str_name(val)
                    .ok_or_else(|| invalid(flag, val, format!("invalid --verdict value: {val}")))?;
                self.apply(|f| f.verdict.push(v as i32));
            }
            "drop-reason-desc" => {
                if val.is_empty() {
                    return Err(invalid(flag, val, "empty --drop-reason-desc value".into()));
                }
                let r = DropReason::from_str_name(val).ok_or_else(|| {
                    invalid(
                        flag,
                        val,
                        format!("invalid --drop-reason-desc value: {val}"),
                    )
                })?;
                self.apply(|f| f.drop_reason_desc.push(r as i32));
            }
            "http-status" => self.both(|f| &mut f.http_status_code, val),
            "http-method" => self.both(|f| &mut f.http_method, val),
            "http-path" => self.both(|f| &mut f.http_path, val),
            "http-url" => self.both(|f| &mut f.http_url, val),
            "http-header" => {
                let Some((key, value)) = val.split_once(':') else {
                    return Err(invalid(
                        flag,
                        val,
                        format!("invalid http-header value {val:?}, expected name:value"),
                    ));
                };
                let header = HttpHeader {
                    key: key.to_owned(),
                    value: value.to_owned(),
                };
                self.apply(|f| f.http_header.push(header.clone()));
            }
            "type" => {
                if wipe {
                    self.apply(|f| f.event_type.clear());
                }
                let t = parse_event_type(val)?;
                self.apply(|f| f.event_type.push(t));
            }
            "protocol" => self.both(|f| &mut f.protocol, val),
            "workload" => self.either_with(
                |f| &mut f.source_workload,
                |f| &mut f.destination_workload,
                parse_workload(val),
            ),
            "from-workload" => {
                let w = parse_workload(val);
                self.apply(|f| f.source_workload.push(w.clone()));
            }
            "to-workload" => {
                let w = parse_workload(val);
                self.apply(|f| f.destination_workload.push(w.clone()));
            }
            "identity" => self.either_with(
                |f| &mut f.source_identity,
                |f| &mut f.destination_identity,
                parse_identity(flag, val)?,
            ),
            "from-identity" => {
                let id = parse_identity(flag, val)?;
                self.apply(|f| f.source_identity.push(id));
            }
            "to-identity" => {
                let id = parse_identity(flag, val)?;
                self.apply(|f| f.destination_identity.push(id));
            }
            "node-name" => self.both(|f| &mut f.node_name, val),
            "node-label" => self.both(|f| &mut f.node_labels, val),
            "cluster" => self.either(
                |f| &mut f.source_cluster_name,
                |f| &mut f.destination_cluster_name,
                val,
            ),
            "from-cluster" => self.both(|f| &mut f.source_cluster_name, val),
            "to-cluster" => self.both(|f| &mut f.destination_cluster_name, val),
            "tcp-flags" => {
                let flags = parse_tcp_flags(val)?;
                self.apply(|f| f.tcp_flags.push(flags));
            }
            "traffic-direction" => {
                let td = val.to_lowercase();
                let d = match td.as_str() {
                    "ingress" => TrafficDirection::Ingress,
                    "egress" => TrafficDirection::Egress,
                    _ => {
                        return Err(invalid(
                            flag,
                            val,
                            format!("{td}: invalid traffic direction, expected ingress or egress"),
                        ));
                    }
                };
                self.apply(|f| f.traffic_direction.push(d as i32));
            }
            "cel-expression" => self.apply(|f| {
                f.experimental
                    .get_or_insert_with(Experimental::default)
                    .cel_expression
                    .push(val.to_owned());
            }),
            "interface" => self.apply(|f| {
                f.interface.push(NetworkInterface {
                    index: 0,
                    name: val.to_owned(),
                });
            }),
            "encrypted" => self.apply(|f| f.encrypted.push(true)),
            "unencrypted" => self.apply(|f| f.encrypted.push(false)),
            "container" | "process" => {
                if val.is_empty() {
                    return Err(invalid(flag, val, format!("empty --{flag} value")));
                }
                let list = if flag == "container" {
                    &mut self.process.container
                } else {
                    &mut self.process.process
                };
                list.push(val.to_owned());
            }
            _ => {
                return Err(FilterError::UnknownFlag {
                    flag: flag.to_owned(),
                });
            }
        }

        for ff in [&self.left, &self.right].into_iter().flatten() {
            self.check_namespace_conflicts(ff)?;
        }
        Ok(())
    }

    fn check_namespace_conflicts(&self, ff: &FlowFilter) -> Result<(), FilterError> {
        let errors: Vec<String> = [
            ns_conflict(&self.ns, &ff.source_pod),
            ns_conflict(&self.ns, &ff.source_service),
            ns_conflict(&self.ns, &ff.destination_pod),
            ns_conflict(&self.ns, &ff.destination_service),
            ns_conflict(&self.src_ns, &ff.source_pod),
            ns_conflict(&self.src_ns, &ff.source_service),
            ns_conflict(&self.dst_ns, &ff.destination_pod),
            ns_conflict(&self.dst_ns, &ff.destination_service),
            inconsistent_namespaces(&ff.source_pod, &ff.source_service),
            inconsistent_namespaces(&ff.destination_pod, &ff.destination_service),
        ]
        .into_iter()
        .flatten()
        .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(FilterError::NamespaceConflict {
                message: errors.join("\n"),
            })
        }
    }

    /// The process criteria and the `FlowFilter`s.
    fn split(mut self) -> (ProcessFilter, Vec<FlowFilter>) {
        let process = std::mem::take(&mut self.process);
        (process, self.flow_filters())
    }

    /// Materializes the namespaces and returns `[left, right]` or `[left]`.
    fn flow_filters(self) -> Vec<FlowFilter> {
        if self.left.is_none()
            && self.right.is_none()
            && self.ns.is_empty()
            && self.src_ns.is_empty()
            && self.dst_ns.is_empty()
        {
            return Vec::new();
        }
        let mut left = self.left.unwrap_or_default();
        let mut right = self.right.unwrap_or_default();
        if !self.dst_ns.is_empty() {
            apply_dest(&self.dst_ns, &mut left);
            apply_dest(&self.dst_ns, &mut right);
        }
        if !self.src_ns.is_empty() {
            apply_src(&self.src_ns, &mut left);
            apply_src(&self.src_ns, &mut right);
        }
        if !self.ns.is_empty() {
            apply_src(&self.ns, &mut left);
            apply_dest(&self.ns, &mut right);
        }
        if left == right {
            vec![left]
        } else {
            vec![left, right]
        }
    }
}

fn apply_src(ns: &[String], ff: &mut FlowFilter) {
    if ff.source_pod.is_empty() && ff.source_service.is_empty() {
        ff.source_pod = vec![String::new()];
    }
    add_namespaces(&mut ff.source_pod, ns);
    add_namespaces(&mut ff.source_service, ns);
}

fn apply_dest(ns: &[String], ff: &mut FlowFilter) {
    if ff.destination_pod.is_empty() && ff.destination_service.is_empty() {
        ff.destination_pod = vec![String::new()];
    }
    add_namespaces(&mut ff.destination_pod, ns);
    add_namespaces(&mut ff.destination_service, ns);
}

/// Entries without `/` become `ns/entry`, one per namespace.
fn add_namespaces(filter: &mut Vec<String>, ns: &[String]) {
    if ns.is_empty() || filter.is_empty() {
        return;
    }
    let mut out = Vec::with_capacity(filter.len() * ns.len());
    for entry in filter.drain(..) {
        if entry.contains('/') {
            out.push(entry);
        } else {
            out.extend(ns.iter().map(|n| format!("{n}/{entry}")));
        }
    }
    *filter = out;
}

/// The namespace written in a pod/service value (`ns/name`), or "".
fn namespace_from_name(name: &str) -> &str {
    match name.split_once('/') {
        Some((ns, _)) => ns,
        None => "",
    }
}

fn ns_conflict(namespaces: &[String], names: &[String]) -> Option<String> {
    namespaces.iter().find_map(|ns| {
        names.iter().find_map(|name| {
            let nn = namespace_from_name(name);
            (!nn.is_empty() && nn != ns)
                .then(|| format!("namespace conflict: {ns:?} does not contain {name:?}"))
        })
    })
}

fn inconsistent_namespaces(pods: &[String], services: &[String]) -> Option<String> {
    pods.iter().find_map(|pod| {
        let pod_ns = namespace_from_name(pod);
        if pod_ns.is_empty() {
            return None;
        }
        services.iter().find_map(|svc| {
            (namespace_from_name(svc) != pod_ns)
                .then(|| format!("namespace of service {svc:?} conflict with pod {pod_ns:?}"))
        })
    })
}

/// `[Kind/]name`.
fn parse_workload(s: &str) -> Workload {
    match s.split_once('/') {
        Some((kind, name)) => Workload {
            kind: kind.to_owned(),
            name: name.to_owned(),
        },
        None => Workload {
            kind: String::new(),
            name: s.to_owned(),
        },
    }
}

fn parse_identity(flag: &'static str, val: &str) -> Result<u32, FilterError> {
    names::identity_by_name(val).ok_or_else(|| {
        invalid(
            flag,
            val,
            "invalid security identity, expected one of [host world unmanaged health init \
             remote-node kube-apiserver ingress world-ipv4 world-ipv6] or a numeric value"
                .into(),
        )
    })
}

fn parse_tcp_flags(val: &str) -> Result<TcpFlags, FilterError> {
    let mut flags = TcpFlags::default();
    for f in val.split(',') {
        let bit = match f.to_uppercase().as_str() {
            "SYN" => &mut flags.syn,
            "FIN" => &mut flags.fin,
            "RST" => &mut flags.rst,
            "PSH" => &mut flags.psh,
            "ACK" => &mut flags.ack,
            "URG" => &mut flags.urg,
            "ECE" => &mut flags.ece,
            "CWR" => &mut flags.cwr,
            "NS" => &mut flags.ns,
            _ => return Err(invalid("tcp-flags", val, format!("unknown tcp flag: {f}"))),
        };
        *bit = true;
    }
    Ok(flags)
}

/// `TYPE[:SUBTYPE]`: TYPE a `--type` name or a number; SUBTYPE a trace observation point or
/// agent event name (only after a type *name*, as in Hubble) or a number.
fn parse_event_type(val: &str) -> Result<EventTypeFilter, FilterError> {
    let (name, sub) = match val.split_once(':') {
        Some((name, sub)) => (name, Some(sub)),
        None => (val, None),
    };
    let mut tf = EventTypeFilter::default();
    let named = names::EVENT_TYPES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(t, _)| *t);
    match named {
        Some(t) => tf.r#type = t,
        None => {
            let t = parse_uint(name, 32).map_err(|e| {
                invalid(
                    "type",
                    val,
                    format!(
                        "unable to parse type '{name}', not a known type name and unable to \
                         parse as numeric value: {e}"
                    ),
                )
            })?;
            tf.r#type = t as u32 as i32;
        }
    }
    if let Some(sub) = sub {
        let by_name = match named {
            Some(names::EVENT_TRACE) => names::trace_point_by_name(sub),
            Some(130) => AGENT_SUBTYPES
                .iter()
                .find(|(n, _)| *n == sub)
                .map(|(_, v)| *v),
            _ => None,
        };
        let st = match by_name {
            Some(st) => st,
            None => parse_uint(sub, 32).map_err(|e| {
                invalid(
                    "type",
                    val,
                    format!(
                        "unable to parse event sub-type '{sub}', not a known sub-type name and \
                         unable to parse as numeric value: {e}"
                    ),
                )
            })? as u32 as i32,
        };
        tf.match_sub_type = true;
        tf.sub_type = st;
    }
    Ok(tf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::FlowFilters;
    use crate::flow::{Endpoint, Flow, Http, Layer7, layer7};

    fn build(args: &[(&str, &str)]) -> Result<(Vec<FlowFilter>, Vec<FlowFilter>), FilterError> {
        let mut b = FilterBuilder::new();
        for (flag, value) in args {
            b.add(flag, value)?;
        }
        b.build()
    }

    fn json(filters: &[FlowFilter]) -> String {
        serde_json::to_string(filters).expect("serializes")
    }

    /// `(whitelist JSON, blacklist JSON)` for the flags.
    #[track_caller]
    fn golden(args: &[(&str, &str)]) -> (String, String) {
        let (w, b) = build(args).expect("flags build");
        (json(&w), json(&b))
    }

    #[track_caller]
    fn white(args: &[(&str, &str)], want: &str) {
        let (w, b) = golden(args);
        assert_eq!(w, want, "{args:?}");
        assert_eq!(b, "[]", "{args:?}");
    }

    #[track_caller]
    fn err(args: &[(&str, &str)]) -> FilterError {
        build(args).expect_err("flags must be rejected")
    }

    #[test]
    fn no_flags_no_filters() {
        assert_eq!(build(&[]).unwrap(), (vec![], vec![]));
    }

    #[test]
    fn namespace_example() {
        white(
            &[("namespace", "foo")],
            r#"[{"source_pod":["foo/"]},{"destination_pod":["foo/"]}]"#,
        );
        // Two namespaces: OR inside each filter.
        white(
            &[("namespace", "a"), ("namespace", "b")],
            r#"[{"source_pod":["a/","b/"]},{"destination_pod":["a/","b/"]}]"#,
        );
    }

    #[test]
    fn either_flags_split_into_two_filters() {
        white(
            &[("ip", "1.1.1.1"), ("port", "80")],
            r#"[{"source_ip":["1.1.1.1"],"source_port":["80"]},{"destination_ip":["1.1.1.1"],"destination_port":["80"]}]"#,
        );
        white(
            &[("from-ip", "1.1.1.1"), ("to-port", "80")],
            r#"[{"source_ip":["1.1.1.1"],"destination_port":["80"]}]"#,
        );
        white(
            &[("pod", "a"), ("pod", "b")],
            r#"[{"source_pod":["a","b"]},{"destination_pod":["a","b"]}]"#,
        );
        white(
            &[
                ("fqdn", "*.io"),
                ("label", "k8s:app=x"),
                ("service", "s"),
                ("cluster", "c"),
            ],
            r#"[{"source_fqdn":["*.io"],"source_label":["k8s:app=x"],"source_service":["s"],"source_cluster_name":["c"]},{"destination_fqdn":["*.io"],"destination_label":["k8s:app=x"],"destination_service":["s"],"destination_cluster_name":["c"]}]"#,
        );
        white(
            &[
                ("workload", "Deployment/api"),
                ("identity", "world"),
                ("identity", "16777218"),
            ],
            r#"[{"source_workload":[{"name":"api","kind":"Deployment"}],"source_identity":[2,16777218]},{"destination_workload":[{"name":"api","kind":"Deployment"}],"destination_identity":[2,16777218]}]"#,
        );
    }

    #[test]
    fn directional_flags_go_to_both() {
        white(
            &[
                ("from-fqdn", "a.io"),
                ("to-fqdn", "b.io"),
                ("from-label", "x"),
                ("to-label", "y"),
                ("from-service", "s1"),
                ("to-service", "s2"),
                ("from-cluster", "c1"),
                ("to-cluster", "c2"),
                ("from-workload", "w1"),
                ("to-workload", "StatefulSet/"),
                ("from-identity", "host"),
                ("to-identity", "7"),
                ("from-port", "1"),
                ("snat-ip", "10.0.0.1"),
            ],
            concat!(
                r#"[{"source_ip_xlated":["10.0.0.1"],"source_fqdn":["a.io"],"source_label":["x"],"#,
                r#""source_service":["s1"],"source_workload":[{"name":"w1"}],"source_cluster_name":["c1"],"#,
                r#""destination_fqdn":["b.io"],"destination_label":["y"],"#,
                r#""destination_service":["s2"],"destination_workload":[{"kind":"StatefulSet"}],"#,
                r#""destination_cluster_name":["c2"],"source_port":["1"],"source_identity":[1],"destination_identity":[7]}]"#
            ),
        );
    }

    #[test]
    fn blacklist_example() {
        let (w, b) = golden(&[
            ("not", ""),
            ("http-method", "put"),
            ("not", ""),
            ("http-method", "get"),
            ("not", ""),
            ("to-namespace", "foo"),
        ]);
        assert_eq!(w, "[]");
        assert_eq!(
            b,
            r#"[{"destination_pod":["foo/"],"http_method":["put","get"]}]"#
        );

        // Semantics: exclude flows matching all of them.
        let (w, b) = build(&[
            ("not", ""),
            ("http-method", "put"),
            ("not", ""),
            ("http-method", "get"),
            ("not", ""),
            ("to-namespace", "foo"),
        ])
        .unwrap();
        let fs = FlowFilters::new(&w, &b).unwrap();
        let flow = |method: &str, ns: &str| Flow {
            destination: Some(Endpoint {
                namespace: ns.into(),
                pod_name: "p".into(),
                ..Default::default()
            }),
            l7: Some(Layer7 {
                record: Some(layer7::Record::Http(Http {
                    method: method.into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!fs.matches(&flow("PUT", "foo")));
        assert!(!fs.matches(&flow("GET", "foo")));
        assert!(fs.matches(&flow("POST", "foo")));
        assert!(fs.matches(&flow("PUT", "bar")));
    }

    #[test]
    fn not_applies_to_one_flag_only() {
        let (w, b) = golden(&[("not", ""), ("from-ip", "1.1.1.1"), ("to-ip", "2.2.2.2")]);
        assert_eq!(w, r#"[{"destination_ip":["2.2.2.2"]}]"#);
        assert_eq!(b, r#"[{"source_ip":["1.1.1.1"]}]"#);
        // Blacklist filters follow the same left/right rules.
        let (w, b) = golden(&[("not", ""), ("namespace", "kube-system")]);
        assert_eq!(w, "[]");
        assert_eq!(
            b,
            r#"[{"source_pod":["kube-system/"]},{"destination_pod":["kube-system/"]}]"#
        );
        // Conflicts are per list.
        assert!(build(&[("ip", "1.1.1.1"), ("not", ""), ("from-ip", "2.2.2.2")]).is_ok());
    }

    #[test]
    fn not_errors() {
        assert_eq!(
            err(&[("not", ""), ("not", "")]),
            FilterError::ConsecutiveNot
        );
        assert_eq!(
            err(&[("not", ""), ("not", "")]).to_string(),
            "consecutive --not statements"
        );
        assert_eq!(
            err(&[("from-ip", "1.1.1.1"), ("not", "")]),
            FilterError::TrailingNot
        );
        assert_eq!(
            FilterError::TrailingNot.to_string(),
            "trailing --not found in the arguments"
        );
        assert_eq!(err(&[("not", "")]), FilterError::TrailingNot);
    }

    #[test]
    fn namespaces_materialize() {
        white(
            &[("all-namespaces", "true")],
            r#"[{"source_pod":["/"]},{"destination_pod":["/"]}]"#,
        );
        white(&[("from-all-namespaces", "")], r#"[{"source_pod":["/"]}]"#);
        white(
            &[("to-namespace", "a"), ("to-namespace", "b")],
            r#"[{"destination_pod":["a/","b/"]}]"#,
        );
        white(
            &[("from-namespace", "a"), ("to-namespace", "b")],
            r#"[{"source_pod":["a/"],"destination_pod":["b/"]}]"#,
        );
        // Pod names without namespace get it; names with one are kept.
        white(
            &[("pod", "x"), ("namespace", "ns")],
            r#"[{"source_pod":["ns/x"]},{"destination_pod":["ns/x"]}]"#,
        );
        white(
            &[("to-pod", "x"), ("to-pod", "ns/y"), ("to-namespace", "ns")],
            r#"[{"destination_pod":["ns/x","ns/y"]}]"#,
        );
        // Only services: no empty pod pattern is added.
        white(
            &[("to-service", "foo"), ("to-namespace", "bar")],
            r#"[{"destination_service":["bar/foo"]}]"#,
        );
        // Namespace next to a filter that goes to both sides.
        white(
            &[("to-port", "53"), ("namespace", "n")],
            r#"[{"source_pod":["n/"],"destination_port":["53"]},{"destination_pod":["n/"],"destination_port":["53"]}]"#,
        );
        // ... but not with from-ip (conflict group).
        assert_eq!(
            err(&[("from-ip", "1.1.1.1"), ("namespace", "n")]),
            FilterError::Conflict {
                first: "from-ip",
                second: "namespace"
            }
        );
    }

    #[test]
    fn namespace_conflicts() {
        assert_eq!(
            err(&[("pod", "other/x"), ("namespace", "ns")]),
            FilterError::NamespaceConflict {
                message: "namespace conflict: \"ns\" does not contain \"other/x\"".into()
            }
        );
        assert_eq!(
            err(&[("to-namespace", "ns"), ("to-service", "a/s")]).to_string(),
            "namespace conflict: \"ns\" does not contain \"a/s\""
        );
        assert_eq!(
            err(&[("to-pod", "a/p"), ("to-service", "b/s")]).to_string(),
            "namespace of service \"b/s\" conflict with pod \"a\""
        );
        assert!(build(&[("to-pod", "a/p"), ("to-service", "a/s")]).is_ok());
        assert!(build(&[("from-namespace", "ns"), ("to-pod", "other/x")]).is_ok());
    }

    #[test]
    fn conflict_groups() {
        for (a, b, first, second) in [
            (("ip", "1.1.1.1"), ("from-ip", "2.2.2.2"), "from-ip", "ip"),
            (
                ("from-ip", "1.1.1.1"),
                ("from-namespace", "x"),
                "from-ip",
                "from-namespace",
            ),
            (
                ("namespace", "x"),
                ("to-fqdn", "a.io"),
                "to-fqdn",
                "namespace",
            ),
            (("to-pod", "x"), ("namespace", "y"), "to-pod", "namespace"),
            (
                ("from-pod", "x"),
                ("all-namespaces", ""),
                "from-pod",
                "all-namespaces",
            ),
            (
                ("to-service", "x"),
                ("namespace", "y"),
                "to-service",
                "namespace",
            ),
            (("label", "a"), ("from-label", "b"), "label", "from-label"),
            (("to-label", "a"), ("label", "b"), "label", "to-label"),
            (
                ("service", "a"),
                ("to-service", "b"),
                "service",
                "to-service",
            ),
            (("port", "1"), ("to-port", "2"), "port", "to-port"),
            (("from-port", "1"), ("port", "2"), "port", "from-port"),
            (
                ("identity", "1"),
                ("to-identity", "2"),
                "identity",
                "to-identity",
            ),
            (
                ("workload", "a"),
                ("from-workload", "b"),
                "workload",
                "from-workload",
            ),
            (
                ("encrypted", ""),
                ("unencrypted", ""),
                "encrypted",
                "unencrypted",
            ),
            (("fqdn", "a.io"), ("pod", "x"), "fqdn", "pod"),
        ] {
            let e = err(&[a, b]);
            assert_eq!(e, FilterError::Conflict { first, second }, "{a:?} {b:?}");
            assert_eq!(
                e.to_string(),
                format!("filters --{first} and --{second} cannot be combined")
            );
        }
        // Not conflicting.
        assert!(build(&[("from-ip", "1.1.1.1"), ("to-ip", "2.2.2.2")]).is_ok());
        assert!(build(&[("pod", "x"), ("namespace", "y")]).is_ok());
        assert!(build(&[("from-port", "1"), ("to-port", "2")]).is_ok());
    }

    #[test]
    fn event_types() {
        white(
            &[
                ("type", "trace:to-proxy"),
                ("type", "drop"),
                ("type", "l7"),
                ("type", "drop:133"),
            ],
            concat!(
                r#"[{"event_type":[{"type":4,"match_sub_type":true,"sub_type":1},{"type":1},"#,
                r#"{"type":129},{"type":1,"match_sub_type":true,"sub_type":133}]}]"#
            ),
        );
        white(
            &[
                ("type", "policy-verdict"),
                ("type", "trace-sock"),
                ("type", "capture"),
                ("type", "7:2"),
            ],
            r#"[{"event_type":[{"type":5},{"type":7},{"type":3},{"type":7,"match_sub_type":true,"sub_type":2}]}]"#,
        );
        white(
            &[
                ("type", "agent:policy-updated"),
                ("type", "trace:to-endpoint"),
            ],
            r#"[{"event_type":[{"type":130,"match_sub_type":true,"sub_type":5},{"type":4,"match_sub_type":true}]}]"#,
        );
        // Names of sub-types only after a type name (Hubble quirk).
        assert_eq!(
            err(&[("type", "4:to-proxy")]).to_string(),
            "unable to parse event sub-type 'to-proxy', not a known sub-type name and unable \
             to parse as numeric value: strconv.ParseUint: parsing \"to-proxy\": invalid syntax"
        );
        assert_eq!(
            err(&[("type", "bogus")]).to_string(),
            "unable to parse type 'bogus', not a known type name and unable to parse as \
             numeric value: strconv.ParseUint: parsing \"bogus\": invalid syntax"
        );
        assert!(matches!(
            err(&[("type", "drop:x")]),
            FilterError::InvalidFlagValue { flag: "type", .. }
        ));
    }

    #[test]
    fn verdicts_and_drop_reasons() {
        white(
            &[("verdict", "DROPPED"), ("verdict", "AUDIT")],
            r#"[{"verdict":["DROPPED","AUDIT"]}]"#,
        );
        assert_eq!(
            err(&[("verdict", "dropped")]).to_string(),
            "invalid --verdict value: dropped"
        );
        white(
            &[("drop-reason-desc", "POLICY_DENIED")],
            r#"[{"drop_reason_desc":["POLICY_DENIED"]}]"#,
        );
        assert_eq!(
            err(&[("drop-reason-desc", "")]).to_string(),
            "empty --drop-reason-desc value"
        );
        assert_eq!(
            err(&[("drop-reason-desc", "nope")]).to_string(),
            "invalid --drop-reason-desc value: nope"
        );
    }

    #[test]
    fn scalar_flags() {
        white(
            &[
                ("uuid", "u1"),
                ("node-name", "k8s*"),
                ("node-label", "a=b"),
                ("protocol", "tcp"),
                ("http-status", "5+"),
                ("http-method", "get"),
                ("http-path", "/api"),
                ("http-url", "http://x"),
                ("http-header", "foo:bar:baz"),
                ("trace-id", "t1"),
                ("ip-trace-id", "42"),
                ("traffic-direction", "Ingress"),
                ("interface", "eth0"),
                ("encrypted", ""),
            ],
            concat!(
                r#"[{"uuid":["u1"],"traffic_direction":["INGRESS"],"interface":[{"name":"eth0"}],"#,
                r#""http_status_code":["5+"],"protocol":["tcp"],"http_method":["get"],"http_path":["/api"],"#,
                r#""http_url":["http://x"],"http_header":[{"key":"foo","value":"bar:baz"}],"node_name":["k8s*"],"#,
                r#""node_labels":["a=b"],"trace_id":["t1"],"ip_trace_id":["42"],"encrypted":[true]}]"#
            ),
        );
        white(
            &[
                ("ipv4", ""),
                ("ipv6", "x"),
                ("ip-version", "V6"),
                ("ip-version", "none"),
            ],
            r#"[{"ip_version":["IPv4","IPv6","IPv6","IP_NOT_USED"]}]"#,
        );
        white(
            &[("tcp-flags", "syn,ACK"), ("tcp-flags", "fin")],
            r#"[{"tcp_flags":[{"SYN":true,"ACK":true},{"FIN":true}]}]"#,
        );
        white(
            &[("cel-expression", "_flow.verdict == 1")],
            r#"[{"experimental":{"cel_expression":["_flow.verdict == 1"]}}]"#,
        );
        white(&[("unencrypted", "")], r#"[{"encrypted":[false]}]"#);
    }

    #[test]
    fn bad_values() {
        assert_eq!(
            err(&[("tcp-flags", "syn,bogus")]).to_string(),
            "unknown tcp flag: bogus"
        );
        assert_eq!(
            err(&[("traffic-direction", "Sideways")]).to_string(),
            "sideways: invalid traffic direction, expected ingress or egress"
        );
        assert_eq!(
            err(&[("ip-trace-id", "0")]).to_string(),
            "invalid --ip-trace-id value; must be greater than 0"
        );
        assert_eq!(
            err(&[("ip-trace-id", "x")]).to_string(),
            "invalid --ip-trace-id value: strconv.ParseUint: parsing \"x\": invalid syntax"
        );
        assert_eq!(
            err(&[("http-header", "nocolon")]).to_string(),
            "invalid http-header value \"nocolon\", expected name:value"
        );
        assert!(matches!(
            err(&[("identity", "nobody")]),
            FilterError::InvalidFlagValue {
                flag: "identity",
                ..
            }
        ));
        assert_eq!(
            err(&[("from-ipx", "1")]),
            FilterError::UnknownFlag {
                flag: "from-ipx".into()
            }
        );
        assert_eq!(
            err(&[("not", ""), ("-n", "x")]),
            FilterError::UnknownFlag { flag: "-n".into() }
        );
    }

    #[test]
    fn built_filters_are_valid_server_side() {
        let (w, b) = build(&[
            ("namespace", "kube-system"),
            ("type", "l7"),
            ("http-status", "2+"),
            ("not", ""),
            ("to-port", "53"),
        ])
        .unwrap();
        assert!(FlowFilters::new(&w, &b).is_ok());
        // Without --type l7 the server rejects HTTP filters.
        let (w, b) = build(&[("type", "trace"), ("http-method", "get")]).unwrap();
        assert!(matches!(
            FlowFilters::new(&w, &b),
            Err(FilterError::HttpRequiresL7 { .. })
        ));
    }

    #[test]
    fn flag_table() {
        assert_eq!(flag_takes_value("not"), Some(false));
        assert_eq!(flag_takes_value("all-namespaces"), Some(false));
        assert_eq!(flag_takes_value("to-ip"), Some(true));
        assert_eq!(flag_takes_value("output"), None);
        assert_eq!(long_flag_for_short('A'), Some("all-namespaces"));
        assert_eq!(long_flag_for_short('x'), None);
        assert!(filter_flags().all(|f| flag_takes_value(f).is_some()));
        assert_eq!(filter_flags().count(), 60);
        let ours: Vec<&str> = FILTER_FLAGS
            .iter()
            .filter(|f| f.client_side)
            .map(|f| f.long)
            .collect();
        assert_eq!(ours, ["container", "process"]);
    }

    #[test]
    fn the_builder_takes_every_flag_of_the_table() {
        for f in FILTER_FLAGS {
            let result = FilterBuilder::new().add(f.long, "1");
            assert!(
                !matches!(result, Err(FilterError::UnknownFlag { .. })),
                "--{}",
                f.long
            );
            if let Some(c) = f.short {
                assert_eq!(long_flag_for_short(c), Some(f.long));
            }
        }
        let shorts: Vec<char> = FILTER_FLAGS.iter().filter_map(|f| f.short).collect();
        assert_eq!(shorts, ['t', '4', '6', 'n', 'A', 'l']);
        assert!(FilterBuilder::new().add("output", "").is_err());
    }

    fn build_client(args: &[(&str, &str)]) -> BuiltFilters {
        let mut b = FilterBuilder::new();
        for (flag, value) in args {
            b.add(flag, value).expect("flag");
        }
        b.build_with_client().expect("builds")
    }

    fn with_process(container: &str, comm: &str, dst: &str) -> Flow {
        use imdsguard_hubble_proto::process::{ProcessInfo, set};
        let mut f = Flow {
            ip: Some(crate::flow::Ip {
                destination: dst.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        set(
            &mut f,
            &ProcessInfo {
                container: container.into(),
                process: comm.into(),
                ..Default::default()
            },
        );
        f
    }

    /// Whether the flow passes the lists and then the client.
    fn passes(b: &BuiltFilters, f: &Flow) -> bool {
        FlowFilters::new(&b.whitelist, &b.blacklist)
            .expect("compiles")
            .matches(f)
            && b.client.matches(f)
    }

    #[test]
    fn process_flags_are_applied_by_the_client() {
        let sidecar = with_process("istio-proxy", "envoy", "169.254.169.254");
        let app = with_process("app", "curl", "169.254.169.254");
        let elsewhere = with_process("istio-proxy", "envoy", "10.0.0.9");

        // Whitelist: the server gets the FlowFilters, the client the process criteria.
        let b = build_client(&[
            ("to-ip", "169.254.169.254"),
            ("container", "istio-proxy"),
            ("container", "app"),
            ("process", "envoy"),
        ]);
        assert_eq!(
            json(&b.whitelist),
            r#"[{"destination_ip":["169.254.169.254"]}]"#
        );
        assert!(b.blacklist.is_empty());
        assert!(passes(&b, &sidecar));
        assert!(!passes(&b, &app), "process envoy ANDs with the containers");
        assert!(!passes(&b, &elsewhere));

        // Only process flags: no FlowFilter at all for the server.
        let b = build_client(&[("process", "curl")]);
        assert!(b.whitelist.is_empty() && b.blacklist.is_empty());
        assert!(passes(&b, &app) && !passes(&b, &sidecar));

        // --not applies to the next flag; the blacklist with process criteria stays local.
        let b = build_client(&[
            ("verdict", "FORWARDED"),
            ("not", ""),
            ("to-ip", "169.254.169.254"),
            ("not", ""),
            ("container", "istio-proxy"),
        ]);
        assert_eq!(json(&b.whitelist), r#"[{"verdict":["FORWARDED"]}]"#);
        assert!(b.blacklist.is_empty(), "kept by the client");
        let fwd = |mut f: Flow| {
            f.verdict = crate::flow::Verdict::Forwarded as i32;
            f
        };
        assert!(!passes(&b, &fwd(sidecar.clone())));
        assert!(passes(&b, &fwd(app.clone())));
        assert!(passes(&b, &fwd(elsewhere.clone())));

        // A blacklist without process criteria still goes to the server.
        let b = build_client(&[("container", "app"), ("not", ""), ("to-port", "53")]);
        assert_eq!(json(&b.blacklist), r#"[{"destination_port":["53"]}]"#);

        // The plain builder refuses what it could not apply.
        let mut plain = FilterBuilder::new();
        plain.add("container", "app").expect("flag");
        assert_eq!(
            plain.build(),
            Err(FilterError::ClientSideFlag { flag: "container" })
        );
        assert!(matches!(
            FilterBuilder::new().add("process", ""),
            Err(FilterError::InvalidFlagValue { .. })
        ));
    }
}
