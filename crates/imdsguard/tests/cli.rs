//! End-to-end tests of the `imdsguard` binary: `policy check`, `policy trace` and `policy test`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The repository root, where `examples/` lives; commands run there with relative paths.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn imdsguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("running imdsguard")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("UTF-8 stderr")
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or("")
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("stdout is not JSON ({e}):\n{}", stdout(o));
    })
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "imdsguard-cli-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        TempDir(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("writing a temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// The README's broken policy: the HTTP method regex `GET(` is at line 16, column 19.
const BROKEN: &str = "\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: azure-imds-allow
spec:
  endpointSelector: {}
  egress:
  - toCIDRSet:
    - cidrGroupRef: azure-imds
    toPorts:
    - ports:
      - port: \"80\"
        protocol: TCP
      rules:
        http:
        - method: \"GET(\"
";

const BROKEN_FIELD: &str = "spec.egress[0].toPorts[0].rules.http[0].method";
const BROKEN_MESSAGE: &str = "invalid regex \"GET(\": missing )";

const GOOD_CNP: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: good
  namespace: web
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]
";

#[test]
fn check_reports_an_invalid_regex_with_file_line_column_and_field() {
    let dir = TempDir::new("regex");
    let file = dir.file("broken.yaml", BROKEN);
    let out = imdsguard(&["policy", "check", path_str(&file)]);
    let text = stdout(&out);
    let want = format!(
        "{}:16:19: CiliumClusterwideNetworkPolicy azure-imds-allow: {BROKEN_FIELD}: {BROKEN_MESSAGE}",
        file.display()
    );
    assert!(
        text.lines().any(|l| l == want),
        "no line\n  {want}\nin\n{text}"
    );
    assert_eq!(last_line(&text), "0 valid, 1 invalid", "{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
}

#[test]
fn check_json_names_the_error_position_and_field() {
    let dir = TempDir::new("regex-json");
    let file = dir.file("broken.yaml", BROKEN);
    let out = imdsguard(&["policy", "check", "-o", "json", path_str(&file)]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let v = json(&out);
    let errors = v["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1, "{v:#}");
    let e = &errors[0];
    assert_eq!(e["file"], path_str(&file), "{e:#}");
    assert_eq!(e["line"], 16, "{e:#}");
    assert_eq!(e["column"], 19, "{e:#}");
    assert_eq!(e["field"], BROKEN_FIELD, "{e:#}");
    assert_eq!(e["message"], BROKEN_MESSAGE, "{e:#}");
    assert_eq!(e["kind"], "CiliumClusterwideNetworkPolicy", "{e:#}");
    assert_eq!(e["name"], "azure-imds-allow", "{e:#}");
    assert_eq!(v["valid"].as_array().map(Vec::len), Some(0), "{v:#}");
}

#[test]
fn check_accepts_the_seed_policies() {
    let out = imdsguard(&["policy", "check", "examples/azure-imds"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert_eq!(last_line(&text), "3 valid, 0 invalid", "{text}");
    for name in [
        "CiliumClusterwideNetworkPolicy azure-imds-allow: valid",
        "CiliumClusterwideNetworkPolicy azure-imds-deny: valid",
        "CiliumCIDRGroup azure-imds: valid",
    ] {
        assert!(text.contains(name), "{name:?} missing from\n{text}");
    }

    let out = imdsguard(&["policy", "check", "-o", "json", "examples/azure-imds"]);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["valid"].as_array().map(Vec::len), Some(3), "{v:#}");
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(0), "{v:#}");
}

#[test]
fn check_reports_valid_and_invalid_objects_of_one_file() {
    let dir = TempDir::new("mixed");
    let bad = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: bad
  namespace: web
spec:
  endpointSelector: {}
  ingress:
  - fromEntities: [everything]
";
    let file = dir.file("mixed.yaml", &format!("{GOOD_CNP}---\n{bad}"));
    let out = imdsguard(&["policy", "check", path_str(&file)]);
    let text = stdout(&out);
    let f = file.display();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{f}:1:1: CiliumNetworkPolicy web/good: valid"))),
        "the valid object is not reported valid:\n{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with(&format!(
            "{f}:20:20: CiliumNetworkPolicy web/bad: spec.ingress[0].fromEntities[0]: unknown entity \"everything\""
        ))),
        "the invalid object is not reported as an error:\n{text}"
    );
    assert!(!text.contains("web/bad: valid"), "{text}");
    assert_eq!(last_line(&text), "1 valid, 1 invalid", "{text}");
    assert_eq!(out.status.code(), Some(1));

    let out = imdsguard(&["policy", "check", "-o", "json", path_str(&file)]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    let valid = v["valid"].as_array().expect("valid array");
    assert_eq!(valid.len(), 1, "{v:#}");
    assert_eq!(valid[0]["name"], "good");
    assert_eq!(valid[0]["namespace"], "web");
    let errors = v["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1, "{v:#}");
    assert_eq!(errors[0]["name"], "bad");
    assert_eq!(errors[0]["line"], 20);
    assert_eq!(errors[0]["column"], 20);
    assert_eq!(errors[0]["field"], "spec.ingress[0].fromEntities[0]");
}

#[test]
fn check_warns_about_unknown_kinds() {
    let dir = TempDir::new("configmap");
    let cm = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  key: value
";
    let file = dir.file("with-configmap.yaml", &format!("{cm}---\n{GOOD_CNP}"));
    let out = imdsguard(&["policy", "check", path_str(&file)]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}\n{err}");
    assert_eq!(last_line(&text), "1 valid, 0 invalid", "{text}");
    let warning = err
        .lines()
        .find(|l| l.contains("ConfigMap"))
        .unwrap_or_else(|| panic!("no warning about the ConfigMap on stderr:\n{err}"));
    assert!(
        warning.starts_with(&format!("{}:1:1: warning: ", file.display())),
        "{warning}"
    );
    assert!(warning.contains("settings"), "{warning}");
    assert!(!text.contains("ConfigMap"), "{text}");

    let out = imdsguard(&["policy", "check", "-o", "json", path_str(&file)]);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(0), "{v:#}");
    let warnings = v["warnings"].as_array().expect("warnings array");
    assert_eq!(warnings.len(), 1, "{v:#}");
    assert!(
        warnings[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ConfigMap")),
        "{v:#}"
    );
}

const TRACE_SEED: [&str; 12] = [
    "policy",
    "trace",
    "--policies",
    "examples/azure-imds",
    "--endpoints",
    "examples/azure-imds/scenario.yaml",
    "--from",
    "go-webapp",
    "--to",
    "169.254.169.254",
    "--dport",
    "80",
];

#[test]
fn trace_shows_the_blog_denial() {
    let out = imdsguard(&TRACE_SEED);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    for want in [
        "policy-verdict:L3-Only EGRESS DENIED",
        "egress_denied_by: CiliumClusterwideNetworkPolicy azure-imds-deny",
        "Policy denied by denylist (181, POLICY_DENY)",
        "Verdict: DENIED (Policy denied by denylist)",
    ] {
        assert!(text.contains(want), "{want:?} missing from\n{text}");
    }
}

#[test]
fn trace_json_has_verdict_and_drop_reason() {
    let mut args = TRACE_SEED.to_vec();
    args.extend(["-o", "json"]);
    let out = imdsguard(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["verdict"], "DENIED", "{v:#}");
    assert_eq!(v["drop_reason"], "POLICY_DENY", "{v:#}");
    assert_eq!(v["match_type"], "L3-Only", "{v:#}");
    assert_eq!(
        v["egress"]["denied_by"][0]["name"], "azure-imds-deny",
        "{v:#}"
    );
}

#[test]
fn test_reports_the_failing_case_and_the_totals() {
    let dir = TempDir::new("scenario");
    let scenario = "\
name: one-pass-one-fail
policies:
  - inline: |
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: web-ingress, namespace: default}
      spec:
        endpointSelector: {matchLabels: {app: web}}
        ingress:
        - fromEndpoints: [{matchLabels: {app: client}}]
          toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]
endpoints:
  - name: web
    labels: {app: web}
  - name: client
    labels: {app: client}
cases:
  - name: client reaches web on 80
    from: client
    to: web
    port: 80
    expect: {verdict: ALLOWED}
  - name: client reaches web on 443 (wrong expectation)
    from: client
    to: web
    port: 443
    expect: {verdict: ALLOWED}
";
    let file = dir.file("scenario.yaml", scenario);
    let out = imdsguard(&["policy", "test", path_str(&file)]);
    let text = stdout(&out);
    let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "{text}");
    let fail = fails[0];
    assert!(
        fail.contains("client reaches web on 443 (wrong expectation)"),
        "{fail}"
    );
    assert!(fail.contains("expected verdict=ALLOWED"), "{fail}");
    assert!(fail.contains("got verdict=DENIED"), "{fail}");
    assert!(!text.contains("client reaches web on 80:"), "{text}");
    assert_eq!(last_line(&text), "1 passed, 1 failed", "{text}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn test_passes_the_seed_scenarios() {
    let out = imdsguard(&["policy", "test", "examples/azure-imds"]);
    let text = stdout(&out);
    assert!(last_line(&text).ends_with(" passed, 0 failed"), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
}
