//! Why flow filters or filter flags were rejected.

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
    /// A client-side filter flag (`--container`, `--process`) given to a builder whose caller
    /// only takes `FlowFilter`s ([`crate::filterflags::FilterBuilder::build`]).
    #[error("--{flag} is applied by the client, not by a FlowFilter")]
    ClientSideFlag { flag: &'static str },
    /// A filter flag value Hubble's CLI rejects (e.g. `--verdict forwarded`); `message` is the
    /// CLI's text.
    #[error("{message}")]
    InvalidFlagValue {
        flag: &'static str,
        value: String,
        message: String,
    },
}
