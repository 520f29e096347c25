//! Findings as SARIF 2.1.0, the format code-scanning services (GitHub, GitLab, Azure DevOps) read.

use crate::Finding;
use crate::checks::{CHECKS, Severity};
use serde_json::{Value, json};

pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

/// A SARIF log with one run. Every check is listed as a rule, so viewers can show the rules that
/// found nothing too; file names become relative URIs (absolute paths become `file://` URIs).
pub fn to_sarif(findings: &[Finding], tool_version: &str) -> Value {
    let rules: Vec<Value> = CHECKS
        .iter()
        .map(|c| {
            json!({
                "id": c.code,
                "name": c.name,
                "shortDescription": {"text": c.summary},
                "fullDescription": {"text": format!("{} Fix: {}", c.summary, c.fix)},
                "help": {"text": c.fix},
                "defaultConfiguration": {"level": level(c.severity)},
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let rule_index = CHECKS.iter().position(|c| c.code == f.code);
            let mut region = json!({"startLine": f.line.max(1)});
            if f.column > 0 {
                region["startColumn"] = json!(f.column);
            }
            let mut logical = f.object.clone();
            if !f.field.is_empty() {
                logical = format!("{logical}: {}", f.field);
            }
            json!({
                "ruleId": f.code,
                "ruleIndex": rule_index,
                "level": level(f.severity),
                "message": {"text": format!("{} Fix: {}", f.message, f.fix)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri(&f.file)},
                        "region": region,
                    },
                    "logicalLocations": [{"fullyQualifiedName": logical}],
                }],
            })
        })
        .collect();
    json!({
        "version": "2.1.0",
        "$schema": SCHEMA,
        "runs": [{
            "tool": {"driver": {
                "name": "imdsguard",
                "version": tool_version,
                "informationUri": "https://github.com/imdsguard/imdsguard",
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

/// A URI reference for a file name: `/` separators, spaces and `%` escaped.
fn uri(file: &str) -> String {
    let path = file.replace('\\', "/");
    let mut out = String::new();
    for c in path.chars() {
        match c {
            ' ' => out.push_str("%20"),
            '%' => out.push_str("%25"),
            '#' => out.push_str("%23"),
            '?' => out.push_str("%3F"),
            c => out.push(c),
        }
    }
    if out.starts_with('/') {
        format!("file://{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::L7_VISIBILITY_ONLY;

    fn finding(file: &str) -> Finding {
        Finding {
            code: L7_VISIBILITY_ONLY.code,
            name: L7_VISIBILITY_ONLY.name,
            severity: Severity::Warning,
            file: file.into(),
            line: 29,
            column: 11,
            object: "CiliumClusterwideNetworkPolicy azure-imds-allow".into(),
            field: "spec.egress[0].toPorts[0].rules".into(),
            message: "visibility only.".into(),
            fix: "enforce it.".into(),
        }
    }

    #[test]
    fn a_result_points_at_its_rule_file_and_region() {
        let log = to_sarif(&[finding("examples/a b.yaml")], "0.1.0");
        assert_eq!(log["version"], "2.1.0");
        assert_eq!(log["$schema"], SCHEMA);
        let run = &log["runs"][0];
        assert_eq!(run["tool"]["driver"]["name"], "imdsguard");
        assert_eq!(
            run["tool"]["driver"]["rules"].as_array().map(Vec::len),
            Some(CHECKS.len())
        );
        let r = &run["results"][0];
        assert_eq!(r["ruleId"], "IG1001");
        assert_eq!(
            run["tool"]["driver"]["rules"][r["ruleIndex"].as_u64().unwrap() as usize]["id"],
            "IG1001"
        );
        assert_eq!(r["level"], "warning");
        let loc = &r["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "examples/a%20b.yaml");
        assert_eq!(loc["region"]["startLine"], 29);
        assert_eq!(loc["region"]["startColumn"], 11);
        assert_eq!(r["message"]["text"], "visibility only. Fix: enforce it.");
    }

    #[test]
    fn absolute_paths_become_file_uris() {
        let log = to_sarif(&[finding("/tmp/p.yaml")], "0.1.0");
        assert_eq!(
            log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "file:///tmp/p.yaml"
        );
    }
}
