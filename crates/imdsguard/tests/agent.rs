//! The agent serves replayed flows over Hubble's gRPC API; `observe --server` reads them back, on TCP
//! and on a unix socket, once and following.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const SEED: &str = "tests/flows/seed.jsonl";

/// Kills the child it holds when dropped, so a failing test leaves no process behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts an agent on an ephemeral port and returns it with its address.
fn agent(extra: &[&str]) -> (Guard, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .current_dir(repo())
        .args([
            "agent",
            "--replay-flows",
            SEED,
            "--hubble-listen-address",
            "127.0.0.1:0",
            "--node-name",
            "test-node",
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut addr = None;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        // `<time> INFO hubble: serving on ADDR`: the address ends the line.
        if let Some((_, a)) = line.split_once("hubble: serving on ")
            && !a.starts_with("unix://")
        {
            addr = Some(a.to_owned());
            break;
        }
    }
    // Keep draining stderr so the agent never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (
        Guard(child),
        addr.expect("agent did not report its address"),
    )
}

fn observe(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .current_dir(repo())
        .arg("observe")
        .args(args)
        .output()
        .expect("run observe");
    assert!(
        o.status.success(),
        "observe {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8")
}

/// Waits until the agent holds all replayed flows.
fn wait_for(addr: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = observe(&["--server", addr, "--all"]);
        if out.lines().count() >= n || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn server_and_file_give_the_same_answers() {
    let (_agent, addr) = agent(&["--replay-keep-time"]);
    let remote = wait_for(&addr, 12);
    let local = observe(&["--input-file", SEED]);
    assert_eq!(remote, local);
    for filter in [
        vec!["--verdict", "DROPPED"],
        vec![
            "--to-ip",
            "169.254.169.254",
            "--not",
            "--from-identity",
            "host",
        ],
        vec!["-n", "logging", "-t", "l7"],
        vec!["--http-path", "/metadata/identity/.*"],
    ] {
        let mut remote_args = vec!["--server", addr.as_str(), "--all"];
        remote_args.extend(&filter);
        let mut local_args = vec!["--input-file", SEED];
        local_args.extend(&filter);
        assert_eq!(observe(&remote_args), observe(&local_args), "{filter:?}");
    }
    assert_eq!(
        observe(&["--server", &addr, "--last", "2"]).lines().count(),
        2
    );
    let first = observe(&["--server", &addr, "--first", "1"]);
    assert!(
        first.contains("policy-verdict:all EGRESS ALLOWED"),
        "{first}"
    );
    let json = observe(&["--server", &addr, "--last", "1", "-o", "json"]);
    assert!(
        json.contains("\"node_name\":\"aks-default-13458874-vmss00001w\""),
        "{json}"
    );
}

#[test]
fn follow_receives_new_flows_as_they_arrive() {
    let (_agent, addr) = agent(&["--replay-interval", "20ms", "--replay-loop"]);
    let mut follower = Guard(
        Command::new(env!("CARGO_BIN_EXE_imdsguard"))
            .current_dir(repo())
            .args(["observe", "--server", &addr, "-f", "--verdict", "DROPPED"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start observe -f"),
    );
    let stdout = follower.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut got = Vec::new();
    while got.len() < 4 {
        match lines.next() {
            Some(Ok(l)) => got.push(l),
            _ => break,
        }
    }
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(
        got.iter()
            .all(|l| l.contains("DENIED") || l.contains("DROPPED")),
        "{got:?}"
    );
}

#[test]
fn unix_socket() {
    let dir = std::env::temp_dir().join(format!("imdsguard-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("hubble.sock");
    let (mut agent, _addr) = agent(&[
        "--replay-keep-time",
        "--hubble-socket-path",
        sock.to_str().unwrap(),
    ]);
    let target = format!("unix://{}", sock.display());
    let out = wait_for(&target, 12);
    assert_eq!(out.lines().count(), 12, "{out}");
    // SIGTERM: the agent removes its socket on the way out.
    let pid = agent.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = agent.0.wait();
    let gone = !sock.exists();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(gone, "the socket was left behind");
}

#[test]
fn metrics_and_export_file() {
    use std::io::{Read, Write};
    let dir = std::env::temp_dir().join(format!("imdsguard-agent-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let export = dir.join("flows.json");
    // An ephemeral metrics port: bind, read it, release it for the agent.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let (mut agent, addr) = agent(&[
        "--replay-keep-time",
        "--hubble-metrics-server",
        &metrics_addr,
        "--hubble-export-file-path",
        export.to_str().unwrap(),
        "--hubble-export-denylist",
        r#"{"verdict":["FORWARDED"]}"#,
    ]);
    wait_for(&addr, 12);
    let mut body = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(&metrics_addr) {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            body.clear();
            let _ = s.read_to_string(&mut body);
            if body.contains("hubble_flows_processed_total") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = agent.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = agent.0.wait();
    let exported = std::fs::read_to_string(&export).unwrap_or_default();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains(r#"hubble_drop_total{reason="POLICY_DENY",protocol="TCP"} 2"#),
        "{body}"
    );
    assert!(
        body.contains(
            r#"hubble_policy_verdicts_total{direction="egress",match="l3-only",action="dropped"} 1"#
        ),
        "{body}"
    );
    assert!(body.contains(r#"hubble_http_requests_total{method="GET",protocol="HTTP/1.1",status="200",reporter="client"} 1"#), "{body}");
    // Only the two DROPPED flows pass the deny list.
    assert_eq!(exported.lines().count(), 2, "{exported}");
    assert!(
        exported
            .lines()
            .all(|l| l.contains("\"verdict\":\"DROPPED\""))
    );
}

/// The flags of the cgroup hooks are checked before anything starts (no root needed), and a
/// combination that cannot work says what to give instead.
#[test]
fn cgroup_flags_that_cannot_work_are_refused_with_what_to_give() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["--host-network-pods", "enforce", "--cgroup-root", ""],
            "give --cgroup-root",
        ),
        (&["--cgroup-root", "relative/dir"], "absolute path"),
        (&["--deny-response", "icmp"], "drop"),
        (&["--host-network-pods", "always"], "ignore"),
    ];
    for (args, want) in cases {
        let o = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
            .current_dir(repo())
            .args(["agent", "--endpoints", "/nonexistent/endpoints.yaml"])
            .args(args)
            .output()
            .expect("run the agent");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {want:?} not in {stderr}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(["agent", "--help"])
        .output()
        .expect("agent --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--cgroup-root", "--host-network-pods", "--deny-response"] {
        assert!(help.contains(flag), "{flag} not in --help");
    }
}
