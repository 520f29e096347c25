//! The web UI in a real browser: the agent replays flows with `--ui-listen-address`, and
//! tests/ui/ui.test.mjs drives Debian's chromium through playwright-core against it (page, table,
//! filters, keyboard, map, IMDS view, narrow window; then a full-speed replay of 100,000 flows).
//! Screenshots go to `<target>/ui-artifacts/`.
//!
//! Needs `node`, `chromium` and tests/ui/node_modules (scripts/prereqs.sh installs all three; the
//! test runs `npm ci` itself when node_modules is missing). As root, one more test runs the page
//! against an agent enforcing the seed's policies on the lab (`imdsguard lab up`), with real
//! traffic from the lab's pods.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `<target>/ui-artifacts`, next to the binary under test (so CARGO_TARGET_DIR is honoured).
fn artifacts() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_imdsguard"));
    exe.parent()
        .and_then(Path::parent)
        .map_or_else(|| repo().join("target"), Path::to_path_buf)
        .join("ui-artifacts")
}

/// The browser tests share two cores with their agent: one at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// tests/ui with its node_modules, installed once per run.
fn node_project() -> PathBuf {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let dir = repo().join("tests/ui");
    let ready = READY.get_or_init(|| {
        for (tool, hint) in [
            ("node", "apt-get install nodejs npm"),
            ("chromium", "apt-get install chromium"),
        ] {
            if Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map_or(true, |o| !o.status.success())
            {
                return Err(format!(
                    "{tool} is not installed: run scripts/prereqs.sh (or {hint})"
                ));
            }
        }
        if dir
            .join("node_modules/playwright-core/package.json")
            .exists()
        {
            return Ok(());
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("running npm ci: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "npm ci in tests/ui failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = ready {
        panic!("{e}");
    }
    dir
}

/// An agent started by this test; killed (by its pid) when dropped.
struct Agent {
    child: Child,
    url: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Starts `imdsguard agent <args> --ui-listen-address 127.0.0.1:0` and waits until it has
    /// bound its port and printed a line starting with `ready` (after the UI's own line).
    fn start(args: &[&str], ready: &str) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
            .current_dir(repo())
            .arg("agent")
            .args(args)
            .args([
                "--hubble-listen-address",
                "127.0.0.1:0",
                "--ui-listen-address",
                "127.0.0.1:0",
                "--node-name",
                "ui-test-node",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        let stderr = child.stderr.take().expect("stderr");
        let mut agent = Agent {
            child,
            url: String::new(),
        };
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut log = Vec::new();
        while Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(url) = line.split_once("ui: serving on ").map(|(_, u)| u) {
                agent.url = url.trim_end_matches('/').to_owned();
            }
            let done = !agent.url.is_empty() && line.contains(ready);
            log.push(line);
            if done {
                break;
            }
        }
        assert!(
            !agent.url.is_empty(),
            "the agent did not report its UI address:\n{}",
            log.join("\n")
        );
        // Keep draining stderr so the agent never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        agent
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Runs the browser test in `mode` against `agent`, failing after `limit`; returns its stdout.
fn browser(mode: &str, agent: &Agent, limit: Duration) -> String {
    let dir = node_project();
    let out_dir = artifacts();
    let mut child = Command::new("node")
        .arg(dir.join("ui.test.mjs"))
        .arg(mode)
        .arg(&agent.url)
        .arg(&out_dir)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let read = |pipe: Option<std::process::ChildStdout>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = pipe {
                let _ = std::io::Read::read_to_string(&mut p, &mut s);
            }
            s
        })
    };
    let out = read(stdout);
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = stderr {
            let _ = std::io::Read::read_to_string(&mut p, &mut s);
        }
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for node") {
            break Some(s);
        }
        if Instant::now() > deadline {
            // Only the node process this test started (its chromium exits with it).
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let _ = std::io::stderr().write_all(err.as_bytes());
    match status {
        Some(s) if s.success() => out,
        Some(s) => panic!(
            "browser test {mode} failed ({s}); screenshots in {}\n{out}\n{err}",
            out_dir.display()
        ),
        None => panic!("browser test {mode} took longer than {limit:?}\n{out}\n{err}"),
    }
}

/// tests/flows/seed.jsonl as imdsguard records it: the webapp pods' flows carry their sidecar
/// (`Flow.extensions`, with a socket cookie and cgroup id); the second pod's process has a name
/// that is markup. The rest carry nothing.
fn attributed_seed(dir: &TempDir) -> PathBuf {
    use imdsguard_hubble_proto::observer::GetFlowsResponse;
    use imdsguard_hubble_proto::observer::get_flows_response::ResponseTypes;
    use imdsguard_hubble_proto::process::{self, ProcessInfo};
    let seed = std::fs::read_to_string(repo().join("tests/flows/seed.jsonl")).expect("seed");
    let mut text = String::new();
    for line in seed.lines().filter(|l| !l.trim().is_empty()) {
        let mut resp: GetFlowsResponse = serde_json::from_str(line).expect("seed line");
        if let Some(ResponseTypes::Flow(f)) = &mut resp.response_types {
            let pod = f.source.as_ref().map(|s| s.pod_name.clone());
            let (name, pid, uid) = match pod.as_deref() {
                Some("go-webapp-847857f68-2qlnd") => ("envoy", 4242, 1337),
                Some("go-webapp-8568cffcd4-l5s48") => ("<img src=x>", 5151, 0),
                _ => ("", 0, 0),
            };
            if pid != 0 {
                process::set(
                    f,
                    &ProcessInfo {
                        container: "istio-proxy".into(),
                        process: name.into(),
                        pid,
                        uid: Some(uid),
                    },
                );
                f.socket_cookie = 1 << 40 | 7;
                f.cgroup_id = 120;
            }
        }
        // Every line through one encoder, as one recorder writes them.
        text.push_str(&serde_json::to_string(&resp).expect("encodes"));
        text.push('\n');
    }
    let path = dir.0.join("seed-attributed.jsonl");
    std::fs::write(&path, text).expect("write the flows");
    path
}

#[test]
fn the_page_shows_the_seed_in_table_map_and_imds_view() {
    let _one = one_at_a_time();
    let dir = TempDir::new("imdsguard-ui-seed");
    let flows = attributed_seed(&dir);
    let agent = Agent::start(
        &[
            "--replay-flows",
            flows.to_str().expect("utf-8 path"),
            "--replay-loop",
            "--replay-interval",
            "100ms",
        ],
        "replaying ",
    );
    let out = browser("seed", &agent, Duration::from_secs(180));
    assert!(out.contains("ui seed: ok"), "{out}");
}

/// The page's rows never exceed its cap and it keeps answering while the agent replays 100,000
/// flows of 50 workloads in a loop as fast as it can; the map shows the 50 without overlapping;
/// the agent's memory stays under `RSS_LIMIT_KIB`.
///
/// The bound: the replayed file itself (100,000 decoded flows, about 170 MiB here), the ring
/// (4095 flows), the map and IMDS view (bounded), one stream's batch, and the runtime.
#[test]
fn a_full_speed_replay_keeps_the_page_responsive_and_the_agent_bounded() {
    const RSS_LIMIT_KIB: u64 = 400 * 1024;
    const FLOWS: usize = 100_000;
    const WORKLOADS: usize = 50;
    let _one = one_at_a_time();
    let seed = std::fs::read_to_string(repo().join("tests/flows/seed.jsonl")).expect("seed");
    let lines: Vec<serde_json::Value> = seed
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("seed line"))
        .collect();
    let dir = TempDir::new("imdsguard-ui-load");
    let file = dir.0.join("flows.jsonl");
    let mut text = String::with_capacity(FLOWS * 1100);
    for i in 0..FLOWS {
        // The seed's story told 25 times over (a webapp and a fluent-bit each time, so 50
        // workloads) in 5 namespaces.
        let mut line = lines[i % lines.len()].clone();
        let k = (i / lines.len()) % (WORKLOADS / 2);
        let source = &mut line["flow"]["source"];
        if let Some(pod) = source["pod_name"].as_str().map(str::to_owned) {
            let ns = format!("team-{}", k % 5);
            let workload = format!(
                "{}-{k}",
                source["workloads"][0]["name"].as_str().unwrap_or("app")
            );
            source["namespace"] = ns.clone().into();
            source["pod_name"] =
                format!("{workload}-{}", pod.rsplit('-').next().unwrap_or("x")).into();
            source["workloads"][0]["name"] = workload.into();
            source["labels"] = serde_json::json!([format!("k8s:io.kubernetes.pod.namespace={ns}")]);
        }
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(&file, text).expect("write the flows");

    let agent = Agent::start(
        &[
            "--replay-flows",
            file.to_str().expect("utf-8 path"),
            "--replay-loop",
        ],
        "replaying ",
    );
    let rss_start = agent.rss_kib();
    let rss_max = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_start));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (pid, rss_max, stop) = (agent.child.id(), rss_max.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kib) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    rss_max.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let out = browser("load", &agent, Duration::from_secs(180));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    let rss_end = agent.rss_kib();
    let rss_max = rss_max.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "agent RSS: {} MiB after loading, {} MiB at most, {} MiB at the end; page: {}",
        rss_start / 1024,
        rss_max / 1024,
        rss_end / 1024,
        out.lines().rev().find(|l| l.starts_with('{')).unwrap_or("")
    );
    assert!(out.contains("ui load: ok"), "{out}");
    assert!(
        rss_max < RSS_LIMIT_KIB,
        "the agent's RSS reached {} MiB (limit {} MiB)",
        rss_max / 1024,
        RSS_LIMIT_KIB / 1024
    );
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lab (`imdsguard lab up` with the seed's topology) and what the agent made for it, taken
/// down when dropped.
struct LabStage {
    name: String,
    dir: PathBuf,
    routing_added: bool,
}

impl Drop for LabStage {
    fn drop(&mut self) {
        let state = self.dir.join("lab");
        let _ = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
            .args(["lab", "down", "--name", &self.name, "--state-dir"])
            .arg(&state)
            .output();
        let bpf = self.dir.join("bpf");
        let _ = std::fs::remove_dir_all(bpf.join("imdsguard"));
        let _ = Command::new("umount").arg(&bpf).output();
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.routing_added {
            imdsguard_proxy::routing::uninstall(
                imdsguard_proxy::routing::MARK,
                imdsguard_proxy::routing::TABLE,
            );
        }
    }
}

/// The page against a live agent: the lab's pods call the emulated IMDS by themselves (Fluent
/// Bit's token request every 10 s, the webapp sidecar's platform detection every 15 s) under
/// the seed's policies, and the IMDS view must show both with what the policies decided.
#[test]
fn the_page_shows_the_labs_live_traffic() {
    if !imdsguard_netns::can_create_namespaces() {
        common::skip("the lab needs root");
        return;
    }
    let _one = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("imdsguard-ui-lab-{}", std::process::id()));
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    let stage = LabStage {
        name: format!("ui{}", std::process::id() % 100_000),
        dir: dir.clone(),
        routing_added: !imdsguard_proxy::routing::installed(imdsguard_proxy::routing::TABLE),
    };
    for f in [
        "cidrgroup.yaml",
        "azure-imds-deny.yaml",
        "azure-imds-allow.yaml",
    ] {
        std::fs::copy(repo().join("examples/azure-imds").join(f), policies.join(f))
            .expect("copy a seed policy");
    }
    // A policy in audit mode that no flow names: the page's header still says so, from the
    // agent's state rather than from AUDIT flows.
    std::fs::write(
        policies.join("audit-probe.yaml"),
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: audit-probe\n  annotations: {policy.imdsguard.io/audit-mode: \"true\"}\nspec:\n  endpointSelector: {matchLabels: {app: nobody}}\n  egressDeny: [{toCIDR: [192.0.2.1/32]}]\n",
    )
    .expect("write the audit policy");
    let state = dir.join("lab");
    let up = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .current_dir(repo())
        .args(["lab", "up", "--name", &stage.name, "--state-dir"])
        .arg(&state)
        .output()
        .expect("lab up");
    assert!(
        up.status.success(),
        "lab up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let endpoints = state.join(&stage.name).join("endpoints.yaml");
    // Fluent Bit in audit mode (its endpoint's policyAuditMode): its calls are allowed anyway,
    // so the page must show the mode from the agent's state, on the map and in the IMDS view.
    let text = std::fs::read_to_string(&endpoints).expect("the lab's endpoints file");
    let text: Vec<String> = text
        .lines()
        .map(|l| match l.strip_suffix('}') {
            Some(entry) if l.trim_start().starts_with("- ") && l.contains("fluent-bit-") => {
                format!("{entry}, policyAuditMode: true}}")
            }
            _ => l.to_owned(),
        })
        .collect();
    assert!(
        text.iter().any(|l| l.contains("policyAuditMode: true")),
        "{text:?}"
    );
    std::fs::write(&endpoints, text.join("\n") + "\n").expect("write the endpoints file");
    let bpf = dir.join("bpf");
    let proxy_port = (17500 + std::process::id() % 1000).to_string();
    let agent = Agent::start(
        &[
            "--endpoints",
            endpoints.to_str().expect("utf-8 path"),
            "--policies",
            policies.to_str().expect("utf-8 path"),
            "--bpf-root",
            bpf.to_str().expect("utf-8 path"),
            "--proxy-port",
            &proxy_port,
            "--proxy-upstream-mark",
            "0xa00",
        ],
        "datapath: attached to",
    );
    let out = browser("lab", &agent, Duration::from_secs(180));
    assert!(out.contains("ui lab: ok"), "{out}");
    drop(agent);
    drop(stage);
}
