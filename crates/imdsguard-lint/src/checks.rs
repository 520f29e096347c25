//! Every check imdsguard's linter runs: its stable code, its name, its severity and the fix it
//! suggests. Codes never change meaning and are never reused; docs/policy-lint.md documents each.

use imdsguard_metadata::address_text;
use std::fmt;

/// How bad a finding is. The names and their order follow SARIF's `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Note,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "note" | "info" => Some(Severity::Note),
            "warning" => Some(Severity::Warning),
            "error" => Some(Severity::Error),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub code: &'static str,
    pub name: &'static str,
    pub severity: Severity,
    /// One line: what the check finds.
    pub summary: &'static str,
    /// What to do about a finding, when the finding has nothing more specific to say.
    pub fix: &'static str,
}

pub const INVALID_POLICY: Check = Check {
    code: "IG0001",
    name: "invalid-policy",
    severity: Severity::Error,
    summary: "Cilium rejects this object (the same validation as `imdsguard policy check`).",
    fix: "Correct the field the message names; `imdsguard policy check` prints the same error.",
};

pub const L7_VISIBILITY_ONLY: Check = Check {
    code: "IG1001",
    name: "l7-visibility-only",
    severity: Severity::Warning,
    summary: "L7 rules in default-allow mode only add visibility: Cilium appends an allow-all L7 rule, so they restrict nothing.",
    fix: "Set enableDefaultDeny for that direction to true (and allow the other traffic the pods need), or keep the rule as visibility on purpose and document it.",
};

pub const L7_LIFTED: Check = Check {
    code: "IG1002",
    name: "l7-lifted-by-allow",
    severity: Severity::Warning,
    summary: "Another allow without L7 rules covers the same peer and port, so every request passes the proxy (L7 rules are a union).",
    fix: "Remove the broader allow for this peer and port, or give it the same HTTP rules.",
};

pub const HTTP_PATH_FULL_MATCH: Check = Check {
    code: "IG1101",
    name: "http-path-full-match",
    severity: Severity::Warning,
    summary: "An HTTP path regex matches the whole path including the query, so it misses the metadata requests it looks like it covers.",
    fix: "End the pattern with `.*` (for example `/metadata/.*`), or spell out the query (`/metadata/identity/oauth2/token\\?.*`).",
};

pub const HTTP_METHOD_NEVER_MATCHES: Check = Check {
    code: "IG1102",
    name: "http-method-never-matches",
    severity: Severity::Warning,
    summary: "An HTTP method regex matches no HTTP method (it is a case-sensitive full-string match).",
    fix: "Write methods in capitals and separate alternatives with `|`, for example `GET|HEAD`.",
};

pub const HTTP_PATH_PREFIX_INTENT: Check = Check {
    code: "IG1103",
    name: "http-path-prefix-intent",
    severity: Severity::Warning,
    summary: "An HTTP path regex looks like a prefix or a search (`^/api`, `/api/`) but matches only that exact string.",
    fix: "Append `.*` to match everything under the prefix; drop `^` and `$`, the match is already anchored.",
};

pub const DENY_ONLY_DEFAULT_DENY: Check = Check {
    code: "IG1201",
    name: "deny-only-default-deny",
    severity: Severity::Error,
    summary: "A rule with only deny sections and no enableDefaultDeny switches its pods to default deny: all their other traffic in that direction is dropped.",
    fix: "Add `enableDefaultDeny: {egress: false}` (or ingress) to the rule (Cilium 1.16+), or add an allow such as `egress: [{toEntities: [all]}]`.",
};

pub const DEFAULT_DENY_FIELD_VERSION: Check = Check {
    code: "IG1202",
    name: "enable-default-deny-needs-1.16",
    severity: Severity::Note,
    summary: "enableDefaultDeny: false exists only since Cilium 1.16; older versions drop the field and put the pods in default deny.",
    fix: "Run Cilium 1.16 or later, or make the policy safe without the field (add an allow-all section next to the deny).",
};

pub const NEGATIVE_SELECTOR_RESERVED: Check = Check {
    code: "IG1301",
    name: "negative-selector-selects-reserved",
    severity: Severity::Warning,
    summary: "A NotIn or DoesNotExist peer selector also matches identities without that label: world, host, remote nodes and every CIDR.",
    fix: "Add `k8s:io.kubernetes.pod.namespace` with operator Exists to keep the selector to pods, or use toEntities/toCIDR for the rest.",
};

pub const CIDR_GROUP_MISSING: Check = Check {
    code: "IG1401",
    name: "cidr-group-missing",
    severity: Severity::Error,
    summary: "cidrGroupRef names a CiliumCIDRGroup that is not among the linted files; a missing group selects nothing.",
    fix: "Create the CiliumCIDRGroup (and pass its manifest to the linter), or correct the name.",
};

pub const IMDS_WIRESERVER_OPEN: Check = Check {
    code: "IG1501",
    name: "imds-wireserver-open",
    severity: Severity::Warning,
    summary: concat!(
        address_text!(IMDS_V4),
        " is denied but Azure's WireServer ",
        address_text!(WIRESERVER),
        " (TCP 80 and 32526) stays open to the same pods."
    ),
    fix: concat!(
        "Deny ",
        address_text!(WIRESERVER),
        "/32 on TCP ports 80 and 32526 for the same pods (keep port 53 open if they use Azure DNS)."
    ),
};

pub const IMDS_IPV6_OPEN: Check = Check {
    code: "IG1502",
    name: "imds-ipv6-open",
    severity: Severity::Note,
    summary: concat!(
        address_text!(IMDS_V4),
        " is denied but the IPv6 metadata addresses (AWS ",
        address_text!(AWS_IMDS_V6),
        ", GCP ",
        address_text!(GCP_METADATA_V6),
        ") stay open."
    ),
    fix: concat!(
        "On dual-stack nodes, add ",
        address_text!(AWS_IMDS_V6),
        "/128 (AWS) or ",
        address_text!(GCP_METADATA_V6),
        "/128 (GCP) to the same deny."
    ),
};

pub const IMDS_HOST_NETWORK: Check = Check {
    code: "IG1503",
    name: "imds-hostnetwork-uncovered",
    severity: Severity::Note,
    summary: "Pods with hostNetwork: true have the host identity; in Cilium no endpointSelector policy covers them, so they still reach the metadata service.",
    fix: "Run the imdsguard agent with --host-network-pods enforce, which judges their connects to metadata addresses against the policies that select the pod (an imdsguard extension); or keep hostNetwork pods to the few that need it, or add a host policy (nodeSelector, needs Cilium's host firewall).",
};

pub const IMDS_TOKEN_OPEN: Check = Check {
    code: "IG1601",
    name: "imds-token-open-to-all",
    severity: Severity::Warning,
    summary: "An allow rule lets every pod it selects fetch managed-identity tokens, though its selector names whole namespaces rather than the workload that needs them.",
    fix: "Allow the token path in its own rule whose endpointSelector names the workload (its app label or service account); limit the broad rule to the paths everyone needs.",
};

pub const UNKNOWN_NAMESPACE: Check = Check {
    code: "IG1701",
    name: "unknown-namespace",
    severity: Severity::Warning,
    summary: "The policy names a namespace that does not exist in the cluster (a typo selects nothing).",
    fix: "Correct the namespace name, or create the namespace.",
};

pub const AUDIT_MOOT: Check = Check {
    code: "IG1801",
    name: "audit-moot",
    severity: Severity::Warning,
    summary: "A policy in audit mode (policy.imdsguard.io/audit-mode) selects no pod, or its deny only covers flows an enforcing policy already denies: its audit reports nothing about what enforcing it would change.",
    fix: "Point the policy's endpointSelector at the pods you mean to roll it out to, or drop the deny (or the annotation) where an enforcing policy already denies the same flows.",
};

/// Every check, in code order.
pub const CHECKS: &[Check] = &[
    INVALID_POLICY,
    L7_VISIBILITY_ONLY,
    L7_LIFTED,
    HTTP_PATH_FULL_MATCH,
    HTTP_METHOD_NEVER_MATCHES,
    HTTP_PATH_PREFIX_INTENT,
    DENY_ONLY_DEFAULT_DENY,
    DEFAULT_DENY_FIELD_VERSION,
    NEGATIVE_SELECTOR_RESERVED,
    CIDR_GROUP_MISSING,
    IMDS_WIRESERVER_OPEN,
    IMDS_IPV6_OPEN,
    IMDS_HOST_NETWORK,
    IMDS_TOKEN_OPEN,
    UNKNOWN_NAMESPACE,
    AUDIT_MOOT,
];

/// A check by its code (`IG1001`) or its name (`l7-visibility-only`).
pub fn find(code_or_name: &str) -> Option<&'static Check> {
    CHECKS
        .iter()
        .find(|c| c.code.eq_ignore_ascii_case(code_or_name) || c.name == code_or_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_are_unique_and_sorted() {
        for (i, a) in CHECKS.iter().enumerate() {
            for b in &CHECKS[i + 1..] {
                assert!(a.code < b.code, "{} before {}", a.code, b.code);
                assert_ne!(a.name, b.name);
            }
        }
        assert_eq!(find("ig1001"), Some(&L7_VISIBILITY_ONLY));
        assert_eq!(find("cidr-group-missing"), Some(&CIDR_GROUP_MISSING));
        assert_eq!(find("IG9999"), None);
    }

    /// The texts built from imdsguard-metadata's addresses read as they did when written out.
    #[test]
    fn metadata_texts_are_unchanged() {
        assert_eq!(
            IMDS_WIRESERVER_OPEN.summary,
            "169.254.169.254 is denied but Azure's WireServer 168.63.129.16 (TCP 80 and 32526) stays open to the same pods."
        );
        assert_eq!(
            IMDS_WIRESERVER_OPEN.fix,
            "Deny 168.63.129.16/32 on TCP ports 80 and 32526 for the same pods (keep port 53 open if they use Azure DNS)."
        );
        assert_eq!(
            IMDS_IPV6_OPEN.summary,
            "169.254.169.254 is denied but the IPv6 metadata addresses (AWS fd00:ec2::254, GCP fd20:ce::254) stay open."
        );
        assert_eq!(
            IMDS_IPV6_OPEN.fix,
            "On dual-stack nodes, add fd00:ec2::254/128 (AWS) or fd20:ce::254/128 (GCP) to the same deny."
        );
    }
}
