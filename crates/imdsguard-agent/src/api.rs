//! The agent's local API on a unix socket, as Cilium's agent has one: what the agent enforces
//! (for `imdsguard status`, scripts and tests) and policy traces against the live state.
//!
//! - `GET /v1/healthz`: `ok`
//! - `GET /v1/status`: node, mode, readiness, endpoints with identities and interfaces, policies
//!   in force, policy errors, and the state of each Kubernetes watch
//! - `GET /v1/policy/trace?src=&dst=&dport=&protocol=&method=&path=&host=`: the verdict the
//!   agent's engine gives one flow; peers are `namespace/pod`, an IP or an entity (`world`)

use crate::AgentError;
use crate::inputs::{Inputs, Interfaces};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use imdsguard_datapath::sync::TableSync;
use imdsguard_k8s::WatchStatus;
use imdsguard_policy::report::parse_peer;
use imdsguard_policy::{FlowQuery, HttpRequest, Protocol, Repository};
use serde::Serialize;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentStatus {
    pub node: String,
    /// `files` or `kubernetes`.
    pub mode: String,
    /// The first complete view of the inputs has been enforced.
    pub ready: bool,
    /// Bumped by every write to the datapath's tables.
    pub revision: u64,
    pub endpoints: Vec<EndpointStatus>,
    pub identities: usize,
    /// Policies in force: `Kind namespace/name`.
    pub policies: Vec<String>,
    /// Of those, the policies in audit mode (`policy.imdsguard.io/audit-mode: "true"`): what
    /// they would deny passes and is reported as AUDIT.
    pub audit_policies: Vec<String>,
    /// The same policies by kind, namespace and name, for the UI.
    #[serde(skip)]
    pub audit_policy_refs: Vec<imdsguard_policy::api::PolicyRef>,
    /// `--policy-audit-mode`: every endpoint is in audit mode.
    pub audit_all: bool,
    /// What is wrong with the policies (and endpoints file) as they read now; an invalid policy
    /// that was valid before stays in force at its last good version.
    pub policy_errors: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watches: Vec<WatchStatus>,
    /// Veths attached with no known pod: metadata addresses are closed to them.
    pub guarded_interfaces: Vec<String>,
    /// The cgroup hooks, the deny response, hostNetwork pods and the containers named.
    pub cgroups: CgroupStatus,
}

/// What the agent attributes and judges by cgroup.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CgroupStatus {
    /// Where the connect()/sendmsg() hooks are attached; None: no hooks.
    pub root: Option<String>,
    /// The hook programs attached there.
    pub hooks: Vec<String>,
    /// `drop` or `reject`.
    pub deny_response: String,
    /// `ignore` or `enforce`.
    pub host_network_pods: String,
    /// The hostNetwork pods judged at connect()/sendmsg() (enforce mode), with their cgroups.
    pub host_network_registered: Vec<HostNetworkStatus>,
    /// Containers named by cgroup.
    pub containers: Vec<crate::containers::ContainerCgroups>,
    /// Containers or pods whose cgroups could not be found.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HostNetworkStatus {
    /// `namespace/name`.
    pub endpoint: String,
    pub cgroups: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EndpointStatus {
    /// The datapath's endpoint ID.
    pub id: u32,
    pub namespace: String,
    pub name: String,
    pub identity: u32,
    pub labels: Vec<String>,
    pub ips: Vec<String>,
    /// The host-side interface, when one was found.
    pub interface: Option<String>,
    pub attached: bool,
    /// `enforcing`, `pending` (no policy computed yet: metadata addresses are closed), or the
    /// error that kept the policy from being computed.
    pub policy: String,
    pub ingress_enforcement: bool,
    pub egress_enforcement: bool,
    /// Audit mode for every policy on this endpoint (Cilium's per-endpoint PolicyAuditMode):
    /// from `--policy-audit-mode`, its namespace's label `policy.imdsguard.io/audit-mode=true`,
    /// or `policyAuditMode` in the endpoints file. Nothing is dropped; would-be drops are AUDIT.
    pub audit: bool,
}

/// The status as of now, from the loop's state. `audit_all`: `--policy-audit-mode`.
#[allow(clippy::too_many_arguments)] // The loop's state, passed as it holds it.
pub fn build(
    inputs: &dyn Inputs,
    audit_all: bool,
    node: &str,
    repo: &Repository,
    sync: &TableSync,
    interfaces: &Interfaces,
    attached: &HashMap<String, u32>,
    revision: u64,
) -> AgentStatus {
    let audited = inputs.audit_endpoints();
    let mut endpoints: Vec<EndpointStatus> = repo
        .endpoints()
        .map(|(spec, identity)| {
            let key = spec.key();
            let policy = repo.endpoint_policy(&key);
            let interface = interfaces.endpoints.get(&key).cloned();
            EndpointStatus {
                id: sync.endpoint_id(&key).unwrap_or(0),
                namespace: spec.namespace.clone(),
                name: spec.name.clone(),
                identity: identity.0,
                labels: repo
                    .identities()
                    .labels(identity)
                    .map(|l| l.iter().map(|l| l.to_string()).collect())
                    .unwrap_or_default(),
                ips: spec.ips.iter().map(|i| i.to_string()).collect(),
                attached: interface.as_ref().is_some_and(|i| attached.contains_key(i)),
                interface,
                policy: match policy {
                    None => "pending".into(),
                    Some(p) => match &p.error {
                        Some(e) => format!("error: {e}"),
                        None => "enforcing".into(),
                    },
                },
                ingress_enforcement: policy.is_some_and(|p| p.ingress.enforced),
                egress_enforcement: policy.is_some_and(|p| p.egress.enforced),
                audit: audit_all || audited.contains(&key),
            }
        })
        .collect();
    endpoints.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut policies: Vec<String> = repo.policies().map(|p| p.id.to_string()).collect();
    policies.sort();
    let audit_policy_refs: Vec<_> = repo
        .policies()
        .filter(|p| p.audit)
        .map(|p| p.id.clone())
        .collect();
    let mut audit_policies: Vec<String> = audit_policy_refs.iter().map(|p| p.to_string()).collect();
    audit_policies.sort();
    AgentStatus {
        node: node.to_owned(),
        mode: inputs.mode().to_owned(),
        ready: inputs.ready(),
        revision,
        endpoints,
        identities: repo.identities().iter().count(),
        policies,
        audit_policies,
        audit_policy_refs,
        audit_all,
        policy_errors: inputs.errors(),
        watches: inputs.watches(),
        guarded_interfaces: interfaces.guarded.iter().cloned().collect(),
        cgroups: CgroupStatus::default(),
    }
}

type TraceReply = tokio::sync::oneshot::Sender<std::result::Result<serde_json::Value, String>>;

/// Shared by the API server (async) and the enforcement loop (a thread), which owns the
/// repository and answers traces between its turns.
pub struct AgentApi {
    status: RwLock<Arc<AgentStatus>>,
    traces: Sender<(HashMap<String, String>, TraceReply)>,
    pending: Mutex<Receiver<(HashMap<String, String>, TraceReply)>>,
}

impl AgentApi {
    pub fn new() -> Arc<AgentApi> {
        let (traces, pending) = std::sync::mpsc::channel();
        Arc::new(AgentApi {
            status: RwLock::new(Arc::default()),
            traces,
            pending: Mutex::new(pending),
        })
    }

    pub fn publish(&self, status: AgentStatus) {
        if let Ok(mut s) = self.status.write() {
            *s = Arc::new(status);
        }
    }

    fn status(&self) -> Arc<AgentStatus> {
        self.status.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// What is in audit mode as of the last status, for the UI's badges on pods and policies.
    pub fn audit_modes(&self) -> imdsguard_ui::AuditModes {
        let s = self.status();
        imdsguard_ui::AuditModes {
            all: s.audit_all,
            pods: s
                .endpoints
                .iter()
                .filter(|e| e.audit)
                .map(|e| format!("{}/{}", e.namespace, e.name))
                .collect(),
            policies: s
                .audit_policy_refs
                .iter()
                .map(|p| imdsguard_ui::PolicyName {
                    kind: p.kind.as_str().to_owned(),
                    namespace: p.namespace.to_string(),
                    name: p.name.to_string(),
                })
                .collect(),
        }
    }

    /// Answers the traces asked since the last call.
    pub fn answer(&self, repo: &Repository, ready: bool) {
        let Ok(pending) = self.pending.lock() else {
            return;
        };
        while let Ok((params, reply)) = pending.try_recv() {
            let result = if ready {
                trace(repo, &params)
            } else {
                Err("the agent has not received its first complete view of the cluster yet".into())
            };
            let _ = reply.send(result);
        }
    }
}

fn trace(repo: &Repository, p: &HashMap<String, String>) -> Result<serde_json::Value, String> {
    let handles: Vec<(String, String)> =
        repo.endpoints().map(|(s, _)| (s.key(), s.key())).collect();
    let peer = |name: &str| -> Result<_, String> {
        let v = p
            .get(name)
            .ok_or_else(|| format!("missing {name}= (a namespace/pod, an IP or an entity)"))?;
        parse_peer(v, &handles).map_err(|e| e.to_string())
    };
    let protocol_name = p.get("protocol").map_or("TCP", String::as_str);
    let protocol = Protocol::parse(protocol_name)
        .filter(|p| *p != Protocol::Any)
        .ok_or_else(|| {
            format!("unknown protocol {protocol_name:?}: use TCP, UDP, SCTP, ICMP or ICMPv6")
        })?;
    let port = match p.get("dport") {
        Some(d) => d
            .parse()
            .map_err(|_| format!("dport={d:?} is not a port number"))?,
        None => 0,
    };
    let http = (p.contains_key("method") || p.contains_key("path")).then(|| HttpRequest {
        method: p.get("method").cloned().unwrap_or_else(|| "GET".into()),
        path: p.get("path").cloned().unwrap_or_else(|| "/".into()),
        host: p.get("host").cloned().unwrap_or_default(),
        headers: Vec::new(),
    });
    let q = FlowQuery {
        from: peer("src")?,
        to: peer("dst")?,
        protocol,
        port,
        http,
    };
    let verdict = repo.evaluate(&q).map_err(|e| e.to_string())?;
    serde_json::to_value(verdict).map_err(|e| e.to_string())
}

fn json(code: StatusCode, body: &impl Serialize) -> Response {
    let text = serde_json::to_string_pretty(body).unwrap_or_else(|e| format!("\"{e}\""));
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text + "\n",
    )
        .into_response()
}

async fn get_status(State(api): State<Arc<AgentApi>>) -> Response {
    json(StatusCode::OK, &*api.status())
}

async fn get_trace(
    State(api): State<Arc<AgentApi>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if api.traces.send((params, tx)).is_err() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "the enforcement loop is not running"}),
        );
    }
    match tokio::time::timeout(Duration::from_secs(5), rx).await {
        Ok(Ok(Ok(v))) => json(StatusCode::OK, &v),
        Ok(Ok(Err(e))) => json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": e})),
        _ => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "the enforcement loop did not answer"}),
        ),
    }
}

/// Serves the API on `path` (a stale socket from an earlier agent is replaced). Owner-only.
pub async fn serve(path: &Path, api: Arc<AgentApi>) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(AgentError::io(format!("creating {}", dir.display())))?;
    }
    if path.exists() {
        std::fs::remove_file(path).map_err(AgentError::io(format!(
            "removing the stale socket {}",
            path.display()
        )))?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(AgentError::io(format!(
        "binding the API socket {}",
        path.display()
    )))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(AgentError::io(format!("restricting {}", path.display())))?;
    tracing::info!("api: serving on unix://{}", path.display());
    let app = axum::Router::new()
        .route("/v1/healthz", get(|| async { "ok\n" }))
        .route("/v1/status", get(get_status))
        .route("/v1/policy/trace", get(get_trace))
        .with_state(api);
    axum::serve(listener, app)
        .await
        .map_err(AgentError::io("serving the agent API"))
}

/// A failed request to the agent's API.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(
        "connecting to the agent at {socket} (is `imdsguard agent` running with --socket-path {socket}?)"
    )]
    Connect {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent")]
    Io(#[from] std::io::Error),
    #[error("the agent sent a malformed answer")]
    Malformed,
}

/// One GET against the agent's API: the status code and body.
pub fn request(socket: &Path, path_and_query: &str) -> Result<(u16, String), RequestError> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|source| {
        RequestError::Connect {
            socket: socket.display().to_string(),
            source,
        }
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.1\r\nHost: imdsguard\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or(RequestError::Malformed)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(RequestError::Malformed)?;
    Ok((code, body.to_owned()))
}
