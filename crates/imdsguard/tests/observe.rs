//! `imdsguard observe --input-file` against flows shaped like the seed's `hubble observe` output.

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn observe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .current_dir(repo())
        .arg("observe")
        .args(args)
        .output()
        .expect("run imdsguard")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("utf-8")
}

const SEED: &str = "tests/flows/seed.jsonl";

#[test]
fn compact_output_matches_the_blog() {
    let out = stdout(&observe(&["--input-file", SEED]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 12, "{out}");
    assert_eq!(
        lines[0],
        "Jul 15 21:49:39.668: go-webapp/go-webapp-847857f68-2qlnd:40132 (ID:14226) -> 169.254.169.254:80 (ID:16777218) policy-verdict:all EGRESS ALLOWED (TCP Flags: SYN)"
    );
    assert_eq!(
        lines[3],
        "Jul 15 21:49:39.668: go-webapp/go-webapp-847857f68-2qlnd:40132 (ID:14226) -> 169.254.169.254:80 (ID:16777218) to-network FORWARDED (TCP Flags: ACK, PSH)"
    );
    assert_eq!(
        lines[4],
        "Jul 15 21:54:30.797: go-webapp/go-webapp-8568cffcd4-l5s48:37378 (ID:14226) <> 169.254.169.254:80 (ID:16777218) policy-verdict:L3-Only EGRESS DENIED (TCP Flags: SYN)"
    );
    assert_eq!(
        lines[5],
        "Jul 15 21:54:30.797: go-webapp/go-webapp-8568cffcd4-l5s48:37378 (ID:14226) <> 169.254.169.254:80 (ID:16777218) Policy denied by denylist DROPPED (TCP Flags: SYN)"
    );
    assert_eq!(
        lines[9],
        "Jul 15 21:58:44.292: logging/fluent-bit-qg7vq:52482 (ID:21152) -> 169.254.169.254:80 (ID:16777218) http-request FORWARDED (HTTP/1.1 GET http://169.254.169.254:80/metadata/identity/oauth2/token?api-version=2021-02-01&resource=https://api.kusto.windows.net)"
    );
}

#[test]
fn the_blogs_filter_excludes_the_host() {
    let out = stdout(&observe(&[
        "--input-file",
        SEED,
        "--to-ip",
        "169.254.169.254",
        "--not",
        "--from-identity",
        "host",
    ]));
    assert_eq!(out.lines().count(), 11, "{out}");
    assert!(!out.contains("(host)"));
    let dropped = stdout(&observe(&["--input-file", SEED, "--verdict", "DROPPED"]));
    assert_eq!(dropped.lines().count(), 2, "{dropped}");
    let http = stdout(&observe(&[
        "--input-file",
        SEED,
        "--http-method",
        "GET",
        "-t",
        "l7",
    ]));
    assert_eq!(http.lines().count(), 2, "{http}");
    let ns = stdout(&observe(&[
        "--input-file",
        SEED,
        "-n",
        "logging",
        "--first",
        "2",
    ]));
    assert_eq!(ns.lines().count(), 2, "{ns}");
    let last = stdout(&observe(&["--input-file", SEED, "--last", "1"]));
    assert!(
        last.contains("to-proxy FORWARDED (TCP Flags: ACK, FIN)"),
        "{last}"
    );
}

#[test]
fn json_output_reads_back_to_the_same_flows() {
    let json = stdout(&observe(&["--input-file", SEED, "-o", "json"]));
    assert_eq!(json.lines().count(), 12);
    assert!(json.contains("\"Summary\":\"HTTP/1.1 GET http://169.254.169.254:80/metadata/identity/oauth2/token?api-version=2021-02-01\\u0026resource=https://api.kusto.windows.net\""));
    let dir = std::env::temp_dir().join(format!("imdsguard-observe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("round.jsonl");
    std::fs::write(&file, &json).unwrap();
    let again = stdout(&observe(&["--input-file", file.to_str().unwrap()]));
    let original = stdout(&observe(&["--input-file", SEED]));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(again, original);
}

#[test]
fn malformed_lines_are_reported_and_skipped() {
    let dir = std::env::temp_dir().join(format!("imdsguard-observe-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read_to_string(repo().join(SEED)).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(2, "{not json");
    let file = dir.join("bad.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let o = observe(&["--input-file", file.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.jsonl:3:"), "{err}");
    assert_eq!(stdout(&o).lines().count(), 12);
}

#[test]
fn raw_filters_and_bad_flags() {
    let out = stdout(&observe(&[
        "--input-file",
        SEED,
        "-n",
        "foo",
        "--print-raw-filters",
    ]));
    assert!(out.contains(r#"{"source_pod":["foo/"]}"#), "{out}");
    assert!(out.contains(r#"{"destination_pod":["foo/"]}"#), "{out}");
    let o = observe(&["--input-file", SEED, "--verdict", "dropped"]);
    assert!(!o.status.success());
    let o = observe(&["--input-file", SEED, "--not"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("trailing --not"));
}
