//! `imdsguard policy whatif` against a running agent (no root: the agent replays recorded flows
//! into its ring and serves them over Hubble's API): the report, the exit codes, candidates in
//! audit mode judged as enforced, and flows the agent let through as AUDIT.

mod common;

use common::agent::Agent;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An agent replaying `flows` once into its ring, on an ephemeral port, with every flow in.
fn agent(flows: &Path, expect: usize) -> Agent {
    let agent = Agent::start(&[
        "--replay-flows",
        &flows.to_string_lossy(),
        "--hubble-listen-address",
        "127.0.0.1:0",
        "--hubble-socket-path",
        "",
        "--node-name",
        "whatif-node",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.observe().lines().count() < expect {
        assert!(
            Instant::now() < deadline,
            "the ring never held {expect} flows"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent
}

fn whatif(server: &str, args: &[&str]) -> (i32, String, String) {
    let o: Output = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .current_dir(root())
        .args(["policy", "whatif", "--server", server])
        .args(args)
        .output()
        .expect("run whatif");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const SEED_POLICIES: [&str; 3] = [
    "examples/azure-imds/cidrgroup.yaml",
    "examples/azure-imds/azure-imds-deny.yaml",
    "examples/azure-imds/azure-imds-allow.yaml",
];

/// A temporary directory, removed on drop.
struct Dir(PathBuf);
impl Dir {
    fn new(name: &str) -> Dir {
        let p =
            std::env::temp_dir().join(format!("imdsguard-whatif-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&p).expect("mkdir");
        Dir(p)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn whatif_reports_what_enforcing_the_seed_would_break() {
    let mut agent = agent(&root().join("tests/flows/before-policies.jsonl"), 141);
    let mut args = SEED_POLICIES.to_vec();
    args.push("--fail-on-break");
    let (code, out, err) = whatif(&agent.addr, &args);
    assert_eq!(code, 1, "something breaks: exit 1\n{out}{err}");
    assert!(
        out.contains(
            "go-webapp/go-webapp → 169.254.169.254:80 GET /metadata/instance: allowed → DENIED (azure-imds-deny), 6 flows"
        ),
        "grouped by workload, destination and route, with counts:\n{out}"
    );
    assert!(out.contains("newly allowed: 0"), "{out}");
    assert!(
        out.contains("Enforcing these policies would deny"),
        "the answer ends the report:\n{out}"
    );
    // Fluent Bit's token request is not among the changes.
    let changes = out.split("Changes:").nth(1).unwrap_or_default();
    assert!(!changes.contains("oauth2/token"), "{out}");

    // Without --fail-on-break the same report exits 0; JSON says `breaks`.
    let (code, _, _) = whatif(&agent.addr, &SEED_POLICIES);
    assert_eq!(code, 0);
    let mut json = SEED_POLICIES.to_vec();
    json.extend(["-o", "json", "--last", "141"]);
    let (code, out, err) = whatif(&agent.addr, &json);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(doc["breaks"], true);
    assert_eq!(doc["totals"]["flows"], 141);
    assert!(doc["totals"]["newly_denied"].as_u64() > Some(0), "{doc}");

    // --last judges only the newest flows.
    let mut last = SEED_POLICIES.to_vec();
    last.extend(["-o", "json", "--last", "5"]);
    let (_, out, _) = whatif(&agent.addr, &last);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(doc["totals"]["flows"], 5, "{doc}");

    // A candidate that selects nothing breaks nothing: exit 0 even with --fail-on-break.
    let dir = Dir::new("none");
    let none = dir.0.join("none.yaml");
    std::fs::write(
        &none,
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: deny-nobody}\nspec:\n  endpointSelector: {matchLabels: {app: nobody}}\n  egressDeny: [{toCIDR: [169.254.169.254/32]}]\n",
    )
    .expect("write");
    let (code, out, err) = whatif(&agent.addr, &[&none.to_string_lossy(), "--fail-on-break"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Enforcing these policies would deny nothing that passed"),
        "{out}"
    );
    agent.kill();
}

#[test]
fn candidates_in_audit_mode_are_judged_as_enforced_and_audit_flows_count_as_passed() {
    let dir = Dir::new("audit");
    // The sidecar's IMDS calls as an agent in audit mode reports them: AUDIT, they passed.
    let audited: String = std::fs::read_to_string(root().join("tests/flows/before-policies.jsonl"))
        .expect("flows")
        .lines()
        .map(|l| {
            if l.contains("\"pod_name\":\"go-webapp-847857f68-2qlnd\"")
                && l.contains("\"destination\":\"169.254.169.254\"")
            {
                l.replacen("\"verdict\":\"FORWARDED\"", "\"verdict\":\"AUDIT\"", 1)
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(audited.contains("\"AUDIT\""));
    let flows = dir.0.join("audited.jsonl");
    std::fs::write(&flows, audited + "\n").expect("write");
    // The deny, annotated for audit mode: whatif ignores the annotation.
    let deny = std::fs::read_to_string(root().join("examples/azure-imds/azure-imds-deny.yaml"))
        .expect("deny");
    let annotated = deny.replacen(
        "  annotations:\n",
        "  annotations:\n    policy.imdsguard.io/audit-mode: \"true\"\n",
        1,
    );
    assert_ne!(annotated, deny, "the example has annotations");
    let candidate = dir.0.join("deny-audit.yaml");
    std::fs::write(&candidate, annotated).expect("write");
    let mut agent = agent(&flows, 141);
    let (code, out, err) = whatif(
        &agent.addr,
        &[
            &root().join(SEED_POLICIES[0]).to_string_lossy(),
            &candidate.to_string_lossy(),
            "--fail-on-break",
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("CiliumClusterwideNetworkPolicy azure-imds-deny: audit annotation ignored: candidates are judged as enforced"),
        "{out}"
    );
    assert!(
        out.contains("go-webapp/go-webapp → 169.254.169.254:80 GET /metadata/instance: AUDITED → DENIED (azure-imds-deny)"),
        "what passed in audit mode would be denied:\n{out}"
    );
    agent.kill();
}

#[test]
fn whatif_errors_exit_2() {
    // Nothing listens on port 1.
    let (code, _, err) = whatif("127.0.0.1:1", &[SEED_POLICIES[1]]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("reading flows from 127.0.0.1:1"), "{err}");
    let (code, _, err) = whatif("127.0.0.1:1", &["--tls-server-name", "x", SEED_POLICIES[1]]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls"), "{err}");
}
