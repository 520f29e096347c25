//! `imdsguard demo` runs the seed's story with real traffic and prints what the seed shows: the
//! sidecar's calls denied by the denylist, Fluent Bit's token request through the L7 proxy, and
//! no denied flows after the fix. It leaves nothing behind.

use imdsguard_netns::can_create_namespaces;
use std::process::Command;

#[test]
fn the_demo_tells_the_seed_story_and_cleans_up() {
    if !can_create_namespaces() {
        eprintln!("skipped: the demo needs root");
        return;
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let rules_before = imdsguard_netns::run("ip", &["rule", "show"]).unwrap_or_default();
    let out = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .current_dir(&repo)
        .arg("demo")
        .output()
        .expect("run the demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
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
    // The webapp's flows name its identity, and IMDS's CIDR identity once the group exists.
    assert!(
        text.contains("<> 169.254.169.254:80 (ID:16777217) policy-verdict:L3-Only EGRESS DENIED"),
        "{text}"
    );
    assert_eq!(
        imdsguard_netns::run("ip", &["rule", "show"]).unwrap_or_default(),
        rules_before
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
}
