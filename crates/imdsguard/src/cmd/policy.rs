//! `imdsguard policy check|trace|test|lint|whatif`: the flags, and the calls into the libraries that
//! decide (`imdsguard_policy`, `imdsguard_lint`, `imdsguard_scenario`) and word the reports
//! (`imdsguard_policy::report`, `imdsguard_lint::report`).

use super::observe::TlsArgs;
use super::replay::By;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use imdsguard_agent::sources;
use imdsguard_lint::Severity;
use imdsguard_manifest::Source;
use imdsguard_policy::endpoints_file::EndpointsFile;
use imdsguard_policy::report::{CheckText, TraceRequest, TraceText, check_json};
use imdsguard_policy::{DecodeOptions, Decoded, EngineOptions, decode_sources};
use imdsguard_replay::whatif;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub(crate) use imdsguard_policy::report::repository;

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate policies and CIDR groups; print every error with file, line, column and field.
    Check(CheckArgs),
    /// Show the verdict Cilium would give one flow, and why.
    Trace(TraceArgs),
    /// Run policy test scenarios (see docs/policy-testing.md).
    Test(TestArgs),
    /// Find policies that do not do what they look like they do (see docs/policy-lint.md).
    Lint(LintArgs),
    /// What enforcing candidate policies would break: the agent's (or Relay's) recent flows,
    /// judged under them (see docs/rollout.md).
    ///
    /// Candidates are judged as ENFORCED: an audit annotation (policy.imdsguard.io/audit-mode)
    /// in them is ignored, so the answer is what enforcing them would break; flows the agent let
    /// through as AUDIT count as passed. Exit status: 0; 1 with --fail-on-break when a flow that
    /// passed would be denied; 2 on errors.
    Whatif(WhatifArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Policy files or directories (searched recursively for *.yaml, *.yml, *.json); `-` is stdin.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// Policy files or directories.
    #[arg(long = "policies", required = true, num_args = 1..)]
    policies: Vec<PathBuf>,
    /// Source: an endpoint (NAME or NAMESPACE/NAME from --endpoints), an IP, or an entity (world, host …).
    #[arg(long)]
    from: String,
    /// Destination: an endpoint, an IP, or an entity.
    #[arg(long)]
    to: String,
    /// Destination port (ICMP: the type).
    #[arg(long, default_value_t = 0)]
    dport: u16,
    #[arg(long, default_value = "TCP")]
    protocol: String,
    #[arg(long)]
    http_method: Option<String>,
    #[arg(long)]
    http_path: Option<String>,
    #[arg(long)]
    http_host: Option<String>,
    /// Endpoints and namespaces: an endpoints file, a scenario or a lab topology.
    #[arg(long)]
    endpoints: Option<PathBuf>,
    /// Report L3/L4 denials as AUDITED instead of dropping (Cilium's --policy-audit-mode).
    #[arg(long)]
    policy_audit_mode: bool,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Scenario files or directories (searched recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Also print passing cases.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LintOutput {
    Text,
    Json,
    Sarif,
}

/// The lowest severity that makes `policy lint` exit 1.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOn {
    Error,
    Warning,
    Note,
    /// Always exit 0 when the input could be read.
    None,
}

#[derive(Args, Debug)]
pub struct LintArgs {
    /// Policy and CIDR group files or directories (searched recursively); `-` is stdin.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The cluster's namespaces and pods (an endpoints file, a scenario or a lab topology): checks
    /// then name real pods, and namespaces the cluster lacks are reported.
    #[arg(long, conflicts_with = "kubeconfig")]
    endpoints: Option<PathBuf>,
    /// Read the namespaces and pods from this cluster instead (kubectl's --kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    #[arg(short, long, value_enum, default_value_t = LintOutput::Text)]
    output: LintOutput,
    /// Exit 1 when a finding has at least this severity.
    #[arg(long, value_enum, default_value_t = FailOn::Warning)]
    fail_on: FailOn,
    /// Skip checks by code or name (IG1503, imds-hostnetwork-uncovered); repeat or separate with commas.
    #[arg(long, value_delimiter = ',')]
    ignore: Vec<String>,
}

#[derive(Args, Debug)]
pub struct WhatifArgs {
    /// Candidate policy and CIDR group files or directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The agent's Hubble API, or Relay (host:port, tls://host:port, unix:///path).
    #[arg(long, default_value = "localhost:4244")]
    server: String,
    /// Judge the server's last N flows (default: every flow its ring holds, as `observe --all`).
    #[arg(long)]
    last: Option<u64>,
    /// Exit 1 when something that passed would be denied (for CI).
    #[arg(long)]
    fail_on_break: bool,
    /// Group flows by workload (Deployment, DaemonSet …) or by pod.
    #[arg(long, value_enum, default_value_t = By::Workload)]
    group_by: By,
    /// Also list the flows whose verdict stays the same, and when and how each was seen.
    #[arg(long)]
    details: bool,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    tls: TlsArgs,
}

pub fn run(cmd: PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Check(a) => check(a),
        PolicyCommand::Trace(a) => trace(a),
        PolicyCommand::Test(a) => test(a),
        PolicyCommand::Lint(a) => lint(a),
        PolicyCommand::Whatif(a) => whatif(a),
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    let decoded = decode_sources(&sources::load(&args.paths)?, &DecodeOptions::default());
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&check_json(&decoded))?),
        Output::Text => {
            for w in &decoded.warnings {
                eprintln!("{w}");
            }
            print!("{}", CheckText(&decoded));
        }
    }
    Ok(exit(decoded.errors.is_empty()))
}

/// Loads policies and reports invalid ones on stderr; the valid ones still count.
pub(crate) fn load_policies(paths: &[PathBuf], opts: &DecodeOptions) -> Result<Decoded> {
    let srcs = sources::load(paths)?;
    let decoded = decode_sources(&srcs, opts);
    for e in &decoded.errors {
        eprintln!("{e} (object ignored)");
    }
    Ok(decoded)
}

/// Reads `--endpoints`: an endpoints file, a policy test scenario (its `namespaces` and
/// `endpoints`) or a lab topology (its pods, with the addresses the lab gives them).
pub(crate) fn load_endpoints(path: &Path) -> Result<EndpointsFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(imdsguard_lab::topology::endpoints_of(&Source::new(
        path.display().to_string(),
        text,
    ))?)
}

fn trace(args: TraceArgs) -> Result<ExitCode> {
    let decoded = load_policies(&args.policies, &DecodeOptions::default())?;
    let endpoints = match &args.endpoints {
        Some(path) => load_endpoints(path)?,
        None => EndpointsFile::default(),
    };
    let opts = EngineOptions {
        audit_mode: args.policy_audit_mode,
        ..Default::default()
    };
    let repo = repository(&decoded, &endpoints, opts);
    let request = TraceRequest {
        from: args.from,
        to: args.to,
        dport: args.dport,
        protocol: args.protocol,
        http_method: args.http_method,
        http_path: args.http_path,
        http_host: args.http_host,
    };
    let verdict = repo.evaluate(&request.query(&endpoints.endpoints)?)?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&verdict)?),
        Output::Text => print!(
            "{}",
            TraceText {
                request: &request,
                repo: &repo,
                verdict: &verdict
            }
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn test(args: TestArgs) -> Result<ExitCode> {
    let files = sources::load(&args.paths)?;
    let mut out = String::new();
    let totals = imdsguard_scenario::suite::run_suite(
        files,
        imdsguard_lab::topology::is_topology,
        |p| sources::load(&[p.to_path_buf()]).map_err(|e| format!("{:#}", anyhow::Error::new(e))),
        args.verbose,
        &mut out,
    );
    print!("{out}");
    Ok(exit(totals.failed == 0))
}

fn whatif(a: WhatifArgs) -> Result<ExitCode> {
    let candidates = sources::load(&a.paths)?;
    let client = a.tls.client(a.server.clone())?;
    let (group_by, details) = (a.group_by.into(), a.details);
    let json = a.output == Output::Json;
    let opts = whatif::Options {
        last: a.last,
        group_by,
        details,
        json,
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    let breaks = super::block_on(whatif::run(&client, &candidates, opts, &mut out, &mut err))??;
    Ok(exit(!(a.fail_on_break && breaks)))
}

/// The namespaces and pods of a live cluster, listed once.
fn cluster_of(kubeconfig: &Path) -> Result<imdsguard_lint::Cluster> {
    super::block_on(async {
        let client = imdsguard_k8s::cluster::connect(Some(kubeconfig)).await?;
        let (namespaces, endpoints) = imdsguard_k8s::cluster::list_all(&client)
            .await
            .with_context(|| {
                format!("listing namespaces and pods with {}", kubeconfig.display())
            })?;
        Ok(imdsguard_lint::Cluster {
            namespaces,
            endpoints,
        })
    })?
}

fn lint(args: LintArgs) -> Result<ExitCode> {
    if let Some(code) = imdsguard_lint::report::unknown_check(&args.ignore) {
        bail!(
            "--ignore {code:?}: no such check (see `imdsguard policy lint --help` and docs/policy-lint.md)"
        );
    }
    let srcs = sources::load(&args.paths)?;
    let cluster = match (&args.endpoints, &args.kubeconfig) {
        (Some(path), _) => {
            let file = load_endpoints(path)?;
            Some(imdsguard_lint::Cluster {
                namespaces: file.namespaces,
                endpoints: file.endpoints.into_iter().map(|e| e.spec).collect(),
            })
        }
        (None, Some(path)) => Some(cluster_of(path)?),
        (None, None) => None,
    };
    let mut report = imdsguard_lint::lint(&srcs, cluster.as_ref());
    report.ignore(&args.ignore);
    for w in &report.warnings {
        eprintln!("{w}");
    }
    match args.output {
        LintOutput::Json => println!("{}", serde_json::to_string_pretty(&report.to_json())?),
        LintOutput::Sarif => {
            let log = imdsguard_lint::sarif::to_sarif(&report.findings, env!("CARGO_PKG_VERSION"));
            println!("{}", serde_json::to_string_pretty(&log)?);
        }
        LintOutput::Text => print!("{}", imdsguard_lint::report::Text(&report)),
    }
    let threshold = match args.fail_on {
        FailOn::Error => Some(Severity::Error),
        FailOn::Warning => Some(Severity::Warning),
        FailOn::Note => Some(Severity::Note),
        FailOn::None => None,
    };
    Ok(exit(!threshold.is_some_and(|t| report.fails(t))))
}
