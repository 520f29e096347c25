//! Root end-to-end test of the standalone agent: pods as network namespaces, policies and
//! endpoints as files, real curl from inside the pods, flows read back with `observe --server`.
//! The protected "metadata" server is a namespace of the test's own; no machine route changes.

use imdsguard_netns::{Pod, can_create_namespaces, unique_name};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The agent process and everything it printed.
struct Agent {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    addr: String,
}

impl Agent {
    fn start(args: &[&str]) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
            .arg("agent")
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().map(|mut l| l.push(line)).ok();
            }
        });
        let mut agent = Agent {
            child,
            log,
            addr: String::new(),
        };
        let line = agent.wait_log("hubble: serving on ");
        agent.addr = line["hubble: serving on ".len()..].to_owned();
        agent
    }

    fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(l) = self
                .log
                .lock()
                .ok()
                .and_then(|l| l.iter().find(|l| l.contains(needle)).cloned())
            {
                return l;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the agent never logged {needle:?}; it logged:\n{}",
            self.logged()
        );
    }

    fn logged(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    fn kill(&mut self) {
        // SIGKILL, like a crashed agent: nothing gets to clean up.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn observe(&self) -> String {
        let o = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
            .args(["observe", "--server", &self.addr, "--last", "1000"])
            .output()
            .expect("observe");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The test's private bpffs and pins, removed whatever happens.
struct BpfRoot(PathBuf);

impl Drop for BpfRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.join("imdsguard"));
        let _ = imdsguard_netns::run("umount", &[&self.0.to_string_lossy()]);
        let _ = std::fs::remove_dir(&self.0);
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn curl(from: &Pod, to: Ipv4Addr) -> bool {
    from.ns
        .exec(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "2",
                &format!("http://{to}:8080/"),
            ],
        )
        .expect("curl")
        .status
        .success()
}

fn deny_and_allow(server: Ipv4Addr) -> String {
    format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: a-no-metadata, namespace: default}}
spec:
  endpointSelector: {{matchLabels: {{app: a}}}}
  egressDeny:
    - toCIDR: [{server}/32]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: b-to-server, namespace: default}}
spec:
  endpointSelector: {{matchLabels: {{app: b}}}}
  egress:
    - toCIDR: [{server}/32]
      toPorts: [{{ports: [{{port: "8080", protocol: TCP}}]}}]
"#
    )
}

fn write(path: &Path, text: &str) {
    // Write then rename, as editors and config management do: the agent never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting until {what}");
}

#[test]
fn the_agent_enforces_watched_files_reports_flows_and_survives_sigkill() {
    if !can_create_namespaces() {
        eprintln!("skipped: needs root to create network namespaces");
        return;
    }
    let k = 150 + (std::process::id() % 50) as u8;
    let a = Pod::create(&unique_name("eta"), Ipv4Addr::new(10, k, 9, 2), None).expect("pod a");
    let b = Pod::create(&unique_name("etb"), Ipv4Addr::new(10, k, 9, 3), None).expect("pod b");
    let s = Pod::create(&unique_name("ets"), Ipv4Addr::new(10, k, 9, 4), None).expect("server");
    let _http =
        s.ns.spawn(
            "python3",
            &["-m", "http.server", "8080", "--bind", "0.0.0.0"],
        )
        .expect("server");
    for pod in [&a, &b] {
        assert_eq!(pod.ns.route_dev(s.ipv4.into()).expect("route"), "eth0");
    }
    eventually("the test server answers", || curl(&b, s.ipv4));

    let dir = TempDir(std::env::temp_dir().join(unique_name("etdir")));
    let policies = dir.0.join("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    let policy = policies.join("policy.yaml");
    write(&policy, &deny_and_allow(s.ipv4));
    let endpoints = dir.0.join("endpoints.yaml");
    write(
        &endpoints,
        &format!(
            "endpoints:\n  - {{name: a, labels: {{app: a}}, ip: {}, interface: {}}}\n  - {{name: b, labels: {{app: b}}, ip: {}, interface: {}}}\n",
            a.ipv4, a.host_if, b.ipv4, b.host_if
        ),
    );
    let bpf = BpfRoot(dir.0.join("bpf"));
    let bpf_root = bpf.0.to_string_lossy().into_owned();
    let args = [
        "--policies",
        &policies.to_string_lossy(),
        "--endpoints",
        &endpoints.to_string_lossy(),
        "--bpf-root",
        &bpf_root,
        "--hubble-listen-address",
        "127.0.0.1:0",
        "--node-name",
        "lab-node",
        "--reload-interval",
        "100ms",
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Agent::start(&args);
    agent.wait_log(&format!("attached to {}", a.host_if));
    agent.wait_log(&format!("attached to {}", b.host_if));

    assert!(!curl(&a, s.ipv4), "a reached the protected server");
    assert!(curl(&b, s.ipv4), "b could not reach the server");
    eventually("the flows are served", || {
        let flows = agent.observe();
        flows.contains("default/a:") && flows.contains("default/b:")
    });
    let flows = agent.observe();
    for want in [
        "policy-verdict:L3-Only EGRESS DENIED",
        "Policy denied by denylist DROPPED (TCP Flags: SYN)",
        "policy-verdict:L3-L4 EGRESS ALLOWED",
        "to-network FORWARDED",
    ] {
        assert!(flows.contains(want), "no {want:?} in:\n{flows}");
    }
    let json = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args([
            "observe",
            "--server",
            &agent.addr,
            "--last",
            "1000",
            "-o",
            "json",
            "--verdict",
            "DROPPED",
        ])
        .output()
        .expect("observe json");
    let json = String::from_utf8_lossy(&json.stdout);
    assert!(
        json.contains(r#""egress_denied_by":[{"name":"a-no-metadata","namespace":"default","kind":"CiliumNetworkPolicy"}]"#)
            || json.contains("a-no-metadata"),
        "{json}"
    );

    // An invalid edit is reported with file, line and field; the last good version stays.
    write(
        &policy,
        &deny_and_allow(s.ipv4).replace(&format!("{}/32]", s.ipv4), "not-a-cidr]"),
    );
    let err = agent.wait_log("policy error:");
    assert!(
        err.contains("policy.yaml:7:") && err.contains("toCIDR"),
        "{err}"
    );
    agent.wait_log("its last good version stays in force");
    assert!(!curl(&a, s.ipv4), "an invalid edit opened the deny");

    // Removing the deny opens a's access, within the reload interval and a resolve.
    write(
        &policy,
        deny_and_allow(s.ipv4)
            .split("---")
            .nth(1)
            .unwrap_or_default(),
    );
    let took = eventually("a can reach the server", || curl(&a, s.ipv4));
    eprintln!("policy file change to enforcement, seen from a pod: {took:?}");

    // Deny again, then kill the agent: a stays denied the whole time, with no gap.
    write(&policy, &deny_and_allow(s.ipv4));
    eventually("a is denied again", || !curl(&a, s.ipv4));
    agent.kill();
    for _ in 0..5 {
        assert!(!curl(&a, s.ipv4), "a reached the server while no agent ran");
    }
    assert!(curl(&b, s.ipv4), "b lost access while no agent ran");

    // A restarted agent adopts the pins and enforces the same.
    let agent = Agent::start(&args);
    agent.wait_log(&format!("attached to {}", a.host_if));
    assert!(!curl(&a, s.ipv4));
    assert!(curl(&b, s.ipv4));

    // status reads the pins: both programs first (and alone) in each chain, no duplicates
    // after the restart, both endpoints with their policy in place, the counters.
    let status = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(["status", "--bpf-root", &bpf_root])
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    for pod in [&a, &b] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&pod.host_if))
            .unwrap_or_else(|| panic!("no line for {} in:\n{text}", pod.host_if));
        assert!(line.contains("from_pod 1 of 1, to_pod 1 of 1"), "{line}");
    }
    assert!(text.contains("Endpoints:    2"), "{text}");
    assert!(
        text.contains("169.254.169.254/32"),
        "IMDS is not closed by default:\n{text}"
    );
    let json = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(["status", "--bpf-root", &bpf_root, "-o", "json"])
        .output()
        .expect("status json");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status -o json");
    assert!(v["counters"]["denied"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert_eq!(v["endpoints"].as_array().map(Vec::len), Some(2));
    drop(agent);
    drop(bpf);
}
