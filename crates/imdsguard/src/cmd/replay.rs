//! `imdsguard replay`: recorded flows judged again under candidate policies (see docs/replay.md).

use super::policy::{load_endpoints, load_policies, repository};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use imdsguard_flow::flow::Flow;
use imdsguard_flow::jsonline::LineDecoder;
use imdsguard_flow::observer::get_flows_response::ResponseTypes;
use imdsguard_policy::{DecodeOptions, EngineOptions};
use imdsguard_replay::{GroupBy, Replay, Report};
use imdsguard_scenario::EndpointsFile;
use serde_json::json;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    Pod,
    Workload,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Recorded flows: `hubble observe -o jsonpb` lines (or bare Flow objects); `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    flows: String,
    /// The candidate policies and CIDR groups: files or directories.
    #[arg(long, required = true, num_args = 1..)]
    policies: Vec<PathBuf>,
    /// The cluster's pods and namespaces (an endpoints file, a scenario or a lab topology). Pods
    /// not listed are taken from the flows, with the labels the flows carry.
    #[arg(long)]
    endpoints: Option<PathBuf>,
    /// Also list the flows whose verdict stays the same, and when and how each group was seen.
    #[arg(long)]
    details: bool,
    /// Group flows by pod or by workload (Deployment, DaemonSet …).
    #[arg(long, value_enum, default_value_t = By::Pod)]
    group_by: By,
    /// Judge as Cilium's --policy-audit-mode would: L3/L4 denials become AUDITED.
    #[arg(long)]
    policy_audit_mode: bool,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// Without --details, the text lists this many changed groups, the largest first.
const SUMMARY_CHANGES: usize = 20;

/// Progress shows for files at least this large, when stderr is a terminal.
const PROGRESS_MIN_BYTES: u64 = 32 << 20;

pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let decoded = load_policies(&args.policies, &DecodeOptions::default())?;
    let endpoints = match &args.endpoints {
        Some(p) => load_endpoints(p)?,
        None => EndpointsFile::default(),
    };
    let repo = repository(
        &decoded,
        &endpoints,
        EngineOptions {
            audit_mode: args.policy_audit_mode,
            ..Default::default()
        },
    );
    let group_by = match args.group_by {
        By::Pod => GroupBy::Pod,
        By::Workload => GroupBy::Workload,
    };
    let mut replay = Replay::new(repo, group_by);
    let (mut reader, size): (Box<dyn BufRead>, Option<u64>) = if args.flows == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let file = std::fs::File::open(&args.flows)
            .with_context(|| format!("opening {} (the --flows file)", args.flows))?;
        let size = file.metadata().ok().map(|m| m.len());
        (
            Box::new(std::io::BufReader::with_capacity(1 << 16, file)),
            size,
        )
    };
    let mut progress = size
        .filter(|s| *s >= PROGRESS_MIN_BYTES && std::io::stderr().is_terminal())
        .map(Progress::new);
    let mut decoder = LineDecoder::new();
    let mut line = String::new();
    let (mut n, mut bad, mut read) = (0usize, 0usize, 0u64);
    loop {
        line.clear();
        let len = reader
            .read_line(&mut line)
            .with_context(|| format!("reading {}", args.flows))?;
        if len == 0 {
            break;
        }
        n += 1;
        read += len as u64;
        if let Some(p) = &mut progress
            && n % 4096 == 0
        {
            p.show(read, replay.totals().flows);
        }
        if line.trim().is_empty() {
            continue;
        }
        match decoder.decode(&line) {
            Ok(resp) => match &resp.response_types {
                Some(ResponseTypes::Flow(flow)) => replay.observe(flow),
                // Node status, lost events … carry no flow.
                Some(_) => {}
                // Unknown fields are ignored, so a bare Flow object decodes to an empty response.
                None => match serde_json::from_str::<Flow>(&line) {
                    Ok(flow) if flow.ip.is_some() || flow.source.is_some() => replay.observe(&flow),
                    _ => {}
                },
            },
            Err(e) => {
                if bad < 5 {
                    eprintln!(
                        "{}:{n}: skipping a line that is not a flow: {e}",
                        args.flows
                    );
                }
                bad += 1;
            }
        }
    }
    if let Some(p) = &mut progress {
        p.clear();
    }
    if bad > 0 {
        eprintln!("{bad} malformed line(s) skipped");
    }
    let report = replay.report();
    let policies = decoded.policies.len();
    let groups = decoded.groups.len();
    match args.output {
        Output::Json => {
            let out = json!({
                "flows": args.flows,
                "policies": policies,
                "cidrGroups": groups,
                "totals": report.totals,
                "groups": report.groups,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Output::Text => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            print_text(&mut out, &args, policies, groups, &report)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(
    out: &mut impl Write,
    args: &ReplayArgs,
    policies: usize,
    groups: usize,
    r: &Report,
) -> Result<()> {
    let t = &r.totals;
    writeln!(
        out,
        "Replayed {} flows from {} under {} and {}.",
        t.flows,
        args.flows,
        super::count(policies, "policy", "policies"),
        super::count(groups, "CIDR group", "CIDR groups"),
    )?;
    let s = &t.skipped;
    let mut skipped = Vec::new();
    if s.replies > 0 {
        skipped.push(format!(
            "{}, which follow their request",
            super::count(s.replies, "reply or response", "replies and responses")
        ));
    }
    if s.not_policy_drops > 0 {
        skipped.push(format!(
            "{} for reasons other than policy",
            super::count(s.not_policy_drops, "drop", "drops")
        ));
    }
    if s.unjudgeable > 0 {
        skipped.push(format!(
            "{} without addresses and ports, or DNS/Kafka refusals",
            s.unjudgeable
        ));
    }
    let skipped = if skipped.is_empty() {
        String::new()
    } else {
        format!(" ({} skipped: {})", s.total(), skipped.join("; "))
    };
    writeln!(out, "  judged:        {}{skipped}", t.judged)?;
    writeln!(out, "  changed:       {}", t.changed)?;
    writeln!(out, "  newly denied:  {}", t.newly_denied)?;
    writeln!(out, "  newly allowed: {}", t.newly_allowed)?;
    let changed: Vec<_> = r.groups.iter().filter(|g| g.changed).collect();
    if !changed.is_empty() {
        writeln!(out, "\nChanges:")?;
    }
    let shown = if args.details {
        changed.len()
    } else {
        changed.len().min(SUMMARY_CHANGES)
    };
    for g in &changed[..shown] {
        writeln!(
            out,
            "  {}: {} → {} ({}), {}",
            subject(g),
            g.key.before,
            g.key.after,
            g.key.decided_by,
            super::count(g.flows, "flow", "flows")
        )?;
        if args.details {
            detail(out, g)?;
        }
    }
    if shown < changed.len() {
        let hint = match args.group_by {
            By::Pod => "; --group-by workload merges replicas",
            By::Workload => "",
        };
        writeln!(
            out,
            "  … and {} more (--details lists them all{hint})",
            changed.len() - shown
        )?;
    }
    if args.details {
        let same: Vec<_> = r.groups.iter().filter(|g| !g.changed).collect();
        if !same.is_empty() {
            writeln!(out, "\nUnchanged:")?;
        }
        for g in same {
            writeln!(
                out,
                "  {}: {} ({}), {}",
                subject(g),
                g.key.after,
                g.key.decided_by,
                super::count(g.flows, "flow", "flows")
            )?;
            detail(out, g)?;
        }
    } else if r.groups.iter().any(|g| !g.changed) {
        writeln!(
            out,
            "\n--details lists the {} groups whose verdict stays the same.",
            r.groups.iter().filter(|g| !g.changed).count()
        )?;
    }
    Ok(())
}

/// `source → destination METHOD /path`.
fn subject(g: &imdsguard_replay::Group) -> String {
    match &g.key.http {
        Some(route) => format!("{} → {} {route}", g.key.source, g.key.destination),
        None => format!("{} → {}", g.key.source, g.key.destination),
    }
}

fn detail(out: &mut impl Write, g: &imdsguard_replay::Group) -> Result<()> {
    let mut parts = vec![format!("match {}", g.match_type)];
    if let Some(r) = g.drop_reason {
        parts.push(format!("drop reason {r}"));
    }
    if let (Some(a), Some(b)) = (g.first, g.last) {
        parts.push(format!("seen {a} – {b}"));
    }
    if let Some(u) = &g.example_url {
        parts.push(format!("e.g. {u}"));
    }
    writeln!(out, "      {}", parts.join("; "))?;
    Ok(())
}

/// A progress line on stderr, at most once a second.
struct Progress {
    size: u64,
    start: Instant,
    last: Instant,
}

impl Progress {
    fn new(size: u64) -> Progress {
        let now = Instant::now();
        Progress {
            size,
            start: now,
            last: now,
        }
    }

    fn show(&mut self, read: u64, flows: u64) {
        if self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        eprint!(
            "\rreplay: {flows} flows, {:.0}% of the file, {:.0} flows/s   ",
            read as f64 * 100.0 / self.size.max(1) as f64,
            flows as f64 / secs
        );
    }

    fn clear(&mut self) {
        eprint!("\r{:60}\r", "");
    }
}
