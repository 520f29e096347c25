//! `imdsguard demo` runs the seed's story with real traffic and prints what the seed shows, and
//! what the seed's engineer had to guess: the first step names the container (istio-proxy) and the
//! process (pilot-agent) that called IMDS. Then the sidecar's calls denied by the denylist, Fluent Bit's token request through the L7 proxy, and
//! no denied flows after the fix. It leaves nothing behind, and it works after an agent of an
//! older build left the proxy's routing rule at whatever priority the kernel picked.

mod common;

use imdsguard_netns::can_create_namespaces;
use imdsguard_proxy::routing::{MARK, TABLE};
use std::process::Command;

/// Our routing rule at priority 32765, as an agent that ran on a node with no other rules left it
/// before the rule had a fixed priority: the lab's rules (priority 90) used to come first and
/// route redirected SYNs past the proxy. Removed on drop, if the test added it.
struct StaleRule(bool);

impl StaleRule {
    fn add() -> StaleRule {
        if imdsguard_proxy::routing::installed(TABLE) {
            return StaleRule(false);
        }
        let mark = format!("{MARK:#x}/0xf00");
        let table = TABLE.to_string();
        imdsguard_netns::run(
            "ip",
            &[
                "rule", "add", "pref", "32765", "fwmark", &mark, "lookup", &table,
            ],
        )
        .expect("add the stale rule");
        StaleRule(true)
    }
}

impl Drop for StaleRule {
    fn drop(&mut self) {
        if self.0 {
            imdsguard_proxy::routing::uninstall(MARK, TABLE);
        }
    }
}

/// `ip rule show` without our own rules (the stale one goes, or moves to its fixed priority).
fn rules_but_ours() -> Vec<String> {
    imdsguard_netns::run("ip", &["rule", "show"])
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.contains(&format!("lookup {TABLE}")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_demo_tells_the_seed_story_and_cleans_up() {
    if !can_create_namespaces() {
        common::skip("the demo needs root");
        return;
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let rules_before = rules_but_ours();
    let _stale = StaleRule::add();
    let child = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .current_dir(&repo)
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the demo");
    let demo_pid = child.id();
    let out = child.wait_with_output().expect("the demo's output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "caller: go-webapp/go-webapp-847857f68-2qlnd [istio-proxy: pilot-agent] → 169.254.169.254:80",
        "go-webapp/go-webapp-847857f68-2qlnd:",
        "policy-verdict:L3-Only EGRESS DENIED (TCP Flags: SYN)",
        "Policy denied by denylist DROPPED (TCP Flags: SYN)",
        "logging/fluent-bit-qg7vq:",
        "policy-verdict:L3-L4 EGRESS ALLOWED (TCP Flags: SYN)",
        "to-proxy FORWARDED (TCP Flags: SYN)",
        "http-request FORWARDED (HTTP/1.1 GET http://169.254.169.254:80/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fapi.kusto.windows.net)",
        "http-response FORWARDED (HTTP/1.1 200 ",
        "fluent-bit token request: HTTP 200",
        "enableDefaultDeny.egress: false",
        "after the fix: 0 denied flows",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    // Step 1's flows carry the container and the process on the compact line (--print-process);
    // no flow names the app container, which never calls IMDS.
    let step1: String = text.split("\n== 2.").next().unwrap_or_default().to_owned();
    assert!(
        step1
            .lines()
            .any(|l| l.contains("go-webapp-847857f68-2qlnd:")
                && l.contains("istio-proxy")
                && l.contains("pilot-agent")),
        "{step1}"
    );
    assert!(!step1.contains("[app:"), "{step1}");
    // The webapp's flows name its identity, and IMDS's CIDR identity once the group exists.
    assert!(
        text.contains("<> 169.254.169.254:80 (ID:16777217) policy-verdict:L3-Only EGRESS DENIED"),
        "{text}"
    );
    assert_eq!(rules_but_ours(), rules_before);
    let ours: Vec<String> = imdsguard_netns::run("ip", &["rule", "show"])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("lookup {TABLE}")))
        .map(str::to_owned)
        .collect();
    assert!(
        ours.iter().all(|l| l.starts_with("9:")),
        "our rule is not at its fixed priority: {ours:?}"
    );
    let leftovers: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.iter().all(|n| !n.starts_with("lb")),
        "{leftovers:?}"
    );
    // The lab's cgroups went with it (the demo's lab is `demo<pid>`, its cgroups
    // `imdsguard-lab-demo<pid>-<id>`).
    if let Some(v2) = imdsguard_lab::cgroups::v2_root() {
        let left: Vec<String> = std::fs::read_dir(&v2)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&format!("imdsguard-lab-demo{demo_pid}-")))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(left, Vec::<String>::new());
    }
}
