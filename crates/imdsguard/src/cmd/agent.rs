//! `imdsguard agent`: the node agent. With `--endpoints` (and `--policies`) it enforces through
//! the eBPF datapath; with `--replay-flows` it serves recorded flows (demos, UI trials). Either
//! way flows are served over Hubble's gRPC API, as metrics and as a JSON export.

use super::agent_api::{self, AgentApi};
use super::inputs::{ClusterInputs, FileInputs, Inputs};
use anyhow::{Context, Result, bail};
use clap::Args;
use imdsguard_hubble_proto::flow::FlowFilter;
use imdsguard_hubble_proto::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use imdsguard_hubble_proto::wkt::Timestamp;
use imdsguard_hubble_server::exporter::{ExportOptions, FlowExporter};
use imdsguard_hubble_server::metrics::FlowMetrics;
use imdsguard_hubble_server::server::{Hub, HubOptions, router, serve_metrics};
use imdsguard_k8s::events::PolicyEvents;
use imdsguard_k8s::{Cluster, ClusterOptions};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tracing::{error, info, warn};

#[derive(Args, Debug)]
pub struct AgentArgs {
    #[command(flatten)]
    enforce: super::enforce::EnforceArgs,
    #[command(flatten)]
    log: crate::logging::LogArgs,
    /// Replay flows recorded with `hubble observe -o jsonpb` (or `imdsguard observe -o json`).
    #[arg(long, value_name = "FILE")]
    replay_flows: Option<PathBuf>,
    /// Pause between replayed flows (a Go-style duration: 10ms, 1s).
    #[arg(long, default_value = "0s")]
    replay_interval: String,
    /// Start the replay again at the end of the file.
    #[arg(long)]
    replay_loop: bool,
    /// Keep the recorded timestamps instead of stamping replayed flows with the current time.
    #[arg(long)]
    replay_keep_time: bool,
    /// Hubble's gRPC listener (Cilium's --hubble-listen-address); empty disables it.
    #[arg(long, default_value = "127.0.0.1:4244")]
    hubble_listen_address: String,
    /// Hubble's unix socket (Cilium uses /var/run/cilium/hubble.sock); empty disables it.
    #[arg(long, default_value = "")]
    hubble_socket_path: String,
    /// Flows kept in memory (rounded up to 2^n-1, as Cilium's --hubble-event-buffer-capacity).
    #[arg(long, default_value_t = 4095)]
    hubble_event_buffer_capacity: usize,
    /// This node's name (default: $K8S_NODE_NAME, then the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// Serve Prometheus metrics (Hubble's names) at http://ADDR/metrics; empty disables it.
    #[arg(long, default_value = "")]
    hubble_metrics_server: String,
    /// Write every flow as a JSON line (`hubble observe -o jsonpb` format) to this file.
    #[arg(long, default_value = "")]
    hubble_export_file_path: String,
    /// Rotate the export file at this size.
    #[arg(long, default_value_t = 10)]
    hubble_export_file_max_size_mb: u64,
    /// Rotated export files kept.
    #[arg(long, default_value_t = 5)]
    hubble_export_file_max_backups: usize,
    /// Export only flows matching one of these FlowFilters (a JSON object or list).
    #[arg(long, default_value = "")]
    hubble_export_allowlist: String,
    /// Never export flows matching one of these FlowFilters (a JSON object or list).
    #[arg(long, default_value = "")]
    hubble_export_denylist: String,
    /// Serve the web UI (flows, service map, IMDS view) and its JSON API here, e.g.
    /// 127.0.0.1:12000 (`:PORT` is loopback); empty disables it. No authentication: keep it on
    /// loopback.
    #[arg(long, default_value = "")]
    ui_listen_address: String,
}

/// A FlowFilter list given as one JSON object or a JSON array of them.
fn filter_list(flag: &str, text: &str) -> Result<Vec<FlowFilter>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let parsed = if text.starts_with('[') {
        serde_json::from_str::<Vec<FlowFilter>>(text)
    } else {
        serde_json::from_str::<FlowFilter>(text).map(|f| vec![f])
    };
    parsed.with_context(|| format!("--{flag}: expected a FlowFilter JSON object or list, e.g. '{{\"verdict\":[\"DROPPED\"]}}'"))
}

/// Go's listen addresses as Cilium takes them: `:4244` is every address, IPv6 and IPv4.
fn listen_address(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("[::]:{port}"),
        None => addr.to_owned(),
    }
}

fn node_name(arg: &Option<String>) -> String {
    if let Some(n) = arg {
        return n.clone();
    }
    if let Ok(n) = std::env::var("K8S_NODE_NAME")
        && !n.is_empty()
    {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Reads a recorded file; malformed lines are reported with their number and skipped.
fn read_flows(path: &PathBuf) -> Result<Vec<GetFlowsResponse>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<GetFlowsResponse>(&line) {
            Ok(r) => out.push(r),
            Err(e) => warn!(
                error = %e,
                "{}:{}: skipping a malformed line",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(out)
}

pub fn run(args: AgentArgs) -> Result<ExitCode> {
    crate::logging::init(&args.log);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(serve(args)));
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            // In the log's format, so that every line a log pipeline reads parses.
            error!(error = format!("{e:#}"), "the agent stopped");
            Ok(ExitCode::from(2))
        }
    }
}

async fn serve(args: AgentArgs) -> Result<ExitCode> {
    let node = node_name(&args.node_name);
    let interval = imdsguard_flow::timespec::parse_duration(&args.replay_interval)
        .with_context(|| format!("invalid --replay-interval {:?}", args.replay_interval))?;
    if !(1..=65_535).contains(&args.hubble_event_buffer_capacity) {
        bail!(
            "--hubble-event-buffer-capacity must be between 1 and 65535 (as in Cilium), got {}",
            args.hubble_event_buffer_capacity
        );
    }
    let metrics =
        (!args.hubble_metrics_server.is_empty()).then(|| Arc::new(FlowMetrics::default()));
    let exporter = if args.hubble_export_file_path.is_empty() {
        None
    } else {
        Some(
            FlowExporter::new(ExportOptions {
                path: PathBuf::from(&args.hubble_export_file_path),
                max_bytes: args.hubble_export_file_max_size_mb.saturating_mul(1 << 20),
                max_backups: args.hubble_export_file_max_backups,
                allow: filter_list("hubble-export-allowlist", &args.hubble_export_allowlist)?,
                deny: filter_list("hubble-export-denylist", &args.hubble_export_denylist)?,
            })
            .context("starting the flow exporter")?,
        )
    };
    let hub = Hub::with_options(HubOptions {
        capacity: args.hubble_event_buffer_capacity,
        node_name: node.clone(),
        address: args.hubble_listen_address.clone(),
        metrics: metrics.clone(),
        exporter,
    });
    let mut servers = tokio::task::JoinSet::new();
    if let Some(m) = &metrics {
        let listener = tokio::net::TcpListener::bind(listen_address(&args.hubble_metrics_server))
            .await
            .with_context(|| format!("listening on {} for metrics", args.hubble_metrics_server))?;
        info!(
            "metrics: serving on http://{}/metrics",
            listener.local_addr()?
        );
        let m = m.clone();
        servers.spawn(async move {
            match serve_metrics(listener, m).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    error!(error = %e, "metrics: the server stopped");
                    std::future::pending().await
                }
            }
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
    if !args.hubble_listen_address.is_empty() {
        let listener = tokio::net::TcpListener::bind(listen_address(&args.hubble_listen_address))
            .await
            .with_context(|| {
                format!(
                    "listening on {} (is another agent running?)",
                    args.hubble_listen_address
                )
            })?;
        info!("hubble: serving on {}", listener.local_addr()?);
        let r = router(hub.clone()).await;
        servers.spawn(async move {
            r.serve_with_incoming(TcpListenerStream::new(listener))
                .await
        });
    }
    if !args.ui_listen_address.is_empty() {
        let ui = imdsguard_ui::UiServer::bind(&args.ui_listen_address, hub.clone())
            .await
            .with_context(|| format!("listening on {} for the UI", args.ui_listen_address))?;
        info!("ui: serving on http://{}/", ui.local_addr()?);
        servers.spawn(async move {
            if let Err(e) = ui.serve().await {
                error!(error = %e, "ui: the server stopped");
            }
            std::future::pending().await
        });
    }
    let socket =
        (!args.hubble_socket_path.is_empty()).then(|| PathBuf::from(&args.hubble_socket_path));
    if let Some(path) = &socket {
        if path.exists() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("binding {}", path.display()))?;
        info!("hubble: serving on unix://{}", path.display());
        let r = router(hub.clone()).await;
        servers.spawn(async move {
            r.serve_with_incoming(UnixListenerStream::new(listener))
                .await
        });
    }
    // In a pod with no --endpoints, the cluster is the source (the DaemonSet's case).
    let in_cluster = args.enforce.endpoints.is_none()
        && args.replay_flows.is_none()
        && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let from_cluster = args.enforce.kubeconfig.is_some() || in_cluster;
    if from_cluster && args.enforce.endpoints.is_some() {
        bail!(
            "give either --kubeconfig (pods from the cluster) or --endpoints (pods from a file), not both"
        );
    }
    if args.enforce.policies.is_some() && args.enforce.endpoints.is_none() && !from_cluster {
        bail!(
            "--policies needs --endpoints (this node's pods and their interfaces); with a cluster, give --kubeconfig and keep the policies in the cluster"
        );
    }
    let enforcing = args.enforce.endpoints.is_some() || from_cluster;
    if enforcing && let Some(cni) = super::enforce::cilium_datapath() {
        bail!(
            "Cilium is this node's datapath ({cni}): it enforces Cilium's policies itself, and imdsguard must not attach next to it. Use imdsguard here as the offline tool (policy check|trace|test, observe, replay); see docs/kubernetes.md"
        );
    }
    if args.hubble_listen_address.is_empty()
        && socket.is_none()
        && args.ui_listen_address.is_empty()
        && !enforcing
    {
        bail!(
            "nothing to do: give --kubeconfig or --endpoints to enforce, or --hubble-listen-address, --hubble-socket-path or --ui-listen-address to serve flows"
        );
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut datapath = if enforcing {
        let inputs: Box<dyn Inputs> = match &args.enforce.endpoints {
            Some(endpoints) => Box::new(FileInputs::new(
                args.enforce.policies.clone(),
                endpoints.clone(),
                args.enforce.guard_unknown_veths(),
            )),
            None => {
                let cluster = Cluster::start(&ClusterOptions {
                    node_name: node.clone(),
                    kubeconfig: args.enforce.kubeconfig.clone(),
                })
                .await?;
                info!("kubernetes: watching pods of node {node}, namespaces and Cilium policies");
                let (tx, mut rx) =
                    tokio::sync::mpsc::unbounded_channel::<imdsguard_k8s::events::PolicyProblem>();
                let mut reporter = PolicyEvents::new(cluster.clone(), node.clone());
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
                Box::new(ClusterInputs::new(
                    cluster,
                    args.enforce.policies.clone(),
                    Some(tx),
                    args.enforce.guard_unknown_veths(),
                ))
            }
        };
        let api = AgentApi::new();
        {
            let (api, path) = (api.clone(), args.enforce.socket_path.clone());
            servers.spawn(async move {
                if let Err(e) = agent_api::serve(&path, api).await {
                    error!(error = format!("{e:#}"), "api: the server stopped");
                }
                std::future::pending().await
            });
        }
        let view = Arc::new(super::enforce::ProxyShared::default());
        start_proxy(&args, &node, &hub, view.clone(), &mut servers)?;
        let (enforce, hub, node, stop) = (
            args.enforce.clone(),
            hub.clone(),
            node.clone(),
            stop.clone(),
        );
        Some(tokio::task::spawn_blocking(move || {
            super::enforce::run(enforce, inputs, hub, node, view, api, stop)
        }))
    } else {
        None
    };
    if let Some(path) = &args.replay_flows {
        let flows = read_flows(path)?;
        info!("replaying {} flows from {}", flows.len(), path.display());
        let hub: Arc<Hub> = hub.clone();
        let (keep_time, replay_loop) = (args.replay_keep_time, args.replay_loop);
        servers.spawn(async move {
            loop {
                for resp in &flows {
                    if let Some(ResponseTypes::Flow(f)) = &resp.response_types {
                        let mut f = f.clone();
                        if !keep_time {
                            f.time = Some(Timestamp::now());
                        }
                        hub.ingest(f);
                    }
                    if interval > 0 {
                        tokio::time::sleep(Duration::from_nanos(interval as u64)).await;
                    }
                }
                if !replay_loop {
                    break;
                }
                if interval == 0 {
                    // A file replayed in a tight loop would starve nothing but still burn a core.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            std::future::pending::<Result<(), tonic::transport::Error>>().await
        });
    }
    let datapath_done = async {
        match &mut datapath {
            Some(handle) => match handle.await {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("the datapath task failed: {e}")),
            },
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = servers.join_next(), if !servers.is_empty() => match r {
            Some(Ok(Err(e))) => Err(anyhow::anyhow!("gRPC server failed: {e}")),
            Some(Err(e)) => Err(anyhow::anyhow!("gRPC server task failed: {e}")),
            _ => Ok(()),
        },
        r = datapath_done => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminated() => Ok(()),
    };
    // The pinned programs and maps stay: enforcement continues while no agent runs.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = hub.flush_export() {
        warn!(error = %e, "flow export: cannot write");
    }
    if let Some(path) = &socket {
        let _ = std::fs::remove_file(path);
    }
    if enforcing {
        let _ = std::fs::remove_file(&args.enforce.socket_path);
    }
    result.map(|_| ExitCode::SUCCESS)
}

/// The L7 proxy: the routing its redirect needs, then transparent listeners on loopback, where
/// the datapath assigns connections whose policy has HTTP rules.
fn start_proxy(
    args: &AgentArgs,
    node: &str,
    hub: &Arc<Hub>,
    view: Arc<super::enforce::ProxyShared>,
    servers: &mut tokio::task::JoinSet<Result<(), tonic::transport::Error>>,
) -> Result<()> {
    use imdsguard_proxy::routing;
    use imdsguard_proxy::server::{ProxyConfig, serve, transparent_listener};
    routing::install(routing::MARK, routing::TABLE)
        .context("installing the proxy's policy routing (needs CAP_NET_ADMIN)")?;
    let port = args.enforce.proxy_port;
    let cfg = ProxyConfig {
        node_name: node.to_owned(),
        upstream_mark: args.enforce.proxy_upstream_mark,
        ..Default::default()
    };
    let sink: Arc<dyn imdsguard_proxy::server::FlowSink> =
        Arc::new(super::enforce::HubSink(hub.clone()));
    for addr in [
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
    ] {
        match transparent_listener(addr) {
            Ok(l) => {
                info!("proxy: listening on {addr} (transparent)");
                let fd = std::os::fd::AsFd::as_fd(&l)
                    .try_clone_to_owned()
                    .context("duplicating the proxy's listener")?;
                view.add_listener(addr.is_ipv6(), fd);
                let (cfg, view, sink) = (cfg.clone(), view.clone(), sink.clone());
                let authority: Arc<dyn imdsguard_proxy::server::Authority> = view;
                servers.spawn(async move {
                    if let Err(e) = serve(l, cfg, authority, sink).await {
                        error!(error = %e, "proxy: the listener on {addr} stopped");
                    }
                    std::future::pending().await
                });
            }
            Err(e) if addr.is_ipv6() => warn!(error = %e, "proxy: not listening on {addr}"),
            Err(e) => {
                return Err(anyhow::anyhow!(e).context(format!(
                    "listening on {addr} for the L7 proxy (is --proxy-port {port} in use?)"
                )));
            }
        }
    }
    Ok(())
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
