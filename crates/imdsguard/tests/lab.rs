//! Root tests of `imdsguard lab`: pods reach the lab's IMDS emulator and nothing else changes on
//! the machine; containers run in cgroups of their own and hostNetwork pods in the lab's node;
//! `down` removes everything, and a failed `up` leaves nothing behind.

mod common;

use imdsguard_netns::can_create_namespaces;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Labs route the same mark (0xa00) to their emulators: one lab at a time.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB.lock().unwrap_or_else(|e| e.into_inner())
}

fn imdsguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(args)
        .output()
        .expect("run imdsguard")
}

struct Lab {
    name: String,
    state: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = imdsguard(&[
            "lab",
            "down",
            "--name",
            &self.name,
            "--state-dir",
            &self.state.to_string_lossy(),
        ]);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn leftovers(prefix_netns: &[String]) -> Vec<String> {
    let mut left = Vec::new();
    let netns = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for n in prefix_netns {
        if netns.contains(n) {
            left.push(format!("netns {n}"));
        }
        if Path::new("/sys/class/net").join(n).exists() {
            left.push(format!("link {n}"));
        }
    }
    let rules = imdsguard_netns::run("ip", &["rule", "show"]).unwrap_or_default();
    for n in prefix_netns {
        if rules.contains(&format!("iif {n} ")) {
            left.push(format!("rule for {n}"));
        }
    }
    left.extend(lab_cgroups(&made_id(prefix_netns)));
    left
}

/// The run ID in the lab's names (`lb<id>md` …), which its cgroup subtree's name ends with.
fn made_id(names: &[String]) -> String {
    names
        .iter()
        .find_map(|n| n.strip_prefix("lb")?.strip_suffix("md").map(str::to_owned))
        .unwrap_or_else(|| "no-such-lab".into())
}

/// The lab cgroup subtrees (`imdsguard-lab-<name>-<id>`) of run `id`.
fn lab_cgroups(id: &str) -> Vec<String> {
    let Some(root) = imdsguard_lab::cgroups::v2_root() else {
        return Vec::new();
    };
    std::fs::read_dir(&root)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("imdsguard-lab-") && n.ends_with(&format!("-{id}")))
                .map(|n| format!("cgroup {n}"))
                .collect()
        })
        .unwrap_or_default()
}

/// The namespaces (and host interfaces) `lab up` said it was creating.
fn made_names(progress: &str) -> Vec<String> {
    progress
        .lines()
        .filter_map(|l| {
            let name = l
                .strip_prefix("lab: creating the IMDS namespace ")
                .or_else(|| l.strip_prefix("lab: creating the node namespace "))
                .or_else(|| {
                    l.strip_prefix("lab: creating pod ")
                        .and_then(|r| r.split_once(" (").map(|(_, r)| r))
                })?;
            name.split([' ', ',']).next().map(str::to_owned)
        })
        .collect()
}

fn topology(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("lab.yaml");
    std::fs::write(&p, text).expect("topology");
    p
}

#[test]
fn a_lab_comes_up_serves_imds_to_its_pods_and_goes_down_without_a_trace() {
    if !can_create_namespaces() {
        common::skip("needs root");
        return;
    }
    let _one = one_lab();
    let state = std::env::temp_dir().join(format!("imdsguard-lab-test-{}", std::process::id()));
    std::fs::create_dir_all(&state).expect("mkdir");
    let lab = Lab {
        name: format!("t{}", std::process::id()),
        state: state.clone(),
    };
    let k = 60 + std::process::id() % 100;
    let topo = topology(
        &state,
        &format!(
            "podCIDR: 10.{k}.7.0/24\nendpoints:\n  - {{name: web, namespace: apps, labels: {{app: web}}}}\n  - {{name: job, namespace: apps}}\n"
        ),
    );
    let machine_route =
        imdsguard_netns::run("ip", &["route", "get", "169.254.169.254"]).unwrap_or_default();
    let out = imdsguard(&[
        "lab",
        "up",
        "--name",
        &lab.name,
        "--state-dir",
        &state.to_string_lossy(),
        "--topology",
        &topo.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The machine's own route to its metadata service is untouched.
    assert_eq!(
        imdsguard_netns::run("ip", &["route", "get", "169.254.169.254"]).unwrap_or_default(),
        machine_route
    );
    let exec = imdsguard(&[
        "lab",
        "exec",
        "--name",
        &lab.name,
        "--state-dir",
        &state.to_string_lossy(),
        "web",
        "--",
        "curl",
        "-s",
        "--max-time",
        "3",
        "-H",
        "Metadata: true",
        "http://169.254.169.254/metadata/instance/compute/location?api-version=2021-02-01&format=text",
    ]);
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "westeurope");
    let log =
        std::fs::read_to_string(state.join(&lab.name).join("imds-requests.log")).expect("log");
    assert!(
        log.contains(&format!("10.{k}.7.1:")) && log.contains(" 200"),
        "{log}"
    );
    let st: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join(&lab.name).join("state.json")).expect("state"),
    )
    .expect("json");
    let names: Vec<String> = st["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .chain([&st["imds"], &st["node"]])
        .filter_map(|p| p["netns"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names.len(), 4);
    let endpoints =
        std::fs::read_to_string(state.join(&lab.name).join("endpoints.yaml")).expect("endpoints");
    assert!(endpoints.contains("interface:"), "{endpoints}");

    let down = imdsguard(&[
        "lab",
        "down",
        "--name",
        &lab.name,
        "--state-dir",
        &state.to_string_lossy(),
    ]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(leftovers(&names), Vec::<String>::new());
    assert!(!state.join(&lab.name).exists());
}

#[test]
fn a_failed_up_takes_down_what_it_made() {
    if !can_create_namespaces() {
        common::skip("needs root");
        return;
    }
    let _one = one_lab();
    let state = std::env::temp_dir().join(format!("imdsguard-lab-fail-{}", std::process::id()));
    std::fs::create_dir_all(&state).expect("mkdir");
    let lab = Lab {
        name: format!("f{}", std::process::id()),
        state: state.clone(),
    };
    // Two pods with one address: the second pod's host route cannot be added.
    let k = 60 + std::process::id() % 100;
    let topo = topology(
        &state,
        &format!("endpoints:\n  - {{name: a, ip: 10.{k}.8.2}}\n  - {{name: b, ip: 10.{k}.8.2}}\n"),
    );
    let out = imdsguard(&[
        "lab",
        "up",
        "--name",
        &lab.name,
        "--state-dir",
        &state.to_string_lossy(),
        "--topology",
        &topo.to_string_lossy(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("taking down what was made"), "{err}");
    assert!(!state.join(&lab.name).exists(), "state left behind");
    // Everything it made, named in its progress lines, is gone again.
    let made = made_names(&err);
    assert!(made.len() >= 2, "{err}");
    assert_eq!(leftovers(&made), Vec::<String>::new());
}

#[test]
fn an_interrupted_up_takes_down_what_it_made() {
    use std::io::{BufRead, BufReader};
    if !can_create_namespaces() {
        common::skip("needs root");
        return;
    }
    let _one = one_lab();
    let state = std::env::temp_dir().join(format!("imdsguard-lab-int-{}", std::process::id()));
    std::fs::create_dir_all(&state).expect("mkdir");
    let lab = Lab {
        name: format!("i{}", std::process::id()),
        state: state.clone(),
    };
    let k = 60 + std::process::id() % 100;
    let pods: String = (0..20)
        .map(|i| format!("  - {{name: p{i}, namespace: apps}}\n"))
        .collect();
    let topo = topology(
        &state,
        &format!("podCIDR: 10.{k}.9.0/24\nendpoints:\n{pods}"),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args([
            "lab",
            "up",
            "--name",
            &lab.name,
            "--state-dir",
            &state.to_string_lossy(),
            "--topology",
            &topo.to_string_lossy(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("lab up");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let mut signalled = false;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if !signalled && line.contains("creating pod apps/p2 ") {
            // SIGINT to the process this test started, as Ctrl-C would.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            signalled = true;
        }
        seen.push(line);
    }
    let status = child.wait().expect("wait");
    let err = seen.join("\n");
    assert!(signalled, "{err}");
    assert!(!status.success(), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let made = made_names(&err);
    assert!(made.len() >= 3, "{err}");
    assert_eq!(leftovers(&made), Vec::<String>::new());
    assert!(!state.join(&lab.name).exists(), "state left behind");
}

/// `lab exec` in `pod` (container `container`), its stdout.
fn lab_exec(lab: &Lab, pod: &str, container: Option<&str>, argv: &[&str]) -> Output {
    let state = lab.state.to_string_lossy().into_owned();
    let mut args = vec![
        "lab",
        "exec",
        "--name",
        &lab.name,
        "--state-dir",
        &state,
        pod,
    ];
    if let Some(c) = container {
        args.extend(["-c", c]);
    }
    args.push("--");
    args.extend_from_slice(argv);
    imdsguard(&args)
}

/// The `0::` line of /proc/self/cgroup, as a command run through `lab exec` sees it.
fn own_cgroup(lab: &Lab, pod: &str, container: Option<&str>) -> String {
    let out = lab_exec(lab, pod, container, &["grep", "^0::", "/proc/self/cgroup"]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn containers_run_in_cgroups_of_their_own_and_host_network_pods_in_the_lab_node() {
    if !can_create_namespaces() {
        common::skip("needs root");
        return;
    }
    let _one = one_lab();
    let Some(v2) = imdsguard_lab::cgroups::v2_root() else {
        common::skip("no cgroup v2 hierarchy");
        return;
    };
    let state = std::env::temp_dir().join(format!("imdsguard-lab-cg-{}", std::process::id()));
    std::fs::create_dir_all(&state).expect("mkdir");
    let lab = Lab {
        name: format!("c{}", std::process::id()),
        state: state.clone(),
    };
    let k = 60 + std::process::id() % 100;
    let topo = topology(
        &state,
        &format!(
            "podCIDR: 10.{k}.10.0/24\n\
             aliases: {{envoy: curl}}\n\
             endpoints:\n  - {{name: web, namespace: apps}}\n  - {{name: agent, namespace: monitoring, hostNetwork: true}}\n\
             containers:\n  web:\n    - {{name: app, command: [sleep, '300']}}\n    - {{name: sidecar, command: [sleep, '300']}}\n  \
             agent:\n    - {{name: collector, command: [sleep, '300']}}\n"
        ),
    );
    let out = imdsguard(&[
        "lab",
        "up",
        "--name",
        &lab.name,
        "--state-dir",
        &state.to_string_lossy(),
        "--topology",
        &topo.to_string_lossy(),
    ]);
    let progress = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{progress}");
    let hint = String::from_utf8_lossy(&out.stdout);
    assert!(
        hint.contains("--cgroup-root ") && hint.contains("--host-network-pods enforce"),
        "{hint}"
    );
    let st: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join(&lab.name).join("state.json")).expect("state"),
    )
    .expect("json");
    let root = std::path::PathBuf::from(st["cgroup_root"].as_str().expect("a cgroup root"));
    assert_eq!(root.parent(), Some(v2.as_path()), "{st}");
    let rel = format!("0::/{}", root.file_name().expect("name").to_string_lossy());

    // Each container's process is in its cgroup; exec joins the one asked for (default: the
    // first), and the node's processes one of no pod.
    for p in st["processes"].as_array().expect("processes") {
        let Some(cg) = p["cgroup"].as_str() else {
            continue;
        };
        let pid = p["pid"].as_u64().expect("pid");
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
        let want = format!(
            "0::/{}",
            std::path::Path::new(cg)
                .strip_prefix(&v2)
                .expect("below")
                .display()
        );
        assert!(own.lines().any(|l| l == want), "{own} vs {want}");
    }
    assert_eq!(
        own_cgroup(&lab, "web", Some("sidecar")),
        format!("{rel}/web/sidecar")
    );
    assert_eq!(own_cgroup(&lab, "web", None), format!("{rel}/web/app"));
    assert_eq!(
        own_cgroup(&lab, "agent", None),
        format!("{rel}/agent/collector")
    );
    assert_eq!(own_cgroup(&lab, "node", None), format!("{rel}/_node"));
    let wrong = lab_exec(&lab, "web", Some("nope"), &["true"]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("its containers: app, sidecar"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );

    // The hostNetwork pod shares the lab's node namespace (not the machine's): it has the node's
    // address, and reaches the emulator through the lab's route; the alias runs as curl.
    let node_ip = format!("10.{k}.10.254");
    let addrs = lab_exec(
        &lab,
        "agent",
        None,
        &["ip", "-o", "-4", "addr", "show", "eth0"],
    );
    assert!(
        String::from_utf8_lossy(&addrs.stdout).contains(&node_ip),
        "{addrs:?}"
    );
    let url = "http://169.254.169.254/metadata/instance/compute/location?api-version=2021-02-01&format=text";
    for (pod, container) in [("agent", None), ("web", Some("sidecar")), ("node", None)] {
        let got = lab_exec(
            &lab,
            pod,
            container,
            &[
                "envoy",
                "-s",
                "--max-time",
                "3",
                "-H",
                "Metadata: true",
                url,
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            "westeurope",
            "{pod}: {got:?}"
        );
    }
    let log =
        std::fs::read_to_string(state.join(&lab.name).join("imds-requests.log")).expect("log");
    assert!(log.contains(&format!("{node_ip}:")), "{log}");

    // The agent's endpoints file: containers with their cgroups; the hostNetwork pod without
    // interface or address.
    let endpoints =
        std::fs::read_to_string(state.join(&lab.name).join("endpoints.yaml")).expect("endpoints");
    let parsed = imdsguard_policy::endpoints_file::parse_endpoints(
        &imdsguard_manifest::Source::new("endpoints.yaml", endpoints.clone()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{endpoints}"));
    let web = &parsed.endpoints[0];
    let agent = &parsed.endpoints[1];
    assert_eq!(
        web.containers
            .iter()
            .map(|c| c.cgroup.clone())
            .collect::<Vec<_>>(),
        [root.join("web/app"), root.join("web/sidecar")]
    );
    assert!(web.interface.is_some() && !web.host_network);
    assert!(agent.host_network && agent.interface.is_none() && agent.spec.ips.is_empty());
    assert_eq!(agent.containers[0].cgroup, root.join("agent/collector"));

    let names: Vec<String> = st["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .chain([&st["imds"], &st["node"]])
        .filter_map(|p| p["netns"].as_str().map(str::to_owned))
        .collect();
    let down = imdsguard(&[
        "lab",
        "down",
        "--name",
        &lab.name,
        "--state-dir",
        &state.to_string_lossy(),
    ]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(!root.exists(), "{} left behind", root.display());
    assert_eq!(leftovers(&names), Vec::<String>::new());
}
