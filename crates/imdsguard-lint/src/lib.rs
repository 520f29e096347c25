//! `imdsguard policy lint`: finds the traps in Cilium network policies before they reach a cluster.
//! A policy can be valid and still not do what it looks like it does (HTTP rules that only add
//! visibility, a path regex that misses every real request, a deny that leaves Azure's WireServer
//! open); each check here names one such trap with a stable code (see [`checks`] and
//! docs/policy-lint.md), the file, line and field, and the fix.
//!
//! Most checks ask the policy engine rather than read YAML: the policies are loaded into a
//! [`imdsguard_policy::Repository`] together with the known cluster ([`Cluster`]) and one
//! "witness" pod per rule, a pod built to match the rule's selector, so the answer is Cilium's.
//! Pure logic: sources in, findings out. Limits: without a [`Cluster`] the checks reason about
//! witness pods, which cannot see pods that other policies' selectors single out; host policies
//! are not evaluated (the engine does not enforce them).

mod audit;
pub mod checks;
mod defaultdeny;
mod groups;
mod imds;
mod l7;
pub mod metadata;
mod model;
mod namespaces;
pub mod report;
pub mod sarif;
mod selectors;

pub use checks::{CHECKS, Check, Severity};

use imdsguard_manifest::Source;
use imdsguard_policy::{EndpointSpec, Warning};

/// What the linter knows about the cluster the policies are meant for: its namespaces (with their
/// labels) and its pods. Read from an endpoints file today; a cluster watch can fill it the same way.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub namespaces: Vec<(String, Vec<(String, String)>)>,
    pub endpoints: Vec<EndpointSpec>,
}

impl Cluster {
    /// Every namespace the cluster is known to have: the listed ones and those of its pods.
    pub fn namespace_names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .namespaces
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(self.endpoints.iter().map(|e| e.namespace.as_str()))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub name: &'static str,
    pub severity: Severity,
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// `Kind name` or `Kind namespace/name`.
    pub object: String,
    /// The field path, `spec.egress[0].toPorts[0].rules.http[0].path`; empty for the whole object.
    pub field: String,
    pub message: String,
    pub fix: String,
}

/// Everything a lint run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Sorted by file, line, column and code.
    pub findings: Vec<Finding>,
    /// Documents skipped or fields ignored while decoding (not findings: they are about imdsguard).
    pub warnings: Vec<Warning>,
    pub policies: usize,
    pub groups: usize,
}

impl Report {
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

/// Lints every policy and CIDR group in `sources`.
pub fn lint(sources: &[Source], cluster: Option<&Cluster>) -> Report {
    let m = model::Model::new(sources, cluster);
    let mut findings: Vec<Finding> = m
        .decoded
        .errors
        .iter()
        .map(|e| Finding {
            code: checks::INVALID_POLICY.code,
            name: checks::INVALID_POLICY.name,
            severity: checks::INVALID_POLICY.severity,
            file: e.file.to_string(),
            line: e.line,
            column: e.column,
            object: e.object.clone(),
            field: e.field.clone(),
            message: e.message.clone(),
            fix: checks::INVALID_POLICY.fix.to_owned(),
        })
        .collect();
    findings.extend(l7::check(&m));
    findings.extend(defaultdeny::check(&m));
    findings.extend(selectors::check(&m));
    findings.extend(groups::check(&m));
    findings.extend(imds::check(&m));
    findings.extend(namespaces::check(&m));
    findings.extend(audit::check(&m));
    findings.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.code, &a.message)
            .cmp(&(&b.file, b.line, b.column, b.code, &b.message))
    });
    findings.dedup();
    Report {
        findings,
        warnings: m.decoded.warnings.clone(),
        policies: m.decoded.policies.len(),
        groups: m.decoded.groups.len(),
    }
}

#[cfg(test)]
mod testutil {
    use super::*;

    /// The seed's CIDR group, which most test policies refer to.
    pub const GROUP: &str = "\
apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {name: azure-imds}
spec: {externalCIDRs: [169.254.169.254/32]}
";

    pub fn lint_text(text: &str) -> Report {
        lint(
            &[
                Source::new("group.yaml", GROUP),
                Source::new("policy.yaml", text),
            ],
            None,
        )
    }

    pub fn codes(r: &Report) -> Vec<&'static str> {
        r.findings.iter().map(|f| f.code).collect()
    }

    pub fn with_code<'r>(r: &'r Report, code: &str) -> Vec<&'r Finding> {
        r.findings.iter().filter(|f| f.code == code).collect()
    }

    /// A pod for [`cluster`]: namespace, name and labels.
    pub type Pod<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    pub fn cluster(namespaces: &[&str], pods: &[Pod]) -> Cluster {
        Cluster {
            namespaces: namespaces
                .iter()
                .map(|n| (n.to_string(), Vec::new()))
                .collect(),
            endpoints: pods
                .iter()
                .map(|(ns, name, labels)| EndpointSpec {
                    name: name.to_string(),
                    namespace: ns.to_string(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    service_account: "default".into(),
                    ..Default::default()
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn an_invalid_policy_is_an_error_finding_at_its_field() {
        let r = lint_text(
            "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad, namespace: a}
spec:
  endpointSelector: {}
  egres: [{}]
",
        );
        let f = with_code(&r, "IG0001");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!((f[0].line, f[0].field.as_str()), (6, "spec.egres"));
        assert_eq!(f[0].severity, Severity::Error);
    }

    #[test]
    fn the_seed_policies_show_their_traps() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/azure-imds/");
        let sources: Vec<Source> = [
            "cidrgroup.yaml",
            "azure-imds-deny.yaml",
            "azure-imds-allow.yaml",
        ]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(format!("{dir}{f}")).expect("seed file");
            Source::new(*f, text)
        })
        .collect();
        let r = lint(&sources, None);
        let found: Vec<(&str, &str, u32)> = r
            .findings
            .iter()
            .map(|f| (f.code, f.file.as_str(), f.line))
            .collect();
        for want in [
            ("IG1001", "azure-imds-allow.yaml", 29),
            ("IG1101", "azure-imds-allow.yaml", 32),
            ("IG1601", "azure-imds-allow.yaml", 11),
            ("IG1501", "azure-imds-deny.yaml", 23),
        ] {
            assert!(found.contains(&want), "{want:?} not in {found:?}");
        }
        assert!(!codes(&r).contains(&"IG0001"));
        assert!(!codes(&r).contains(&"IG1401"));
    }

    #[test]
    fn a_valid_policy_has_no_invalid_finding() {
        let r = lint_text(
            "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: good, namespace: a}
spec:
  endpointSelector: {}
  egress: [{toEntities: [world]}]
",
        );
        assert!(with_code(&r, "IG0001").is_empty(), "{:?}", r.findings);
        assert_eq!(r.policies, 1);
        assert_eq!(r.groups, 1);
    }
}
