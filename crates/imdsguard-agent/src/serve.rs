//! The agent's servers and tasks, started from an [`AgentConfig`]: Hubble's gRPC API (TCP, with
//! TLS when configured, and the unix socket), the Peer service's nodes from the cluster, metrics,
//! the web UI, the flow export's flush, the replay of recorded flows, and, when enforcing, the
//! local API, the L7 proxy and the reconciliation loop. Runs until one of them fails, or SIGINT
//! or SIGTERM.

use crate::api::{self, AgentApi};
use crate::inputs::{ClusterInputs, FileInputs, Inputs};
use crate::node_view::SharedView;
use crate::peers::PeerSettings;
use crate::reconcile::{self, Shared};
use crate::{AgentConfig, AgentError, EnforceConfig, InputSource};
use imdsguard_hubble_server::exporter::FlowExporter;
use imdsguard_hubble_server::metrics::FlowMetrics;
use imdsguard_hubble_server::server::{Hub, HubOptions, router, serve_metrics};
use imdsguard_hubble_server::tls::{ServerTls, server_name};
use imdsguard_k8s::events::{PolicyEvents, PolicyProblem};
use imdsguard_k8s::{Cluster, KubeClient, NodeWatch};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tracing::{error, info, warn};

/// A server task's outcome: only Hubble's gRPC servers ever end; the others log and wait.
type ServerResult = Result<(), tonic::transport::Error>;

/// How often the Hubble TLS files are checked for a rotation.
const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Go's listen addresses as Cilium takes them: `:4244` is every address, IPv6 and IPv4.
pub fn listen_address(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("[::]:{port}"),
        None => addr.to_owned(),
    }
}

/// Where Cilium runs this node's datapath, how that shows: its host interface, or its pinned
/// maps. `None` when it does not.
pub fn cilium_datapath() -> Option<&'static str> {
    if std::path::Path::new("/sys/class/net/cilium_host").exists() {
        return Some("the cilium_host interface exists");
    }
    if std::path::Path::new("/sys/fs/bpf/tc/globals/cilium_lxc").exists() {
        return Some("/sys/fs/bpf/tc/globals/cilium_lxc is pinned");
    }
    None
}

/// Runs the agent until a server fails or a signal asks it to stop. The pinned programs and
/// maps stay when it returns: enforcement continues while no agent runs.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    let AgentConfig {
        node_name: node,
        hubble,
        ui_listen_address,
        replay,
        cluster,
        enforce,
    } = cfg;
    if enforce.is_some()
        && let Some(cni) = cilium_datapath()
    {
        return Err(AgentError::Config(format!(
            "Cilium is this node's datapath ({cni}): it enforces Cilium's policies itself, and imdsguard must not attach next to it. Use imdsguard here as the offline tool (policy check|trace|test, observe, replay); see docs/kubernetes.md"
        )));
    }
    let metrics = (!hubble.metrics_address.is_empty()).then(|| Arc::new(FlowMetrics::default()));
    let exporter = match hubble.export {
        Some(opts) => {
            Some(FlowExporter::new(opts).map_err(AgentError::other("starting the flow exporter"))?)
        }
        None => None,
    };
    let tls = match &hubble.tls {
        Some(files) => Some(
            ServerTls::load(files.clone())
                .map_err(AgentError::other("loading the Hubble server's TLS files"))?,
        ),
        None => None,
    };
    let hub = Hub::with_options(HubOptions {
        capacity: hubble.buffer_capacity,
        node_name: node.clone(),
        address: hubble.listen_address.clone(),
        metrics: metrics.clone(),
        exporter,
        tls_server_name: tls
            .as_ref()
            .map(|_| server_name(&node, &hubble.cluster_name)),
    });
    // The Peer service names this node as the cluster will, from the start.
    let peer_settings =
        PeerSettings::new(&hubble.listen_address, &hubble.cluster_name, tls.is_some());
    let local_peer = peer_settings.local(&node, &hubble.listen_address);
    hub.peers().set([local_peer.clone()]);
    let client: Option<KubeClient> = match &cluster {
        Some(c) => {
            let client = imdsguard_k8s::cluster::connect(c.kubeconfig.as_deref()).await?;
            let nodes = NodeWatch::start(client.clone());
            crate::peers::follow(hub.clone(), nodes, peer_settings, local_peer);
            info!("kubernetes: watching nodes for the Hubble peer service");
            Some(client)
        }
        None => None,
    };
    let mut servers: JoinSet<ServerResult> = JoinSet::new();
    if let Some(m) = &metrics {
        let addr = &hubble.metrics_address;
        let listener = bind(addr, format!("listening on {addr} for metrics")).await?;
        info!("metrics: serving on http://{}/metrics", local(&listener));
        let m = m.clone();
        servers.spawn(async move {
            if let Err(e) = serve_metrics(listener, m).await {
                error!(error = %e, "metrics: the server stopped");
            }
            std::future::pending().await
        });
    }
    {
        let hub = hub.clone();
        servers.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(e) = hub.flush_export() {
                    warn!(error = %e, "flow export: cannot write");
                }
            }
        });
    }
    if !hubble.listen_address.is_empty() {
        let addr = &hubble.listen_address;
        let listener = bind(
            addr,
            format!("listening on {addr} (is another agent running?)"),
        )
        .await?;
        let r = router(hub.clone()).await;
        let bound = local(&listener);
        match &tls {
            Some(tls) => {
                let files = tls.files();
                info!(
                    cert = %files.cert_file.display(),
                    "hubble: TLS on the TCP listener, {}",
                    if files.client_ca_files.is_empty() {
                        "no client certificates asked for".to_owned()
                    } else {
                        format!(
                            "client certificates required (mTLS, {} CA files)",
                            files.client_ca_files.len()
                        )
                    }
                );
                // The reloader stops with the runtime; the incoming stream holds the config.
                tls.spawn_reloader(TLS_RELOAD_INTERVAL);
                let incoming = tls.clone().incoming(listener);
                info!("hubble: serving on {bound}");
                servers.spawn(async move { r.serve_with_incoming(incoming).await });
            }
            None => {
                info!("hubble: serving on {bound}");
                servers.spawn(async move {
                    r.serve_with_incoming(TcpListenerStream::new(listener))
                        .await
                });
            }
        }
    }
    // The local API's state, which the UI also reads for its audit-mode badges.
    let api = enforce.is_some().then(AgentApi::new);
    if !ui_listen_address.is_empty() {
        let mut ui = imdsguard_ui::UiServer::bind(&ui_listen_address, hub.clone())
            .await
            .map_err(AgentError::io(format!(
                "listening on {ui_listen_address} for the UI"
            )))?;
        if let Some(api) = &api {
            let api = api.clone();
            ui = ui.with_audit(Arc::new(move || api.audit_modes()));
        }
        match ui.local_addr() {
            Ok(a) => info!("ui: serving on http://{a}/"),
            Err(_) => info!("ui: serving on http://{ui_listen_address}/"),
        }
        servers.spawn(async move {
            if let Err(e) = ui.serve().await {
                error!(error = %e, "ui: the server stopped");
            }
            std::future::pending().await
        });
    }
    if let Some(path) = &hubble.socket_path {
        if path.exists() {
            std::fs::remove_file(path).map_err(AgentError::io(format!(
                "removing the stale socket {}",
                path.display()
            )))?;
        }
        let listener = tokio::net::UnixListener::bind(path)
            .map_err(AgentError::io(format!("binding {}", path.display())))?;
        info!("hubble: serving on unix://{}", path.display());
        let r = router(hub.clone()).await;
        servers.spawn(async move {
            r.serve_with_incoming(UnixListenerStream::new(listener))
                .await
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let api_socket = enforce.as_ref().map(|e| e.socket_path.clone());
    let mut datapath = match enforce.zip(api) {
        Some((enforce, api)) => {
            Some(start_enforcing(enforce, api, client, &node, &hub, &stop, &mut servers).await?)
        }
        None => None,
    };
    if let Some(r) = replay {
        let task = crate::replay::start(r, hub.clone())?;
        servers.spawn(async move {
            task.await;
            std::future::pending().await
        });
    }
    let datapath_done = async {
        match &mut datapath {
            Some(handle) => match handle.await {
                Ok(r) => r,
                Err(e) => Err(AgentError::Other {
                    context: "the datapath task failed".into(),
                    source: e.into(),
                }),
            },
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = servers.join_next(), if !servers.is_empty() => match r {
            Some(Ok(Err(e))) => Err(AgentError::Other { context: "gRPC server failed".into(), source: e.into() }),
            Some(Err(e)) => Err(AgentError::Other { context: "gRPC server task failed".into(), source: e.into() }),
            _ => Ok(()),
        },
        r = datapath_done => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminated() => Ok(()),
    };
    stop.store(true, Ordering::Relaxed);
    if let Err(e) = hub.flush_export() {
        warn!(error = %e, "flow export: cannot write");
    }
    if let Some(path) = &hubble.socket_path {
        let _ = std::fs::remove_file(path);
    }
    if let Some(path) = &api_socket {
        let _ = std::fs::remove_file(path);
    }
    result
}

async fn bind(addr: &str, context: String) -> Result<tokio::net::TcpListener, AgentError> {
    tokio::net::TcpListener::bind(listen_address(addr))
        .await
        .map_err(AgentError::io(context))
}

fn local(l: &tokio::net::TcpListener) -> String {
    l.local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|e| format!("? ({e})"))
}

/// The inputs, the local API, the proxy, and the reconciliation loop on a blocking thread.
async fn start_enforcing(
    cfg: EnforceConfig,
    api: Arc<AgentApi>,
    client: Option<KubeClient>,
    node: &str,
    hub: &Arc<Hub>,
    stop: &Arc<AtomicBool>,
    servers: &mut JoinSet<ServerResult>,
) -> Result<tokio::task::JoinHandle<Result<(), AgentError>>, AgentError> {
    let inputs: Box<dyn Inputs> = match &cfg.source {
        InputSource::Files {
            policies,
            endpoints,
        } => Box::new(
            FileInputs::new(policies.clone(), endpoints.clone(), cfg.guard_unknown_veths)
                .host_network_pods(cfg.host_network_pods),
        ),
        InputSource::Cluster { policies } => {
            let Some(client) = client else {
                return Err(AgentError::Config(
                    "enforcing from a cluster needs the cluster's configuration".into(),
                ));
            };
            let cluster = Cluster::start_with(client, node);
            info!("kubernetes: watching pods of node {node}, namespaces and Cilium policies");
            let problems = report_policy_problems(cluster.clone(), node.to_owned());
            Box::new(
                ClusterInputs::new(
                    cluster,
                    policies.clone(),
                    Some(problems),
                    cfg.guard_unknown_veths,
                )
                .host_network_pods(cfg.host_network_pods),
            )
        }
    };
    {
        let (api, path): (_, PathBuf) = (api.clone(), cfg.socket_path.clone());
        servers.spawn(async move {
            if let Err(e) = api::serve(&path, api).await {
                error!(error = %crate::logging::chain(&e), "api: the server stopped");
            }
            std::future::pending().await
        });
    }
    let view = Arc::new(SharedView::default());
    let sockets = Arc::new(crate::sockets::Sockets::default());
    let listeners = crate::proxy::start(
        cfg.proxy_port,
        cfg.proxy_upstream_mark,
        node,
        hub,
        view.clone(),
        sockets.clone(),
        servers,
    )?;
    let shared = Shared {
        hub: hub.clone(),
        node: node.to_owned(),
        view,
        sockets,
        api,
        stop: stop.clone(),
    };
    Ok(tokio::task::spawn_blocking(move || {
        reconcile::run(cfg, inputs, listeners, shared)
    }))
}

/// Invalid policies become Kubernetes Events on their objects, sent from a task of their own so
/// the API server's latency never slows the loop.
fn report_policy_problems(
    cluster: Cluster,
    node: String,
) -> tokio::sync::mpsc::UnboundedSender<PolicyProblem> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PolicyProblem>();
    let mut reporter = PolicyEvents::new(cluster, node);
    tokio::spawn(async move {
        while let Some(problem) = rx.recv().await {
            let (kind, namespace, policy) = (
                problem.kind.clone(),
                problem.namespace.clone(),
                problem.name.clone(),
            );
            if let Err(e) = reporter.report(problem).await {
                warn!(
                    kind,
                    namespace,
                    policy,
                    error = %e,
                    "kubernetes: cannot create an Event for an invalid policy"
                );
            }
        }
    });
    tx
}

/// SIGTERM (how Kubernetes and tests stop the agent).
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
