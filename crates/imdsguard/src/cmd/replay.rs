//! `imdsguard replay`: recorded flows judged again under candidate policies (see docs/replay.md).

use super::policy::{Output, load_endpoints, load_policies, repository};
use anyhow::Result;
use clap::{Args, ValueEnum};
use imdsguard_policy::endpoints_file::EndpointsFile;
use imdsguard_policy::{DecodeOptions, EngineOptions};
use imdsguard_replay::{FileOptions, GroupBy, replay_file};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

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

impl From<By> for GroupBy {
    fn from(b: By) -> GroupBy {
        match b {
            By::Pod => GroupBy::Pod,
            By::Workload => GroupBy::Workload,
        }
    }
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
    let opts = FileOptions {
        flows: &args.flows,
        policies: decoded.policies.len(),
        cidr_groups: decoded.groups.len(),
        group_by: args.group_by.into(),
        details: args.details,
        json: args.output == Output::Json,
        progress: std::io::stderr().is_terminal(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    replay_file(repo, opts, &mut out, &mut std::io::stderr())?;
    Ok(ExitCode::SUCCESS)
}
