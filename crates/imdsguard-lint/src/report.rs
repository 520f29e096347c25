//! What `imdsguard policy lint` prints: the text report (each finding with its fix, then the
//! totals) and the JSON one (the findings and a summary); SARIF is [`crate::sarif`]. Also which
//! findings `--ignore` drops and whether a run fails. The reports are part of the command line's
//! interface (CI jobs read them), so they are built here and the binary only prints them.

use crate::{Report, Severity, checks};
use serde_json::{Value, json};
use std::fmt;

/// The first of `names` that is neither a check's code nor its name.
pub fn unknown_check(names: &[String]) -> Option<&str> {
    names
        .iter()
        .map(String::as_str)
        .find(|n| checks::find(n).is_none())
}

impl Report {
    /// Drops the findings of the checks named, by code (in any case) or by name.
    pub fn ignore(&mut self, names: &[String]) {
        self.findings.retain(|f| {
            !names
                .iter()
                .any(|i| i.eq_ignore_ascii_case(f.code) || i == f.name)
        });
    }

    /// Whether a finding is at least as severe as `threshold`.
    pub fn fails(&self, threshold: Severity) -> bool {
        self.findings.iter().any(|f| f.severity >= threshold)
    }

    /// `policy lint -o json`: the findings, and how many policies, groups and findings of each
    /// severity there were.
    pub fn to_json(&self) -> Value {
        json!({
            "findings": self.findings,
            "summary": {
                "policies": self.policies,
                "cidrGroups": self.groups,
                "errors": self.count(Severity::Error),
                "warnings": self.count(Severity::Warning),
                "notes": self.count(Severity::Note),
            },
        })
    }
}

/// `policy lint`'s text report, for standard output; the decoding warnings are not in it (they
/// go to standard error).
pub struct Text<'a>(pub &'a Report);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let report = self.0;
        for x in &report.findings {
            let field = if x.field.is_empty() {
                String::new()
            } else {
                format!("{}: ", x.field)
            };
            writeln!(
                f,
                "{}:{}:{}: {} {} {}: {}: {field}{}",
                x.file, x.line, x.column, x.severity, x.code, x.name, x.object, x.message
            )?;
            writeln!(f, "  fix: {}", x.fix)?;
        }
        writeln!(
            f,
            "{} and {} linted: {}, {}, {}",
            count(report.policies, "policy", "policies"),
            count(report.groups, "CIDR group", "CIDR groups"),
            count(report.count(Severity::Error), "error", "errors"),
            count(report.count(Severity::Warning), "warning", "warnings"),
            count(report.count(Severity::Note), "note", "notes"),
        )
    }
}

/// `1 policy`, `2 policies`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{codes, lint_text};

    const BROKEN: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: broken, namespace: default}
spec: {endpointSelector: {}, egres: [{}]}
";

    #[test]
    fn text_has_each_finding_with_its_fix_and_the_totals() {
        let r = lint_text(BROKEN);
        assert_eq!(codes(&r), [checks::INVALID_POLICY.code]);
        let text = Text(&r).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with(&format!(
                "policy.yaml:4:30: error {} {}: CiliumNetworkPolicy default/broken: spec.egres: ",
                checks::INVALID_POLICY.code,
                checks::INVALID_POLICY.name
            )),
            "{text}"
        );
        assert_eq!(lines[1], format!("  fix: {}", checks::INVALID_POLICY.fix));
        assert_eq!(
            lines[2],
            "0 policies and 1 CIDR group linted: 1 error, 0 warnings, 0 notes"
        );
        assert!(r.fails(Severity::Error));
        assert_eq!(r.to_json()["summary"]["errors"], 1);
    }

    #[test]
    fn ignore_drops_findings_by_code_in_any_case_or_by_name() {
        for name in [
            checks::INVALID_POLICY.code.to_lowercase(),
            checks::INVALID_POLICY.name.to_owned(),
        ] {
            let mut r = lint_text(BROKEN);
            r.ignore(&[name]);
            assert!(r.findings.is_empty());
            assert!(!r.fails(Severity::Note));
        }
    }

    #[test]
    fn unknown_checks_are_named() {
        let names = ["IG1001".to_owned(), "no-such-check".to_owned()];
        assert_eq!(unknown_check(&names), Some("no-such-check"));
        assert_eq!(unknown_check(&names[..1]), None);
    }
}
