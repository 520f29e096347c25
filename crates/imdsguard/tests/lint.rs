//! `imdsguard policy lint` end to end, on the seed's policies.

mod support;

use support::{TempDir, imdsguard, json, stderr, stdout};

const SEED: &str = "examples/azure-imds/";
const ALLOW: &str = "examples/azure-imds/azure-imds-allow.yaml";
const GROUP: &str = "examples/azure-imds/cidrgroup.yaml";

#[test]
fn the_seed_allow_policy_shows_both_traps_with_lines() {
    let o = imdsguard(&["policy", "lint", GROUP, ALLOW]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    // The HTTP rule only adds visibility: egress stays default-allow (enableDefaultDeny line 20).
    assert!(
        out.contains(
            "examples/azure-imds/azure-imds-allow.yaml:29:11: warning IG1001 l7-visibility-only: \
             CiliumClusterwideNetworkPolicy azure-imds-allow: spec.egress[0].toPorts[0].rules: These HTTP rules only add visibility"
        ),
        "{out}"
    );
    assert!(
        out.contains("enableDefaultDeny.egress: false at line 20"),
        "{out}"
    );
    // `/metadata` is a full-string match: it would not match the token request.
    assert!(
        out.contains(
            "examples/azure-imds/azure-imds-allow.yaml:32:23: warning IG1101 http-path-full-match: \
             CiliumClusterwideNetworkPolicy azure-imds-allow: spec.egress[0].toPorts[0].rules.http[0].path: \
             path \"/metadata\" is matched against the whole request target"
        ),
        "{out}"
    );
    assert!(out.contains("  fix: Write \"/metadata/.*\""), "{out}");
    assert!(
        out.ends_with("1 policy and 1 CIDR group linted: 0 errors, 3 warnings, 1 note\n"),
        "{out}"
    );
}

#[test]
fn json_lists_findings_with_code_line_and_field() {
    let o = imdsguard(&["policy", "lint", SEED, "-o", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v = json(&o);
    let findings = v["findings"].as_array().expect("findings");
    let find = |code: &str| {
        findings
            .iter()
            .find(|f| f["code"] == code)
            .unwrap_or_else(|| panic!("no {code} in {v:#}"))
    };
    let path = find("IG1101");
    assert_eq!(path["file"], ALLOW);
    assert_eq!(path["line"], 32);
    assert_eq!(
        path["field"],
        "spec.egress[0].toPorts[0].rules.http[0].path"
    );
    assert_eq!(path["severity"], "warning");
    assert_eq!(
        find("IG1501")["file"],
        "examples/azure-imds/azure-imds-deny.yaml"
    );
    assert_eq!(v["summary"]["policies"], 2);
    assert_eq!(v["summary"]["errors"], 0);
}

#[test]
fn sarif_has_rules_results_and_regions() {
    let o = imdsguard(&["policy", "lint", GROUP, ALLOW, "-o", "sarif"]);
    let v = json(&o);
    assert_eq!(v["version"], "2.1.0");
    assert!(
        v["$schema"]
            .as_str()
            .is_some_and(|s| s.contains("sarif-2.1.0"))
    );
    let run = &v["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    assert!(rules.iter().any(|r| r["id"] == "IG1001"
        && r["shortDescription"]["text"].as_str().is_some()
        && r["fullDescription"]["text"].as_str().is_some()));
    let results = run["results"].as_array().expect("results");
    let r = results
        .iter()
        .find(|r| r["ruleId"] == "IG1001")
        .expect("IG1001 result");
    assert_eq!(r["level"], "warning");
    let loc = &r["locations"][0]["physicalLocation"];
    assert_eq!(loc["artifactLocation"]["uri"], ALLOW);
    assert_eq!(loc["region"]["startLine"], 29);
    assert_eq!(loc["region"]["startColumn"], 11);
    assert!(
        r["message"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("visibility"))
    );
}

#[test]
fn exit_codes_follow_fail_on() {
    // The seed has warnings and notes but no errors.
    assert_eq!(
        imdsguard(&["policy", "lint", SEED, "--fail-on", "error"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        imdsguard(&["policy", "lint", SEED, "--fail-on", "none"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(imdsguard(&["policy", "lint", SEED]).status.code(), Some(1));
    // Only notes left: they fail only with --fail-on note.
    let notes_only = [
        "policy",
        "lint",
        SEED,
        "--ignore",
        "IG1001,IG1101,IG1501",
        "--ignore",
        "imds-token-open-to-all",
    ];
    let o = imdsguard(&notes_only);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let mut with_notes = notes_only.to_vec();
    with_notes.extend(["--fail-on", "note"]);
    assert_eq!(imdsguard(&with_notes).status.code(), Some(1));
}

#[test]
fn a_clean_policy_set_exits_zero() {
    let dir = TempDir::new("lint-clean");
    dir.file(
        "clean.yaml",
        "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
    - toEntities: [world]
      toPorts: [{ports: [{port: \"443\", protocol: TCP}]}]
",
    );
    let o = imdsguard(&["policy", "lint", dir.path()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).ends_with("0 errors, 0 warnings, 0 notes\n"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn bad_input_exits_two() {
    let o = imdsguard(&["policy", "lint", "no/such/dir"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no/such/dir"), "{}", stderr(&o));
    let o = imdsguard(&["policy", "lint", SEED, "--ignore", "IG9999"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no such check"), "{}", stderr(&o));
}

#[test]
fn endpoints_name_real_pods_and_catch_namespace_typos() {
    let dir = TempDir::new("lint-endpoints");
    let typo = dir.file(
        "typo.yaml",
        &std::fs::read_to_string(support::root().join(ALLOW))
            .expect("seed policy")
            .replace("- logging", "- loging"),
    );
    let o = imdsguard(&[
        "policy",
        "lint",
        GROUP,
        &typo,
        "--endpoints",
        "examples/azure-imds/lab.yaml",
    ]);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{typo}:17:13: warning IG1701 unknown-namespace"))
            && out.contains("Did you mean \"logging\"?"),
        "{out}"
    );
    // With the lab's pods the token finding names the pods that get tokens.
    assert!(
        out.contains("kube-system/azure-ip-masq-agent-x7k2m"),
        "{out}"
    );
}
