//! `imdsguard replay`: recorded flows judged again under candidate policies (see docs/replay.md).

use super::policy::{load_endpoints, load_policies, repository};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use imdsguard_flow::jsonline::FlowReader;
use imdsguard_policy::endpoints_file::EndpointsFile;
use imdsguard_policy::{DecodeOptions, EngineOptions};
use imdsguard_replay::{GroupBy, Inputs, Replay, TextOptions};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

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
    let mut reader = FlowReader::open(&args.flows)
        .with_context(|| format!("opening {} (the --flows file)", args.flows))?;
    let stderr = std::io::stderr();
    replay.read(&mut reader, stderr.is_terminal(), &mut stderr.lock())?;
    let report = replay.report();
    let inputs = Inputs {
        flows: &args.flows,
        policies: decoded.policies.len(),
        cidr_groups: decoded.groups.len(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.output {
        Output::Json => report.write_json(&mut out, &inputs)?,
        Output::Text => {
            let details = args.details;
            report.write_text(&mut out, &inputs, TextOptions { details, group_by })?
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
