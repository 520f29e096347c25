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

const STRUCT: &str = "type.googleapis.com/google.protobuf.Struct";

/// The seed's flows with the container and process of each: the first none, then the sidecar
/// (`istio-proxy`/`envoy`) and the app (`app`/`curl`) in turn, in Go protojson's form, except one
/// in pbjson's form (base64) and one with another program's extension.
fn attributed_seed(dir: &std::path::Path) -> PathBuf {
    let seed = std::fs::read_to_string(repo().join(SEED)).expect("the seed");
    let mut out = String::new();
    for (i, line) in seed.lines().enumerate() {
        let mut doc: serde_json::Value = serde_json::from_str(line).expect("a seed line");
        let ext = match i {
            0 => None,
            // {"container":"app","pid":102,"process":"curl"}, as protobuf bytes.
            2 => Some(serde_json::json!({
                "typeUrl": STRUCT,
                "value": "ChIKCWNvbnRhaW5lchIFGgNhcHAKEAoDcGlkEgkRAAAAAACAWUAKEQoHcHJvY2VzcxIGGgRjdXJs",
            })),
            3 => Some(serde_json::json!({"@type": "type.googleapis.com/example.Other", "x": 1})),
            i if i % 2 == 1 => Some(serde_json::json!({
                "@type": STRUCT,
                "value": {"container": "istio-proxy", "process": "envoy", "pid": 100 + i, "uid": 1337},
            })),
            i => Some(serde_json::json!({
                "@type": STRUCT,
                "value": {"container": "app", "process": "curl", "pid": 100 + i},
            })),
        };
        if let Some(ext) = ext {
            doc["flow"]["extensions"] = ext;
        }
        out.push_str(&doc.to_string());
        out.push('\n');
    }
    let file = dir.join("attributed.jsonl");
    std::fs::write(&file, out).expect("writes");
    file
}

#[test]
fn flows_with_processes() {
    let dir = std::env::temp_dir().join(format!("imdsguard-observe-proc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = attributed_seed(&dir);
    let file = file.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--input-file", file];
        all.extend_from_slice(args);
        stdout(&observe(&all))
    };

    // The compact line is Hubble's, extensions or not.
    let plain = stdout(&observe(&["--input-file", SEED]));
    assert_eq!(run(&[]), plain);

    let with = run(&["--print-process"]);
    let lines: Vec<&str> = with.lines().collect();
    let plain_lines: Vec<&str> = plain.lines().collect();
    assert_eq!(lines.len(), 12);
    assert_eq!(lines[0], plain_lines[0]);
    assert_eq!(
        lines[1],
        format!(
            "{} container=istio-proxy process=envoy pid=101",
            plain_lines[1]
        )
    );
    assert_eq!(
        lines[2],
        format!("{} container=app process=curl pid=102", plain_lines[2])
    );
    assert_eq!(
        lines[3], plain_lines[3],
        "another program's extension is dropped"
    );

    let sidecar = run(&["--print-process", "--container", "istio-proxy"]);
    assert_eq!(sidecar.lines().count(), 5, "{sidecar}");
    assert!(sidecar.lines().all(|l| l.ends_with(&format!(
        "container=istio-proxy process=envoy pid={}",
        &l[l.len() - 3..]
    ))));
    let curl = run(&["--process", "curl", "--process", "wget", "--last", "2"]);
    assert_eq!(
        curl.lines().collect::<Vec<_>>(),
        [plain_lines[8], plain_lines[10]]
    );
    let not = run(&[
        "--not",
        "--container",
        "istio-proxy",
        "--to-ip",
        "169.254.169.254",
    ]);
    assert_eq!(not.lines().count(), 7, "{not}");

    // JSON: Go protojson's form, for both input forms; the foreign extension is left out.
    let json = run(&["-o", "json"]);
    let json_lines: Vec<&str> = json.lines().collect();
    assert!(!json_lines[0].contains("extensions"));
    assert!(json_lines[1].contains(&format!(
        r#","extensions":{{"@type":"{STRUCT}","value":{{"container":"istio-proxy","pid":101,"process":"envoy","uid":1337}}}}}}"#
    )), "{}", json_lines[1]);
    assert!(json_lines[2].contains(&format!(
        r#""extensions":{{"@type":"{STRUCT}","value":{{"container":"app","pid":102,"process":"curl"}}}}"#
    )), "{}", json_lines[2]);
    assert!(!json_lines[3].contains("extensions"));
    assert!(!json.contains("typeUrl"));
    // … which reads back to the same.
    let again = dir.join("again.jsonl");
    std::fs::write(&again, &json).unwrap();
    let back = stdout(&observe(&[
        "--input-file",
        again.to_str().unwrap(),
        "--print-process",
    ]));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(back, with);
}

/// Kills the agent it holds when dropped, so a failing test leaves no process behind.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An agent replaying `flows` on an ephemeral loopback port, and its address.
fn agent(flows: &str) -> (Agent, String) {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .current_dir(repo())
        .args(["agent", "--replay-flows", flows, "--replay-keep-time"])
        .args(["--hubble-listen-address", "127.0.0.1:0"])
        .args(["--node-name", "test-node"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start agent");
    let stderr = child.stderr.take().expect("stderr");
    let agent = Agent(child);
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut addr = None;
    while addr.is_none() && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        addr = line
            .split_once("hubble: serving on ")
            .filter(|(_, a)| !a.starts_with("unix://"))
            .map(|(_, a)| a.to_owned());
    }
    // Keep draining stderr so the agent never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let addr = addr.expect("agent did not report its address");
    // Until it holds every replayed flow.
    while Instant::now() < deadline {
        let all = observe(&["--server", &addr, "--all"]);
        if String::from_utf8_lossy(&all.stdout).lines().count() >= 12 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (agent, addr)
}

#[test]
fn a_servers_flows_are_filtered_by_process_on_the_client() {
    let dir = std::env::temp_dir().join(format!("imdsguard-observe-srv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = attributed_seed(&dir);
    let file = file.to_str().unwrap();
    let (_agent, addr) = agent(file);
    let both = |args: &[&str]| {
        let mut remote = vec!["--server", addr.as_str()];
        remote.extend_from_slice(args);
        let mut local = vec!["--input-file", file];
        local.extend_from_slice(args);
        (stdout(&observe(&remote)), stdout(&observe(&local)))
    };
    for args in [
        &["--all", "--print-process"][..],
        &["--all", "--container", "istio-proxy", "--print-process"],
        &[
            "--all",
            "--not",
            "--process",
            "envoy",
            "--to-ip",
            "169.254.169.254",
        ],
        // Counted on the client: the last and first of the matching flows.
        &["--process", "curl", "--last", "2"],
        &["--container", "app", "--first", "2", "--print-process"],
        // The default: the last 20 that match.
        &["--container", "app"],
        &["--all", "--container", "app", "-o", "json"],
    ] {
        let (remote, local) = both(args);
        assert_eq!(remote, local, "{args:?}");
        assert!(!remote.is_empty(), "{args:?}");
    }
    let (json, _) = both(&["--all", "--container", "istio-proxy", "-o", "json"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(json.lines().count(), 5);
    assert!(json.lines().all(|l| l.contains(r#""extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"container":"istio-proxy","#)), "{json}");
}
