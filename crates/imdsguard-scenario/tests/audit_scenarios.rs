//! The audit scenarios of tests/scenarios, run here so the engine's audit semantics are checked
//! by this crate's own `cargo test` (the binary's `policy test` runs every scenario too).

use imdsguard_manifest::Source;
use imdsguard_scenario::suite::run_suite;
use std::path::Path;

fn run(file: &str) -> (usize, usize, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/scenarios")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("scenario file");
    let mut out = String::new();
    let t = run_suite(
        vec![Source::new(
            path.display().to_string().as_str(),
            text.as_str(),
        )],
        |_| false,
        |p| Err(format!("{}: only inline policies here", p.display())),
        true,
        &mut out,
    );
    (t.passed, t.failed, out)
}

#[test]
fn audit_per_policy_scenarios_pass() {
    let (passed, failed, out) = run("audit-per-policy.yaml");
    assert_eq!(failed, 0, "{out}");
    assert!(passed >= 12, "{out}");
}

#[test]
fn agent_wide_audit_mode_scenarios_still_pass() {
    let (passed, failed, out) = run("audit-mode.yaml");
    assert_eq!(failed, 0, "{out}");
    assert!(passed > 0, "{out}");
}
