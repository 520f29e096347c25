//! The policy API after decoding and sanitising: Cilium's `api.Rule` with peers already turned into
//! selectors (namespace injection, CIDR and entity translation done), ready for resolution.

use crate::l7::L7Rules;
use crate::selector::Selector;
use imdsguard_manifest::Pos;
use ipnet::IpNet;
use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum PolicyKind {
    CiliumNetworkPolicy,
    CiliumClusterwideNetworkPolicy,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::CiliumNetworkPolicy => "CiliumNetworkPolicy",
            PolicyKind::CiliumClusterwideNetworkPolicy => "CiliumClusterwideNetworkPolicy",
        }
    }
}

/// Names a policy the way Hubble does in `*_allowed_by` / `*_denied_by`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PolicyRef {
    pub kind: PolicyKind,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind.as_str(), self.name)
        } else {
            write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
        }
    }
}

/// A valid CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub id: PolicyRef,
    pub file: Arc<str>,
    pub pos: Pos,
    pub rules: Vec<Rule>,
    /// `policy.imdsguard.io/audit-mode: "true"`: the policy never drops; what it would deny passes
    /// and is reported as AUDIT (an imdsguard extension; Cilium's audit mode is per agent or
    /// endpoint).
    pub audit: bool,
}

/// The annotation that puts one policy in audit mode.
pub const AUDIT_ANNOTATION: &str = "policy.imdsguard.io/audit-mode";

/// The Namespace label that puts every pod of the namespace in audit mode.
pub const NAMESPACE_AUDIT_LABEL: &str = "policy.imdsguard.io/audit-mode";

/// Whether a namespace's labels put its pods in audit mode: [`NAMESPACE_AUDIT_LABEL`] set to
/// `"true"` (label values are strings; any other value, `"True"` included, leaves the namespace
/// enforcing, so a typo never turns enforcement off).
pub fn namespace_in_audit(labels: &[(String, String)]) -> bool {
    labels
        .iter()
        .any(|(k, v)| k == NAMESPACE_AUDIT_LABEL && v == "true")
}

impl Policy {
    /// Every prefix the policy names (CIDRs and their exceptions): each becomes an ipcache entry.
    pub fn prefixes(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.rules
            .iter()
            .flat_map(|r| r.sections())
            .flat_map(|(_, items)| items.iter())
            .flat_map(|i| i.prefixes.iter().copied())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "INGRESS",
            Direction::Egress => "EGRESS",
        }
    }
}

/// Which part of a rule an item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    Ingress,
    IngressDeny,
    Egress,
    EgressDeny,
}

impl Section {
    pub fn direction(self) -> Direction {
        match self {
            Section::Ingress | Section::IngressDeny => Direction::Ingress,
            Section::Egress | Section::EgressDeny => Direction::Egress,
        }
    }

    pub fn is_deny(self) -> bool {
        matches!(self, Section::IngressDeny | Section::EgressDeny)
    }
}

/// One rule (`spec` or an element of `specs`).
#[derive(Debug, Clone)]
pub struct Rule {
    /// Index in `specs` (0 for `spec`), for messages.
    pub index: usize,
    pub subject: Subject,
    /// `None` when the section is absent; `Some(vec![])` when written as `[]`.
    pub ingress: Option<Vec<PolicyItem>>,
    pub ingress_deny: Option<Vec<PolicyItem>>,
    pub egress: Option<Vec<PolicyItem>>,
    pub egress_deny: Option<Vec<PolicyItem>>,
    /// `enableDefaultDeny` after defaulting (docs/policy-semantics.md §4.2).
    pub default_deny_ingress: bool,
    pub default_deny_egress: bool,
    pub log: Option<Arc<str>>,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Subject {
    Endpoints(Selector),
    /// A host policy. Parsed and validated; enforced only where a host firewall exists.
    Nodes(Selector),
}

impl Rule {
    pub fn sections(&self) -> impl Iterator<Item = (Section, &[PolicyItem])> {
        [
            (Section::Ingress, &self.ingress),
            (Section::IngressDeny, &self.ingress_deny),
            (Section::Egress, &self.egress),
            (Section::EgressDeny, &self.egress_deny),
        ]
        .into_iter()
        .filter_map(|(s, items)| items.as_deref().map(|i| (s, i)))
    }

    /// Whether the rule has a section (allow or deny) for `dir`. Cilium tests `len(...) > 0`, so an
    /// explicit empty list counts as no section.
    pub fn has_direction(&self, dir: Direction) -> bool {
        let non_empty = |s: &Option<Vec<PolicyItem>>| s.as_ref().is_some_and(|v| !v.is_empty());
        match dir {
            Direction::Ingress => non_empty(&self.ingress) || non_empty(&self.ingress_deny),
            Direction::Egress => non_empty(&self.egress) || non_empty(&self.egress_deny),
        }
    }

    pub fn default_deny(&self, dir: Direction) -> bool {
        match dir {
            Direction::Ingress => self.default_deny_ingress,
            Direction::Egress => self.default_deny_egress,
        }
    }
}

/// The peers of one item.
#[derive(Debug, Clone, PartialEq)]
pub enum Peers {
    /// No L3 field: every identity (Cilium's `WildcardEndpointSelector`).
    Any,
    /// The union of these selectors. An empty list selects nothing (explicit `[]`, missing groups,
    /// FQDNs without a DNS proxy).
    Selectors(Vec<Selector>),
}

/// One element of `ingress`, `ingressDeny`, `egress` or `egressDeny`.
#[derive(Debug, Clone)]
pub struct PolicyItem {
    pub index: usize,
    pub peers: Peers,
    /// Which field gave the peers (`toCIDRSet`, `fromEndpoints` …), for traces.
    pub peer_field: &'static str,
    /// `fromRequires`/`toRequires`: appended to the endpoint selectors of every rule that selects
    /// the same subject, in the same direction and of the same kind (allow or deny).
    pub requires: Vec<crate::selector::Requirement>,
    /// `None`: no `toPorts` and no `icmps` (all ports, all protocols).
    pub ports: Option<Vec<PortRule>>,
    pub icmps: Option<Vec<IcmpField>>,
    pub auth_required: bool,
    /// The prefixes this item names (CIDRs and exceptions).
    pub prefixes: Vec<IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Protocol {
    Any,
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Any => 0,
            Protocol::Icmp => 1,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmpv6 => 58,
            Protocol::Sctp => 132,
        }
    }

    pub fn from_number(n: u8) -> Option<Protocol> {
        Some(match n {
            0 => Protocol::Any,
            1 => Protocol::Icmp,
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            58 => Protocol::Icmpv6,
            132 => Protocol::Sctp,
            _ => return None,
        })
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_uppercase().as_str() {
            "ANY" | "" => Protocol::Any,
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            "ICMP" => Protocol::Icmp,
            "ICMPV6" => Protocol::Icmpv6,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Any => "ANY",
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Icmp => "ICMP",
            Protocol::Icmpv6 => "ICMPv6",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    Number(u16),
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortProtocol {
    pub port: PortSpec,
    /// Inclusive; only meaningful when larger than `port`.
    pub end_port: Option<u16>,
    pub protocol: Protocol,
}

#[derive(Debug, Clone)]
pub struct PortRule {
    pub ports: Vec<PortProtocol>,
    pub l7: Option<L7Rules>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpField {
    pub v6: bool,
    pub icmp_type: u8,
}

/// A valid CiliumCIDRGroup.
#[derive(Debug, Clone)]
pub struct CidrGroup {
    pub name: Arc<str>,
    pub labels: Vec<(String, String)>,
    pub cidrs: Vec<IpNet>,
    pub file: Arc<str>,
    pub pos: Pos,
}

/// Label key of a CIDR group's name label (source `cidrgroup`).
pub const CIDR_GROUP_NAME_KEY: &str = "io.cilium.policy.cidrgroupname";
