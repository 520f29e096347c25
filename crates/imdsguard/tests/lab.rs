//! Root tests of `imdsguard lab`: pods reach the lab's IMDS emulator and nothing else changes on
//! the machine; `down` removes everything, and a failed `up` leaves nothing behind.

mod common;

use imdsguard_netns::can_create_namespaces;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    left
}

/// The namespaces (and host interfaces) `lab up` said it was creating.
fn made_names(progress: &str) -> Vec<String> {
    progress
        .lines()
        .filter_map(|l| {
            let name = l
                .strip_prefix("lab: creating the IMDS namespace ")
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
        .chain(std::iter::once(&st["imds"]))
        .filter_map(|p| p["netns"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names.len(), 3);
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
