//! `imdsguard status`: the datapath as the kernel holds it (endpoints, policy revisions, the TCX
//! chains, which `tc filter show` cannot list, and counters), read from the pins.

use anyhow::{Context, Result};
use clap::Args;
use imdsguard_datapath::abi::{EP_AUDIT, EP_EGRESS_ENFORCED, EP_INGRESS_ENFORCED, EP_READY};
use imdsguard_datapath::loader::{Inspection, inspect};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The BPF filesystem the agent pins to (its --bpf-root).
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpf_root: PathBuf,
    /// The agent's API socket (its --socket-path); the agent's view is shown when it answers.
    #[arg(long, default_value = "/var/run/imdsguard/imdsguard.sock")]
    socket_path: PathBuf,
    /// Only ask the agent whether it is enforcing its first complete view: exit 0 if so, 1 if
    /// not (the DaemonSet's readiness probe).
    #[arg(long)]
    ready: bool,
    /// Output format: text or json.
    #[arg(short = 'o', long, default_value = "text")]
    output: String,
}

pub fn run(args: StatusArgs) -> Result<ExitCode> {
    if args.ready {
        let (code, body) = super::agent_api::request(&args.socket_path, "/v1/status")?;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        return Ok(if code == 200 && status["ready"] == true {
            println!("ready");
            ExitCode::SUCCESS
        } else {
            println!("not ready: the agent has not enforced a complete view of its inputs yet");
            ExitCode::from(1)
        });
    }
    let state = inspect(&args.bpf_root).with_context(|| {
        format!(
            "reading the datapath pinned under {} (is an agent running with --bpf-root {}? reading pins needs root)",
            args.bpf_root.display(),
            args.bpf_root.display()
        )
    })?;
    let agent = super::agent_api::request(&args.socket_path, "/v1/status")
        .and_then(|(code, body)| {
            anyhow::ensure!(code == 200, "the agent answered {code}: {body}");
            Ok(serde_json::from_str::<serde_json::Value>(&body)?)
        })
        .map_err(|e| format!("{e:#}"));
    let out = match args.output.as_str() {
        "json" => {
            let mut v = json(&state);
            v["agent"] = agent.clone().unwrap_or(serde_json::Value::Null);
            serde_json::to_string_pretty(&v)? + "\n"
        }
        "text" => agent_text(&agent) + &text(&state),
        other => anyhow::bail!("unknown output format {other:?}: use text or json"),
    };
    print!("{out}");
    // Exit 1 when enforcement is not complete: a program that is not first, or a stale pin.
    let healthy = state.interfaces.iter().all(|i| {
        i.chains
            .as_ref()
            .is_some_and(|c| c.iter().all(|a| a.position == Some(0)))
    }) && state.config_flags & imdsguard_datapath::abi::CFG_PROXY_ROUTE_SHADOWED == 0;
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The agent's own view: where it learns pods and policies, and what is wrong with them.
fn agent_text(agent: &Result<serde_json::Value, String>) -> String {
    let mut o = String::new();
    let a = match agent {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(o, "Agent:        not reachable ({e})");
            return o;
        }
    };
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let _ = writeln!(
        o,
        "Agent:        {} on node {}, {}, revision {}",
        str_of(&a["mode"]),
        str_of(&a["node"]),
        if a["ready"].as_bool() == Some(true) {
            "Ok"
        } else {
            "waiting for the first complete view"
        },
        a["revision"]
    );
    for w in a["watches"].as_array().into_iter().flatten() {
        let state = if w["synced"].as_bool() == Some(true) {
            format!("{} objects", w["objects"])
        } else if w["missing"].as_bool() == Some(true) {
            "not served (CRD not installed)".to_owned()
        } else {
            "not synced".to_owned()
        };
        let err = w["last_error"]
            .as_str()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        let _ = writeln!(o, "  watch {:<48} {state}{err}", str_of(&w["resource"]));
    }
    let policies = a["policies"].as_array().map_or(0, Vec::len);
    let _ = writeln!(o, "Policies:     {policies} in force");
    let errors = a["policy_errors"].as_array().cloned().unwrap_or_default();
    if !errors.is_empty() {
        let _ = writeln!(
            o,
            "Policy errors: {} (the last good version of each stays in force)",
            errors.len()
        );
        for e in &errors {
            let _ = writeln!(o, "  {}", str_of(e));
        }
    }
    let eps = a["endpoints"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(o, "Pods:         {}", eps.len());
    let _ = writeln!(
        o,
        "  {:<10} {:<40} {:<10} {:<16} {:<12} LABELS",
        "ENDPOINT", "POD", "IDENTITY", "INTERFACE", "POLICY"
    );
    for e in &eps {
        let labels: Vec<String> = e["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .map(str_of)
            .filter(|l| !l.starts_with("k8s:io.cilium.k8s.namespace.labels"))
            .collect();
        let _ = writeln!(
            o,
            "  {:<10} {:<40} {:<10} {:<16} {:<12} {}",
            e["id"].to_string(),
            format!("{}/{}", str_of(&e["namespace"]), str_of(&e["name"])),
            e["identity"].to_string(),
            e["interface"].as_str().unwrap_or("-"),
            str_of(&e["policy"]),
            labels.join(", ")
        );
    }
    o
}

fn enabled(flags: u32, bit: u32) -> &'static str {
    if flags & bit != 0 {
        "Enabled"
    } else {
        "Disabled"
    }
}

fn text(s: &Inspection) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Datapath:     pinned at {}", s.pin_dir.display());
    let _ = writeln!(o, "Interfaces:   {}", s.interfaces.len());
    for i in &s.interfaces {
        match &i.chains {
            None => {
                let _ = writeln!(
                    o,
                    "  {:<16} gone (stale pin; the agent removes it)",
                    i.ifname
                );
            }
            Some(chains) => {
                let parts: Vec<String> = chains
                    .iter()
                    .map(|a| match a.position {
                        Some(p) => format!("{} {} of {}", a.program, p + 1, a.chain_len),
                        None => format!("{} NOT ATTACHED", a.program),
                    })
                    .collect();
                let _ = writeln!(o, "  {:<16} {}", i.ifname, parts.join(", "));
            }
        }
    }
    let _ = writeln!(o, "Endpoints:    {}", s.endpoints.len());
    let _ = writeln!(
        o,
        "  {:<10} {:<10} {:<26} {:<16} {:<18} {:<17} AUDIT",
        "ENDPOINT", "IDENTITY", "IP", "POLICY REVISION", "POLICY (ingress)", "POLICY (egress)"
    );
    for (ip, e) in &s.endpoints {
        let revision = if e.flags & EP_READY != 0 {
            e.generation.to_string()
        } else {
            "pending (metadata closed)".to_owned()
        };
        let _ = writeln!(
            o,
            "  {:<10} {:<10} {:<26} {:<16} {:<18} {:<17} {}",
            e.ep_id,
            e.identity,
            ip,
            revision,
            enabled(e.flags, EP_INGRESS_ENFORCED),
            enabled(e.flags, EP_EGRESS_ENFORCED),
            enabled(e.flags, EP_AUDIT)
        );
    }
    let protected: Vec<String> = s
        .ipcache
        .iter()
        .filter(|(_, v)| v.flags & imdsguard_datapath::abi::IPC_PROTECTED != 0)
        .map(|(n, _)| n.to_string())
        .collect();
    let _ = writeln!(
        o,
        "IPCache:      {} entries; metadata addresses closed to pods without policy: {}",
        s.ipcache.len(),
        protected.join(", ")
    );
    let _ = writeln!(o, "Proxy routing: {}", proxy_routing(s).0);
    let _ = writeln!(o, "Counters:");
    for (name, v) in &s.counters {
        let _ = writeln!(o, "  {name:<14} {v}");
    }
    o
}

/// The proxy's routing as the kernel holds it now, and whether the datapath fails redirects
/// closed because a rule ahead of ours could catch them.
fn proxy_routing(s: &Inspection) -> (String, bool) {
    use imdsguard_proxy::routing;
    let closed = s.config_flags & imdsguard_datapath::abi::CFG_PROXY_ROUTE_SHADOWED != 0;
    let now = match routing::status(routing::MARK, routing::TABLE) {
        Ok(st) => st.to_string(),
        Err(e) => format!("cannot read the routing rules: {e}"),
    };
    if closed {
        (
            format!("{now}; SHADOWED: redirects to the proxy fail closed (see `ip rule show`)"),
            true,
        )
    } else {
        (now, false)
    }
}

fn json(s: &Inspection) -> serde_json::Value {
    serde_json::json!({
        "pin_dir": s.pin_dir,
        "interfaces": s.interfaces.iter().map(|i| serde_json::json!({
            "name": i.ifname,
            "present": i.chains.is_some(),
            "programs": i.chains.iter().flatten().map(|a| serde_json::json!({
                "program": a.program,
                "position": a.position,
                "chain_length": a.chain_len,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "endpoints": s.endpoints.iter().map(|(ip, e)| serde_json::json!({
            "id": e.ep_id,
            "identity": e.identity,
            "ip": ip,
            "policy_revision": e.generation,
            "ready": e.flags & EP_READY != 0,
            "ingress_enforced": e.flags & EP_INGRESS_ENFORCED != 0,
            "egress_enforced": e.flags & EP_EGRESS_ENFORCED != 0,
            "audit": e.flags & EP_AUDIT != 0,
        })).collect::<Vec<_>>(),
        "ipcache": s.ipcache.iter().map(|(n, v)| serde_json::json!({
            "prefix": n.to_string(),
            "identity": v.identity,
            "protected": v.flags & imdsguard_datapath::abi::IPC_PROTECTED != 0,
        })).collect::<Vec<_>>(),
        "proxy_routing": {
            "detail": proxy_routing(s).0,
            "redirects_fail_closed": proxy_routing(s).1,
        },
        "counters": s.counters.iter().map(|(n, v)| (n.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}
