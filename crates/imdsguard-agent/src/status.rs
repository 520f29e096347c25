//! `imdsguard status`: the datapath as the kernel holds it (endpoints, policy revisions, the TCX
//! chains, which `tc filter show` cannot list, and counters), read from the pins, next to the
//! running agent's own view from its local API.

use crate::api::request;
use imdsguard_datapath::abi::{
    CFG_DENY_REJECT, CFG_PROXY_ROUTE_SHADOWED, EP_AUDIT, EP_EGRESS_ENFORCED, EP_INGRESS_ENFORCED,
    EP_READY,
};
use imdsguard_datapath::loader::{Inspection, inspect};
use std::fmt::Write as _;
use std::path::Path;

/// Why no report could be made.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "reading the datapath pinned under {root} (is an agent running with --bpf-root {root}? reading pins needs root)"
    )]
    Pins {
        root: String,
        #[source]
        source: Box<imdsguard_datapath::loader::DatapathError>,
    },
    #[error("unknown output format {0:?}: use text or json")]
    Format(String),
    #[error(transparent)]
    Request(#[from] crate::api::RequestError),
    #[error("encoding the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// Whether the agent at `socket` enforces its first complete view (the readiness probe).
pub fn ready(socket: &Path) -> Result<bool, StatusError> {
    let (code, body) = request(socket, "/v1/status")?;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    Ok(code == 200 && status["ready"] == true)
}

/// The report in `output` format (`text` or `json`), and whether enforcement is complete: every
/// program first in its chain, and the proxy's routing intact.
pub fn report(bpf_root: &Path, socket: &Path, output: &str) -> Result<(String, bool), StatusError> {
    let state = inspect(bpf_root).map_err(|source| StatusError::Pins {
        root: bpf_root.display().to_string(),
        source: Box::new(source),
    })?;
    let agent = request(socket, "/v1/status")
        .map_err(|e| crate::logging::chain(&e))
        .and_then(|(code, body)| {
            if code != 200 {
                return Err(format!("the agent answered {code}: {body}"));
            }
            serde_json::from_str::<serde_json::Value>(&body).map_err(|e| e.to_string())
        });
    let out = match output {
        "json" => {
            let mut v = json(&state);
            v["agent"] = agent.clone().unwrap_or(serde_json::Value::Null);
            serde_json::to_string_pretty(&v)? + "\n"
        }
        "text" => agent_text(&agent) + &text(&state),
        other => return Err(StatusError::Format(other.to_owned())),
    };
    let healthy = state.interfaces.iter().all(|i| {
        i.chains
            .as_ref()
            .is_some_and(|c| c.iter().all(|a| a.position == Some(0)))
    }) && state.config_flags & CFG_PROXY_ROUTE_SHADOWED == 0;
    Ok((out, healthy))
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
    let audit: Vec<String> = a["audit_policies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(str_of)
        .collect();
    if audit.is_empty() {
        let _ = writeln!(o, "Policies:     {policies} in force");
    } else {
        // Named, since a policy in audit mode drops nothing: the reader must know which.
        let _ = writeln!(
            o,
            "Policies:     {policies} in force, {} in audit mode (would-be drops pass as AUDIT)",
            audit.len()
        );
        for p in &audit {
            let _ = writeln!(o, "  audit {p}");
        }
    }
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
            pod_policy(e),
            labels.join(", ")
        );
    }
    o + &cgroups_text(&a["cgroups"])
}

/// The cgroup hooks, hostNetwork pods and the containers the agent names.
fn cgroups_text(c: &serde_json::Value) -> String {
    let mut o = String::new();
    if c.is_null() {
        return o;
    }
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let hooks: Vec<String> = c["hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(str_of)
        .collect();
    let _ = match c["root"].as_str() {
        Some(root) => writeln!(
            o,
            "Cgroup hooks: {} at {root}",
            if hooks.is_empty() {
                "none attached".to_owned()
            } else {
                hooks.join(", ")
            }
        ),
        None => writeln!(o, "Cgroup hooks: off"),
    };
    let _ = writeln!(
        o,
        "Deny response: {}",
        match c["deny_response"].as_str() {
            Some("reject") => "reject (ECONNREFUSED at connect(), TCP RST / ICMP unreachable)",
            Some(other) => other,
            None => "drop",
        }
    );
    let registered = c["host_network_registered"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let _ = match c["host_network_pods"].as_str() {
        Some("enforce") => writeln!(
            o,
            "hostNetwork pods: enforce, {} under policy at connect()/sendmsg()",
            registered.len()
        ),
        _ => writeln!(
            o,
            "hostNetwork pods: ignore (left out of policy, as in Cilium)"
        ),
    };
    for r in &registered {
        let _ = writeln!(
            o,
            "  {:<40} {} cgroup(s)",
            str_of(&r["endpoint"]),
            r["cgroups"]
        );
    }
    let containers = c["containers"].as_array().cloned().unwrap_or_default();
    if !containers.is_empty() {
        let _ = writeln!(o, "Containers:   {} named by cgroup", containers.len());
        for k in &containers {
            let _ = writeln!(
                o,
                "  {:<40} {:<24} {} cgroup(s)",
                str_of(&k["endpoint"]),
                str_of(&k["container"]),
                k["cgroups"]
            );
        }
    }
    for p in c["problems"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "  not found: {}", str_of(p));
    }
    o
}

/// The POLICY column: the policy's state, and `audit` for a pod in audit mode (it drops
/// nothing: what its policy would deny passes as AUDIT).
fn pod_policy(e: &serde_json::Value) -> String {
    let state = e["policy"].as_str().unwrap_or_default();
    match (e["audit"].as_bool() == Some(true), state) {
        (false, _) => state.to_owned(),
        (true, "enforcing") => "audit".to_owned(),
        (true, other) => format!("{other} (audit)"),
    }
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
    let _ = writeln!(
        o,
        "Deny response: {} (pinned)",
        if s.config_flags & CFG_DENY_REJECT != 0 {
            "reject"
        } else {
            "drop"
        }
    );
    let _ = writeln!(o, "Cgroup hooks: {} pinned", s.cgroup_hooks.len());
    for h in &s.cgroup_hooks {
        let _ = writeln!(
            o,
            "  {:<16} link {} on cgroup {} (program {})",
            h.program, h.link_id, h.cgroup_id, h.program_id
        );
    }
    let _ = writeln!(
        o,
        "hostNetwork cgroups: {} judged at connect()/sendmsg()",
        s.cgroup_endpoints.len()
    );
    for (cgroup, e) in &s.cgroup_endpoints {
        let _ = writeln!(
            o,
            "  cgroup {:<12} endpoint {:<8} identity {:<8} revision {}",
            cgroup, e.ep_id, e.identity, e.generation
        );
    }
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
    let closed = s.config_flags & CFG_PROXY_ROUTE_SHADOWED != 0;
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
        "deny_response": if s.config_flags & CFG_DENY_REJECT != 0 { "reject" } else { "drop" },
        "cgroup_hooks": s.cgroup_hooks.iter().map(|h| serde_json::json!({
            "program": h.program,
            "link_id": h.link_id,
            "cgroup_id": h.cgroup_id,
            "program_id": h.program_id,
        })).collect::<Vec<_>>(),
        "cgroup_endpoints": s.cgroup_endpoints.iter().map(|(cg, e)| serde_json::json!({
            "cgroup_id": cg,
            "id": e.ep_id,
            "identity": e.identity,
            "policy_revision": e.generation,
            "ready": e.flags & EP_READY != 0,
        })).collect::<Vec<_>>(),
        "counters": s.counters.iter().map(|(n, v)| (n.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_and_policies_in_audit_mode_are_named() {
        let agent = json!({
            "mode": "kubernetes", "node": "n1", "ready": true, "revision": 3,
            "policies": ["CiliumClusterwideNetworkPolicy azure-imds-deny", "CiliumNetworkPolicy apps/x"],
            "audit_policies": ["CiliumClusterwideNetworkPolicy azure-imds-deny"],
            "policy_errors": [],
            "endpoints": [
                {"id": 1, "namespace": "apps", "name": "web", "identity": 100, "interface": "veth1",
                 "policy": "enforcing", "audit": true, "labels": []},
                {"id": 2, "namespace": "logging", "name": "fb", "identity": 101, "interface": "veth2",
                 "policy": "enforcing", "audit": false, "labels": []},
                {"id": 3, "namespace": "apps", "name": "new", "identity": 102, "interface": null,
                 "policy": "pending", "audit": true, "labels": []},
            ],
        });
        let text = agent_text(&Ok(agent));
        assert!(
            text.contains("Policies:     2 in force, 1 in audit mode"),
            "{text}"
        );
        assert!(
            text.contains("  audit CiliumClusterwideNetworkPolicy azure-imds-deny\n"),
            "{text}"
        );
        let line = |pod: &str| {
            text.lines()
                .find(|l| l.contains(pod))
                .unwrap_or_default()
                .split_whitespace()
                .nth(4)
                .map(str::to_owned)
        };
        assert_eq!(line("apps/web").as_deref(), Some("audit"));
        assert_eq!(line("logging/fb").as_deref(), Some("enforcing"));
        assert!(text.contains("pending (audit)"), "{text}");
    }

    #[test]
    fn cgroup_hooks_host_network_pods_and_containers_are_shown() {
        let agent = json!({
            "mode": "files", "node": "n1", "ready": true, "revision": 1, "endpoints": [],
            "cgroups": {
                "root": "/sys/fs/cgroup/unified",
                "hooks": ["sock_connect4", "sock_connect6"],
                "deny_response": "reject",
                "host_network_pods": "enforce",
                "host_network_registered": [{"endpoint": "mon/agent", "cgroups": 2}],
                "containers": [{"endpoint": "shop/web", "container": "istio-proxy", "cgroups": 1}],
                "problems": ["shop/web container app: cgroup /x: not found"],
            },
        });
        let text = agent_text(&Ok(agent));
        for want in [
            "Cgroup hooks: sock_connect4, sock_connect6 at /sys/fs/cgroup/unified\n",
            "Deny response: reject (ECONNREFUSED",
            "hostNetwork pods: enforce, 1 under policy",
            "  mon/agent",
            "istio-proxy",
            "not found: shop/web container app",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
        let off = agent_text(&Ok(
            json!({"cgroups": {"root": null, "deny_response": "drop",
            "host_network_pods": "ignore"}}),
        ));
        assert!(off.contains("Cgroup hooks: off\n"), "{off}");
        assert!(off.contains("hostNetwork pods: ignore"), "{off}");
    }
}
