//! `imdsguard policy check|trace|test|lint`.

use crate::sources;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use imdsguard_lint::Severity;
use imdsguard_manifest::Source;
use imdsguard_policy::api::Subject;
use imdsguard_policy::verdict::DirectionVerdict;
use imdsguard_policy::{
    DecodeOptions, Decoded, EngineOptions, FlowQuery, FlowVerdict, HttpRequest, Identity, Peer,
    Protocol, Repository, decode_sources,
};
use imdsguard_scenario::{EndpointsFile, PolicyInput};
use serde_json::json;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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

pub fn run(cmd: PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Check(a) => check(a),
        PolicyCommand::Trace(a) => trace(a),
        PolicyCommand::Test(a) => test(a),
        PolicyCommand::Lint(a) => lint(a),
    }
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    let srcs = sources::load(&args.paths)?;
    let decoded = decode_sources(&srcs, &DecodeOptions::default());
    let ok = decoded.errors.is_empty();
    match args.output {
        Output::Json => {
            let objects: Vec<_> = decoded
                .policies
                .iter()
                .map(|p| {
                    json!({"file": &*p.file, "line": p.pos.line, "column": p.pos.col, "kind": p.id.kind.as_str(),
                           "namespace": &*p.id.namespace, "name": &*p.id.name, "summary": policy_summary(p)})
                })
                .chain(decoded.groups.iter().map(|g| {
                    json!({"file": &*g.file, "line": g.pos.line, "column": g.pos.col, "kind": "CiliumCIDRGroup",
                           "name": &*g.name, "summary": format!("{} CIDR(s)", g.cidrs.len())})
                }))
                .collect();
            let out =
                json!({"valid": objects, "errors": decoded.errors, "warnings": decoded.warnings});
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Output::Text => {
            for w in &decoded.warnings {
                eprintln!("{w}");
            }
            for e in &decoded.errors {
                println!("{e}");
            }
            for p in &decoded.policies {
                println!(
                    "{}:{}: {}: valid: {}",
                    p.file,
                    p.pos,
                    p.id,
                    policy_summary(p)
                );
            }
            for g in &decoded.groups {
                let cidrs: Vec<String> = g.cidrs.iter().map(|c| c.to_string()).collect();
                println!(
                    "{}:{}: CiliumCIDRGroup {}: valid: {}",
                    g.file,
                    g.pos,
                    g.name,
                    cidrs.join(", ")
                );
            }
            let valid = decoded.policies.len() + decoded.groups.len();
            println!("{valid} valid, {} invalid", decoded.errors.len());
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn policy_summary(p: &imdsguard_policy::Policy) -> String {
    let mut parts = Vec::new();
    for r in &p.rules {
        let subject = match &r.subject {
            Subject::Endpoints(s) => format!("endpoints {s}"),
            Subject::Nodes(s) => format!("nodes {s}"),
        };
        let sections: Vec<String> = r
            .sections()
            .map(|(s, items)| format!("{s:?} {}", items.len()))
            .collect();
        let dd = format!(
            "default-deny ingress={} egress={}",
            if r.has_direction(imdsguard_policy::Direction::Ingress) {
                r.default_deny_ingress.to_string()
            } else {
                "-".into()
            },
            if r.has_direction(imdsguard_policy::Direction::Egress) {
                r.default_deny_egress.to_string()
            } else {
                "-".into()
            }
        );
        parts.push(format!("selects {subject}; {}; {dd}", sections.join(", ")));
    }
    parts.join(" | ")
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
    let source = Source::new(path.display().to_string(), text);
    if imdsguard_lab::topology::is_topology(&source) {
        let t = imdsguard_lab::topology::parse(&source)?;
        return Ok(EndpointsFile {
            namespaces: t.namespaces,
            endpoints: t.pods.into_iter().map(|p| p.endpoint).collect(),
            endpoints_declared: true,
        });
    }
    let scenario = imdsguard_scenario::parse(&source)?;
    Ok(EndpointsFile {
        namespaces: scenario.namespaces,
        endpoints: scenario.endpoints,
        endpoints_declared: true,
    })
}

/// A repository with the policies and the endpoints, resolved.
pub(crate) fn repository(
    decoded: &Decoded,
    endpoints: &EndpointsFile,
    opts: EngineOptions,
) -> Repository {
    let mut repo = Repository::new(opts);
    for (ns, labels) in &endpoints.namespaces {
        repo.set_namespace_labels(ns, labels.clone());
    }
    for ep in &endpoints.endpoints {
        repo.upsert_endpoint(ep.spec.clone());
    }
    repo.load(decoded);
    repo.resolve();
    repo
}

fn trace(args: TraceArgs) -> Result<ExitCode> {
    let decoded = load_policies(&args.policies, &DecodeOptions::default())?;
    let endpoints = match &args.endpoints {
        Some(path) => load_endpoints(path)?,
        None => EndpointsFile::default(),
    };
    let handles: Vec<(String, String)> = endpoints
        .endpoints
        .iter()
        .map(|ep| (ep.handle.clone(), ep.spec.key()))
        .collect();
    let repo = repository(
        &decoded,
        &endpoints,
        EngineOptions {
            audit_mode: args.policy_audit_mode,
            ..Default::default()
        },
    );
    let protocol = Protocol::parse(&args.protocol)
        .filter(|p| *p != Protocol::Any)
        .with_context(|| {
            format!(
                "unknown protocol {:?}: use TCP, UDP, SCTP, ICMP or ICMPv6",
                args.protocol
            )
        })?;
    let http = if args.http_method.is_some() || args.http_path.is_some() || args.http_host.is_some()
    {
        Some(HttpRequest {
            method: args.http_method.clone().unwrap_or_else(|| "GET".into()),
            path: args.http_path.clone().unwrap_or_else(|| "/".into()),
            host: args.http_host.clone().unwrap_or_default(),
            headers: Vec::new(),
        })
    } else {
        None
    };
    let from = parse_peer(&args.from, &handles)?;
    let to = parse_peer(&args.to, &handles)?;
    let q = FlowQuery {
        from,
        to,
        protocol,
        port: args.dport,
        http,
    };
    let v = repo.evaluate(&q)?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        Output::Text => print_trace(&args, &repo, &v),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn parse_peer(s: &str, handles: &[(String, String)]) -> Result<Peer> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Peer::Ip(ip));
    }
    let entity = s.strip_prefix("reserved:").unwrap_or(s);
    if let Some(id) = Identity::reserved_by_name(entity) {
        return Ok(Peer::Identity(id));
    }
    if let Some((_, key)) = handles.iter().find(|(h, k)| h == s || k == s) {
        return Ok(Peer::Endpoint(key.clone()));
    }
    let known: Vec<&str> = handles.iter().map(|(h, _)| h.as_str()).collect();
    if known.is_empty() {
        bail!(
            "{s:?} is not an IP address or entity, and no --endpoints file was given to define endpoints"
        );
    }
    bail!(
        "{s:?} is not an IP address, an entity or a known endpoint (known: {})",
        known.join(", ")
    )
}

fn describe_identity(repo: &Repository, id: Identity) -> String {
    let labels = repo
        .identities()
        .labels(id)
        .map(|l| l.to_string())
        .unwrap_or_default();
    format!("({id}) {labels}")
}

fn print_direction(name: &str, d: &Option<DirectionVerdict>) {
    let Some(d) = d else {
        println!("{name}: not evaluated (that side is not an endpoint on this node)");
        return;
    };
    if !d.enforced {
        println!(
            "{name}: not enforced (no policy selects the endpoint in this direction): allowed"
        );
        return;
    }
    let verdict = match d.verdict {
        imdsguard_policy::Verdict::Allowed => "ALLOWED",
        imdsguard_policy::Verdict::Denied => "DENIED",
        imdsguard_policy::Verdict::Audited => "AUDITED",
    };
    println!(
        "{name}: policy-verdict:{} {} {verdict}",
        d.match_type.as_str(),
        d.direction.as_str()
    );
    if let Some(r) = d.drop_reason {
        println!("  drop reason: {} ({}, {})", r.text(), r.code(), r.as_str());
    }
    let dir = d.direction.as_str().to_lowercase();
    for p in &d.allowed_by {
        println!("  {dir}_allowed_by: {p}");
    }
    for p in &d.denied_by {
        println!("  {dir}_denied_by: {p}");
    }
    if !d.policy_log.is_empty() {
        println!("  policy_log: {}", d.policy_log.join(", "));
    }
    for n in &d.notes {
        println!("  note: {n}");
    }
    if d.proxy {
        println!("  redirected to the L7 proxy");
    }
    if let Some(ok) = d.http_allowed {
        if ok {
            let by: Vec<String> = d.http_allowed_by.iter().map(|p| p.to_string()).collect();
            println!(
                "  HTTP: allowed{}",
                if by.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", by.join(", "))
                }
            );
        } else {
            println!("  HTTP: denied (403 Forbidden, \"Access denied\")");
        }
    }
}

fn print_trace(args: &TraceArgs, repo: &Repository, v: &FlowVerdict) {
    println!(
        "From: {} {}",
        args.from,
        describe_identity(repo, v.source_identity)
    );
    println!(
        "To:   {}:{}/{} {}",
        args.to,
        args.dport,
        args.protocol.to_uppercase(),
        describe_identity(repo, v.destination_identity)
    );
    print_direction("Egress (source)", &v.egress);
    print_direction("Ingress (destination)", &v.ingress);
    let reason = v
        .drop_reason
        .map(|r| format!(" ({})", r.text()))
        .unwrap_or_default();
    println!("Verdict: {}{reason}", v.verdict.as_str());
    println!("Match type: {}", v.match_type.as_str());
    println!("Proxy: {}", if v.proxy { "yes" } else { "no" });
    match v.http_allowed {
        Some(true) => println!("HTTP: ALLOWED"),
        Some(false) => println!("HTTP: DENIED (403)"),
        None => {}
    }
}

fn test(args: TestArgs) -> Result<ExitCode> {
    let files = sources::load(&args.paths)?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for src in files
        .into_iter()
        .filter(|s| !imdsguard_scenario::is_manifest(s) && !imdsguard_lab::topology::is_topology(s))
    {
        let scenario = match imdsguard_scenario::parse(&src) {
            Ok(s) => s,
            Err(e) => {
                println!("FAIL {e}");
                failed += 1;
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
                PolicyInput::File(f) => match sources::load(&[base.join(f)]) {
                    Ok(s) => policy_sources.extend(s),
                    Err(e) => load_error = Some(format!("{e:#}")),
                },
                PolicyInput::Inline { name, text } => {
                    policy_sources.push(Source::new(name.as_str(), text.as_str()))
                }
            }
        }
        if let Some(e) = load_error {
            println!("FAIL {}: {}: {e}", src.name, scenario.name);
            failed += 1;
            continue;
        }
        let report = imdsguard_scenario::run(&scenario, &policy_sources);
        for e in &report.errors {
            println!("FAIL {}: {}: {e}", src.name, scenario.name);
        }
        for o in &report.outcomes {
            let loc = if o.line > 0 {
                format!("{}:{}", src.name, o.line)
            } else {
                src.name.to_string()
            };
            if !o.passed {
                println!("FAIL {loc}: {o}");
            } else if args.verbose {
                println!("ok   {loc}: {}", o.case);
            }
        }
        passed += report.passed();
        failed += report.failed();
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
    for code in &args.ignore {
        if imdsguard_lint::checks::find(code).is_none() {
            bail!(
                "--ignore {code:?}: no such check (see `imdsguard policy lint --help` and docs/policy-lint.md)"
            );
        }
    }
    let srcs = sources::load(&args.paths)?;
    let cluster = match &args.endpoints {
        Some(path) => {
            let file = load_endpoints(path)?;
            Some(imdsguard_lint::Cluster {
                namespaces: file.namespaces,
                endpoints: file.endpoints.into_iter().map(|e| e.spec).collect(),
            })
        }
        None => match &args.kubeconfig {
            Some(path) => Some(cluster_of(path)?),
            None => None,
        },
    };
    let mut report = imdsguard_lint::lint(&srcs, cluster.as_ref());
    report.findings.retain(|f| {
        !args
            .ignore
            .iter()
            .any(|i| i.eq_ignore_ascii_case(f.code) || i == f.name)
    });
    for w in &report.warnings {
        eprintln!("{w}");
    }
    let findings = &report.findings;
    match args.output {
        LintOutput::Json => {
            let out = json!({
                "findings": findings,
                "summary": {
                    "policies": report.policies,
                    "cidrGroups": report.groups,
                    "errors": report.count(Severity::Error),
                    "warnings": report.count(Severity::Warning),
                    "notes": report.count(Severity::Note),
                },
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        LintOutput::Sarif => {
            let log = imdsguard_lint::sarif::to_sarif(findings, env!("CARGO_PKG_VERSION"));
            println!("{}", serde_json::to_string_pretty(&log)?);
        }
        LintOutput::Text => {
            for f in findings {
                let field = if f.field.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", f.field)
                };
                println!(
                    "{}:{}:{}: {} {} {}: {}: {field}{}",
                    f.file, f.line, f.column, f.severity, f.code, f.name, f.object, f.message
                );
                println!("  fix: {}", f.fix);
            }
            println!(
                "{} and {} linted: {}, {}, {}",
                super::count(report.policies, "policy", "policies"),
                super::count(report.groups, "CIDR group", "CIDR groups"),
                super::count(report.count(Severity::Error), "error", "errors"),
                super::count(report.count(Severity::Warning), "warning", "warnings"),
                super::count(report.count(Severity::Note), "note", "notes"),
            );
        }
    }
    let threshold = match args.fail_on {
        FailOn::Error => Some(Severity::Error),
        FailOn::Warning => Some(Severity::Warning),
        FailOn::Note => Some(Severity::Note),
        FailOn::None => None,
    };
    let fail = threshold.is_some_and(|t| findings.iter().any(|f| f.severity >= t));
    Ok(if fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
