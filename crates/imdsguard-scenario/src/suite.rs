//! `imdsguard policy test`: every scenario among a set of files, run, with one line per failure
//! (and per passing case when verbose) and a closing count, as `go test` reports.
//!
//! Reading the policy files a scenario names is the caller's (`load`), so this stays free of I/O.

use crate::{PolicyInput, is_manifest, parse, run};
use imdsguard_manifest::Source;
use std::fmt::Write;
use std::path::Path;

/// Cases that passed and failed (a scenario that cannot be read counts as one failure).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
}

/// Runs the scenarios among `files` (manifests, and whatever `skip` says, are not scenarios),
/// writing the report to `out`. `load` reads a policy file or directory a scenario names,
/// relative to the scenario's own file.
pub fn run_suite(
    files: Vec<Source>,
    skip: impl Fn(&Source) -> bool,
    load: impl Fn(&Path) -> Result<Vec<Source>, String>,
    verbose: bool,
    out: &mut String,
) -> Totals {
    let mut t = Totals::default();
    for src in files.into_iter().filter(|s| !is_manifest(s) && !skip(s)) {
        let scenario = match parse(&src) {
            Ok(s) => s,
            Err(e) => {
                let _ = writeln!(out, "FAIL {e}");
                t.failed += 1;
                continue;
            }
        };
        let base = Path::new(&*src.name)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut policy_sources = Vec::new();
        let mut load_error = None;
        for p in &scenario.policies {
            match p {
                PolicyInput::File(f) => match load(&base.join(f)) {
                    Ok(s) => policy_sources.extend(s),
                    Err(e) => load_error = Some(e),
                },
                PolicyInput::Inline { name, text } => {
                    policy_sources.push(Source::new(name.as_str(), text.as_str()))
                }
            }
        }
        if let Some(e) = load_error {
            let _ = writeln!(out, "FAIL {}: {}: {e}", src.name, scenario.name);
            t.failed += 1;
            continue;
        }
        let report = run(&scenario, &policy_sources);
        for e in &report.errors {
            let _ = writeln!(out, "FAIL {}: {}: {e}", src.name, scenario.name);
        }
        for o in &report.outcomes {
            let loc = if o.line > 0 {
                format!("{}:{}", src.name, o.line)
            } else {
                src.name.to_string()
            };
            if !o.passed {
                let _ = writeln!(out, "FAIL {loc}: {o}");
            } else if verbose {
                let _ = writeln!(out, "ok   {loc}: {}", o.case);
            }
        }
        t.passed += report.passed();
        t.failed += report.failed();
    }
    let _ = writeln!(out, "{} passed, {} failed", t.passed, t.failed);
    t
}
