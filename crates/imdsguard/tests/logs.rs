//! The agent's log on stderr: `--log-format json` writes one JSON object per line (`time`,
//! `level`, `msg` and the record's fields), `--log-format text` one `<time> <LEVEL> <msg>` line
//! per record, and `--log-level` (or `RUST_LOG` without it) drops the records below a level. The
//! agent replays recorded flows here, which needs no root.

use imdsguard_hubble_proto::wkt::Timestamp;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The seed's flows with one malformed line, so the agent logs a warning (with an `error` field)
/// next to its info records.
fn flows_with_a_bad_line(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "imdsguard-logs-{name}-{}.jsonl",
        std::process::id()
    ));
    let mut text = std::fs::read_to_string(repo().join("tests/flows/seed.jsonl")).expect("seed");
    text.push_str("{not json\n");
    std::fs::write(&path, text).expect("write the flows");
    path
}

/// Runs the agent on `flows` until it logged a line containing `until`, stops it with SIGTERM as
/// Kubernetes does, and returns every stderr line.
fn run_agent(flows: &PathBuf, extra: &[&str], rust_log: Option<&str>, until: &str) -> Vec<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imdsguard"));
    cmd.current_dir(repo())
        .arg("agent")
        .arg("--replay-flows")
        .arg(flows)
        .args([
            "--hubble-listen-address",
            "127.0.0.1:0",
            "--node-name",
            "logs-node",
        ])
        .args(extra)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped());
    if let Some(r) = rust_log {
        cmd.env("RUST_LOG", r);
    }
    let mut child = cmd.spawn().expect("start the agent");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lines.iter().any(|l: &String| l.contains(until)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the agent never logged {until:?}; it logged:\n{}",
                    lines.join("\n")
                );
            }
        }
    }
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    // The reader ends at EOF, once the agent has exited.
    lines.extend(rx.iter());
    lines
}

/// Each line as a JSON object with string `time` (RFC 3339), `level` and `msg`.
fn json_records(lines: &[String]) -> Vec<serde_json::Map<String, Value>> {
    assert!(!lines.is_empty(), "the agent logged nothing");
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("not a JSON line ({e}): {l}\nlog:\n{}", lines.join("\n"))
            });
            let Value::Object(o) = v else {
                panic!("not a JSON object: {l}");
            };
            for key in ["time", "level", "msg"] {
                assert!(
                    o.get(key).is_some_and(Value::is_string),
                    "no string {key}: {l}"
                );
            }
            assert!(
                Timestamp::parse_rfc3339(o["time"].as_str().unwrap_or_default()).is_some(),
                "time is not RFC 3339: {l}"
            );
            assert!(
                ["error", "warn", "info", "debug", "trace"]
                    .contains(&o["level"].as_str().unwrap_or_default()),
                "unknown level: {l}"
            );
            o
        })
        .collect()
}

/// `<time> <LEVEL> <msg>`: the time, the level and the rest.
fn text_record(line: &str) -> (&str, &str, &str) {
    let mut parts = line.splitn(3, ' ');
    let (time, level, msg) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    assert!(
        Timestamp::parse_rfc3339(time).is_some(),
        "no time first: {line}"
    );
    assert!(
        ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
        "no level second: {line}"
    );
    (time, level, msg)
}

#[test]
fn json_format_writes_one_object_per_line() {
    let flows = flows_with_a_bad_line("json");
    let lines = run_agent(&flows, &["--log-format", "json"], None, "replaying ");
    let _ = std::fs::remove_file(&flows);
    let records = json_records(&lines);
    let msg = |r: &serde_json::Map<String, Value>| r["msg"].as_str().unwrap_or_default().to_owned();
    let serving = records
        .iter()
        .find(|r| msg(r).starts_with("hubble: serving on 127.0.0.1:"))
        .unwrap_or_else(|| panic!("no hubble line:\n{}", lines.join("\n")));
    assert_eq!(serving["level"], "info");
    let bad = records
        .iter()
        .find(|r| msg(r).contains("skipping a malformed line"))
        .unwrap_or_else(|| panic!("no warning about the bad line:\n{}", lines.join("\n")));
    assert_eq!(bad["level"], "warn");
    assert!(
        bad.get("error").is_some_and(Value::is_string),
        "the error is no field of its own: {bad:?}"
    );
    assert!(
        records.iter().any(|r| msg(r).starts_with("replaying ")),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn text_format_is_time_level_message() {
    let flows = flows_with_a_bad_line("text");
    let lines = run_agent(&flows, &[], None, "replaying ");
    let _ = std::fs::remove_file(&flows);
    let records: Vec<_> = lines.iter().map(|l| text_record(l)).collect();
    let (_, level, msg) = records
        .iter()
        .find(|(_, _, m)| m.starts_with("hubble: serving on "))
        .unwrap_or_else(|| panic!("no hubble line:\n{}", lines.join("\n")));
    assert_eq!(*level, "INFO");
    // The address is the rest of the line, as scripts and tests read it.
    assert!(
        msg["hubble: serving on ".len()..]
            .parse::<std::net::SocketAddr>()
            .is_ok(),
        "{msg}"
    );
    let (_, level, msg) = records
        .iter()
        .find(|(_, _, m)| m.contains("skipping a malformed line"))
        .unwrap_or_else(|| panic!("no warning about the bad line:\n{}", lines.join("\n")));
    assert_eq!(*level, "WARN");
    assert!(msg.contains(" error=\""), "{msg}");
}

#[test]
fn log_level_warn_drops_info_records() {
    let flows = flows_with_a_bad_line("warn");
    let lines = run_agent(
        &flows,
        &["--log-level", "warn", "--log-format", "json"],
        // An explicit --log-level wins over RUST_LOG.
        Some("debug"),
        "skipping a malformed line",
    );
    let _ = std::fs::remove_file(&flows);
    let records = json_records(&lines);
    assert!(
        records
            .iter()
            .all(|r| r["level"] == "warn" || r["level"] == "error"),
        "{}",
        lines.join("\n")
    );
    assert!(
        !lines.iter().any(|l| l.contains("hubble: serving on")),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn rust_log_applies_without_log_level() {
    let flows = flows_with_a_bad_line("rust-log");
    let lines = run_agent(&flows, &[], Some("warn"), "skipping a malformed line");
    let _ = std::fs::remove_file(&flows);
    assert!(
        lines.iter().all(|l| text_record(l).1 == "WARN"),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn a_failing_agent_logs_its_error_in_the_format() {
    let o = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .current_dir(repo())
        .args([
            "agent",
            "--hubble-listen-address",
            "",
            "--log-format",
            "json",
        ])
        .env_remove("RUST_LOG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run the agent");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let lines: Vec<String> = err.lines().map(str::to_owned).collect();
    let records = json_records(&lines);
    let last = records.last().expect("a record");
    assert_eq!(last["level"], "error", "{err}");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("nothing to do")),
        "{err}"
    );
}
