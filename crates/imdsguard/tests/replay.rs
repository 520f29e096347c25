//! `imdsguard replay` end to end: the seed's recorded traffic under the seed's policies.

mod support;

use support::{TempDir, imdsguard, json, stderr, stdout};

const FLOWS: &str = "tests/flows/before-policies.jsonl";
const GROUP: &str = "examples/azure-imds/cidrgroup.yaml";
const DENY: &str = "examples/azure-imds/azure-imds-deny.yaml";
const ALLOW: &str = "examples/azure-imds/azure-imds-allow.yaml";

#[test]
fn the_sidecar_would_be_denied_and_the_token_request_stays_allowed() {
    let o = imdsguard(&["replay", "--flows", FLOWS, "--policies", GROUP, DENY, ALLOW]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(
        out.starts_with(
            "Replayed 141 flows from tests/flows/before-policies.jsonl under 2 policies and 1 CIDR group.\n"
        ),
        "{out}"
    );
    // The Istio-like sidecar's platform detection: every route it probes is now denied.
    for route in [
        "GET /metadata/instance",
        "GET /",
        "PUT /latest/api/token",
        "GET /latest/meta-data/iam/info",
    ] {
        let line = format!(
            "  go-webapp/go-webapp-847857f68-2qlnd → 169.254.169.254:80 {route}: allowed → DENIED (azure-imds-deny), "
        );
        assert!(out.contains(&line), "no {line:?} in\n{out}");
    }
    assert!(
        out.contains("GET /metadata/instance: allowed → DENIED (azure-imds-deny), 6 flows"),
        "{out}"
    );
    // Fluent Bit's token request is not a change, so it is not listed.
    assert!(!out.contains("fluent-bit"), "{out}");
    assert!(out.contains("  newly allowed: 0\n"), "{out}");
}

#[test]
fn details_show_the_token_request_still_allowed() {
    let o = imdsguard(&[
        "replay",
        "--flows",
        FLOWS,
        "--policies",
        GROUP,
        DENY,
        ALLOW,
        "--details",
    ]);
    let out = stdout(&o);
    assert!(
        out.contains(
            "  logging/fluent-bit-qg7vq → 169.254.169.254:80 GET /metadata/identity/oauth2/token: \
             allowed (azure-imds-allow, whose HTTP rules only add visibility), 3 flows"
        ),
        "{out}"
    );
    assert!(out.contains("drop reason POLICY_DENY"), "{out}");
}

#[test]
fn json_has_totals_and_groups() {
    let o = imdsguard(&[
        "replay",
        "--flows",
        FLOWS,
        "--policies",
        GROUP,
        DENY,
        ALLOW,
        "-o",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["totals"]["flows"], 141);
    assert_eq!(v["totals"]["newly_allowed"], 0);
    let groups = v["groups"].as_array().expect("groups");
    let token = groups
        .iter()
        .find(|g| {
            g["source"] == "logging/fluent-bit-qg7vq"
                && g["http"] == "GET /metadata/identity/oauth2/token"
        })
        .expect("the token request group");
    assert_eq!(token["before"], "allowed");
    assert_eq!(token["after"], "allowed");
    assert_eq!(token["changed"], false);
    // Flows without process information: no container anywhere.
    assert!(groups.iter().all(|g| g.get("container").is_none()), "{v}");
    let sidecar = groups
        .iter()
        .find(|g| {
            g["source"] == "go-webapp/go-webapp-847857f68-2qlnd"
                && g["http"] == "GET /metadata/instance"
        })
        .expect("the sidecar group");
    assert_eq!(sidecar["after"], "DENIED");
    assert_eq!(sidecar["decided_by"], "azure-imds-deny");
    assert_eq!(sidecar["flows"], 6);
}

#[test]
fn enforcing_the_allow_policy_breaks_the_token_request() {
    let dir = TempDir::new("replay-enforced");
    let allow = std::fs::read_to_string(support::root().join(ALLOW))
        .expect("seed policy")
        .replace("egress: false", "egress: true");
    dir.file("allow.yaml", &allow);
    let o = imdsguard(&[
        "replay",
        "--flows",
        FLOWS,
        "--policies",
        GROUP,
        dir.path(),
        "--endpoints",
        "examples/azure-imds/lab.yaml",
        "--group-by",
        "workload",
    ]);
    let out = stdout(&o);
    assert!(
        out.contains(
            "  logging/fluent-bit → 169.254.169.254:80 GET /metadata/identity/oauth2/token: \
             allowed → HTTP 403 (HTTP rules of azure-imds-allow), 3 flows"
        ),
        "{out}"
    );
    assert!(
        out.contains("  logging/fluent-bit → kube-system/coredns-6f9c8d7b5-xk4lp:53/UDP: allowed → DENIED (default deny)"),
        "{out}"
    );
}

#[test]
fn bare_flow_objects_and_stdin_are_read() {
    let dir = TempDir::new("replay-bare");
    let text = std::fs::read_to_string(support::root().join(FLOWS)).expect("fixture");
    let bare: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["flow"].to_string()
        })
        .collect();
    let path = dir.file("bare.jsonl", &(bare.join("\n") + "\n"));
    let o = imdsguard(&[
        "replay",
        "--flows",
        &path,
        "--policies",
        GROUP,
        DENY,
        ALLOW,
        "-o",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["totals"]["flows"], 141);
    assert_eq!(json(&o)["totals"]["changed"], 64);

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args([
            "replay",
            "--flows",
            "-",
            "--policies",
            GROUP,
            DENY,
            ALLOW,
            "-o",
            "json",
        ])
        .current_dir(support::root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running imdsguard");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("writing flows");
    }
    let o = child.wait_with_output().expect("imdsguard output");
    assert!(o.status.success());
    assert_eq!(json(&o)["totals"]["changed"], 64);
}

#[test]
fn a_missing_flow_file_exits_two() {
    let o = imdsguard(&["replay", "--flows", "no/such.jsonl", "--policies", GROUP]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no/such.jsonl"), "{}", stderr(&o));
}

#[test]
fn the_summary_lists_the_largest_changes_and_details_list_all() {
    let dir = TempDir::new("replay-many");
    let text = std::fs::read_to_string(support::root().join(FLOWS)).expect("fixture");
    let first = text.lines().next().expect("a flow");
    let lines: Vec<String> = (0..25)
        .map(|i| {
            let copies = if i == 0 { 3 } else { 1 };
            vec![first.replace("go-webapp-847857f68-2qlnd", &format!("go-webapp-{i}")); copies]
                .join("\n")
        })
        .collect();
    let path = dir.file("many.jsonl", &(lines.join("\n") + "\n"));
    let o = imdsguard(&["replay", "--flows", &path, "--policies", GROUP, DENY, ALLOW]);
    let out = stdout(&o);
    let changes = out
        .lines()
        .filter(|l| l.contains("allowed → DENIED"))
        .count();
    assert_eq!(changes, 20, "{out}");
    // The largest group comes first.
    assert!(
        out.contains("Changes:\n  go-webapp/go-webapp-0 → 169.254.169.254:80: allowed → DENIED (azure-imds-deny), 3 flows\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "  … and 5 more (--details lists them all; --group-by workload merges replicas)"
        ),
        "{out}"
    );
    let o = imdsguard(&[
        "replay",
        "--flows",
        &path,
        "--policies",
        GROUP,
        DENY,
        ALLOW,
        "--details",
    ]);
    let changes = stdout(&o)
        .lines()
        .filter(|l| l.contains("allowed → DENIED"))
        .count();
    assert_eq!(changes, 25);
    let o = imdsguard(&[
        "replay",
        "--flows",
        &path,
        "--policies",
        GROUP,
        DENY,
        ALLOW,
        "--group-by",
        "workload",
    ]);
    assert!(
        stdout(&o).contains("  go-webapp/go-webapp → 169.254.169.254:80: allowed → DENIED (azure-imds-deny), 27 flows"),
        "{}",
        stdout(&o)
    );
}

/// The seed's recording as imdsguard would record it: the webapp pod's calls to IMDS carry its
/// sidecar's container and process (`Flow.extensions`), everything else carries nothing.
fn attributed_recording(dir: &TempDir) -> String {
    use imdsguard_hubble_proto::observer::GetFlowsResponse;
    use imdsguard_hubble_proto::observer::get_flows_response::ResponseTypes;
    use imdsguard_hubble_proto::process::{self, ProcessInfo};
    let text = std::fs::read_to_string(support::root().join(FLOWS)).expect("fixture");
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut resp: GetFlowsResponse = serde_json::from_str(line).expect("a flow line");
        let mut attributed = false;
        if let Some(ResponseTypes::Flow(f)) = &mut resp.response_types {
            let webapp = f
                .source
                .as_ref()
                .is_some_and(|s| s.pod_name == "go-webapp-847857f68-2qlnd");
            let imds =
                f.ip.as_ref()
                    .is_some_and(|i| i.destination == "169.254.169.254");
            if webapp && imds {
                process::set(
                    f,
                    &ProcessInfo {
                        container: "istio-proxy".into(),
                        process: "envoy".into(),
                        pid: 4242,
                        uid: Some(1337),
                    },
                );
                attributed = true;
            }
        }
        if attributed {
            out.push_str(&serde_json::to_string(&resp).expect("encodes"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    dir.file("attributed.jsonl", &out)
}

#[test]
fn groups_name_the_container_that_sent_the_flows() {
    let dir = TempDir::new("replay-containers");
    let path = attributed_recording(&dir);
    let o = imdsguard(&["replay", "--flows", &path, "--policies", GROUP, DENY, ALLOW]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(
        out.contains(
            "  go-webapp/go-webapp-847857f68-2qlnd [istio-proxy] → 169.254.169.254:80 GET /metadata/instance: allowed → DENIED (azure-imds-deny), 6 flows\n"
        ),
        "{out}"
    );
    // The same totals as the recording without process information.
    let plain = imdsguard(&["replay", "--flows", FLOWS, "--policies", GROUP, DENY, ALLOW]);
    let totals = |s: &str| {
        s.lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(totals(&out), totals(&stdout(&plain)));
    // The webapp's other traffic (DNS) carries nothing and groups as before.
    let o = imdsguard(&[
        "replay",
        "--flows",
        &path,
        "--policies",
        GROUP,
        DENY,
        ALLOW,
        "--details",
    ]);
    let out = stdout(&o);
    assert!(
        out.contains("  go-webapp/go-webapp-847857f68-2qlnd → kube-system/coredns-"),
        "{out}"
    );
    assert!(
        !out.contains("[istio-proxy] → kube-system/coredns-"),
        "{out}"
    );

    let o = imdsguard(&[
        "replay",
        "--flows",
        &path,
        "--policies",
        GROUP,
        DENY,
        ALLOW,
        "-o",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let groups = v["groups"].as_array().expect("groups");
    let sidecar = groups
        .iter()
        .find(|g| {
            g["source"] == "go-webapp/go-webapp-847857f68-2qlnd"
                && g["http"] == "GET /metadata/instance"
        })
        .expect("the sidecar group");
    assert_eq!(sidecar["container"], "istio-proxy");
    assert_eq!(sidecar["flows"], 6);
    let fluent = groups
        .iter()
        .find(|g| g["source"] == "logging/fluent-bit-qg7vq")
        .expect("fluent-bit");
    assert!(fluent.get("container").is_none(), "{fluent}");
}
