//! Hubble's Observer and Peer services over the flow ring (docs/hubble.md#the-services).

use crate::exporter::{ExportError, FlowExporter};
use crate::metrics::FlowMetrics;
use crate::ring::{Read, Reader, Ring};
use imdsguard_flow::filter::FlowFilters;
use imdsguard_hubble_proto::flow::{Endpoint, Flow, LostEvent, LostEventSource};
use imdsguard_hubble_proto::observer::Tls as NodeTls;
use imdsguard_hubble_proto::observer::get_flows_response::ResponseTypes;
use imdsguard_hubble_proto::observer::observer_server::{Observer, ObserverServer};
use imdsguard_hubble_proto::observer::{
    GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest, GetDebugEventsResponse,
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, Namespace, Node, ServerStatusRequest, ServerStatusResponse,
};
use imdsguard_hubble_proto::peer::peer_server::{Peer, PeerServer};
use imdsguard_hubble_proto::peer::{
    ChangeNotification, ChangeNotificationType, NotifyRequest, Tls as PeerTls,
};
use imdsguard_hubble_proto::relay::NodeState;
use imdsguard_hubble_proto::wkt::Timestamp;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// The name `hubble status` asks the health service about.
pub const OBSERVER_SERVICE_NAME: &str = "hubble.server.Observer";
/// Hubble compares its own minor version with this; we speak Hubble 1.19's API.
pub const HUBBLE_API_VERSION: &str = "1.19.4";

pub type Entry = Arc<GetFlowsResponse>;

/// What the services share with the agent that feeds them.
pub struct Hub {
    ring: Arc<Ring<Entry>>,
    node_name: String,
    address: String,
    started: Instant,
    /// `cluster/namespace` → last seen; entries older than an hour are dropped (Hubble's TTL).
    namespaces: Mutex<BTreeMap<(String, String), Instant>>,
    metrics: Option<Arc<FlowMetrics>>,
    exporter: Option<Mutex<FlowExporter>>,
    /// The name clients verify this server's certificate against; None: no TLS.
    tls_server_name: Option<String>,
    peers: Peers,
}

/// What a [`Hub`] is built from.
pub struct HubOptions {
    pub capacity: usize,
    pub node_name: String,
    pub address: String,
    pub metrics: Option<Arc<FlowMetrics>>,
    pub exporter: Option<FlowExporter>,
    /// Set when the TCP listener serves TLS: the name its certificate is for
    /// ([`crate::tls::server_name`]).
    pub tls_server_name: Option<String>,
}

/// One Hubble server that the Peer service announces, for Relay to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The node's name (`cluster/node` outside the `default` cluster, as Cilium names it).
    pub name: String,
    /// `IP:port`, or what the agent was told to listen on.
    pub address: String,
    /// The name to verify its certificate against; None when it serves without TLS.
    pub tls_server_name: Option<String>,
}

/// The peers the Peer service announces: one entry per name. Every `Notify` stream sees the
/// current set first, then what changed, computed from the sets themselves, so that a reader
/// that was slow only ever skips intermediate states, never a final one.
pub struct Peers {
    tx: watch::Sender<BTreeMap<String, PeerInfo>>,
}

impl Peers {
    fn new(initial: PeerInfo) -> Peers {
        let mut set = BTreeMap::new();
        set.insert(initial.name.clone(), initial);
        Peers {
            tx: watch::Sender::new(set),
        }
    }

    /// Replaces the set; streams are told only if it differs.
    pub fn set(&self, peers: impl IntoIterator<Item = PeerInfo>) {
        let new: BTreeMap<String, PeerInfo> =
            peers.into_iter().map(|p| (p.name.clone(), p)).collect();
        self.tx.send_if_modified(|cur| {
            if *cur == new {
                return false;
            }
            *cur = new;
            true
        });
    }

    /// The set as announced now, by name.
    pub fn current(&self) -> Vec<PeerInfo> {
        self.tx.borrow().values().cloned().collect()
    }

    fn subscribe(&self) -> watch::Receiver<BTreeMap<String, PeerInfo>> {
        self.tx.subscribe()
    }
}

fn notification(p: &PeerInfo, t: ChangeNotificationType) -> ChangeNotification {
    ChangeNotification {
        name: p.name.clone(),
        address: p.address.clone(),
        r#type: t as i32,
        tls: p.tls_server_name.as_ref().map(|n| PeerTls {
            server_name: n.clone(),
        }),
    }
}

/// What turns the announced set `old` into `new`, in name order: PEER_DELETED for names gone,
/// PEER_ADDED for new names, PEER_UPDATED for names whose address or TLS name changed.
pub fn peer_changes(
    old: &BTreeMap<String, PeerInfo>,
    new: &BTreeMap<String, PeerInfo>,
) -> Vec<ChangeNotification> {
    let mut out = Vec::new();
    for (name, p) in old {
        if !new.contains_key(name) {
            out.push(notification(p, ChangeNotificationType::PeerDeleted));
        }
    }
    for (name, p) in new {
        match old.get(name) {
            None => out.push(notification(p, ChangeNotificationType::PeerAdded)),
            Some(was) if was != p => out.push(notification(p, ChangeNotificationType::PeerUpdated)),
            Some(_) => {}
        }
    }
    out
}

impl Hub {
    pub fn new(
        capacity: usize,
        node_name: impl Into<String>,
        address: impl Into<String>,
    ) -> Arc<Hub> {
        Hub::with_options(HubOptions {
            capacity,
            node_name: node_name.into(),
            address: address.into(),
            metrics: None,
            exporter: None,
            tls_server_name: None,
        })
    }

    /// A hub whose Peer service announces only itself until [`Hub::peers`] is given the
    /// cluster's nodes.
    pub fn with_options(o: HubOptions) -> Arc<Hub> {
        let peers = Peers::new(PeerInfo {
            name: o.node_name.clone(),
            address: o.address.clone(),
            tls_server_name: o.tls_server_name.clone(),
        });
        Arc::new(Hub {
            ring: Ring::new(o.capacity),
            peers,
            tls_server_name: o.tls_server_name,
            node_name: o.node_name,
            address: o.address,
            started: Instant::now(),
            namespaces: Mutex::new(BTreeMap::new()),
            metrics: o.metrics,
            exporter: o.exporter.map(Mutex::new),
        })
    }

    pub fn metrics(&self) -> Option<&Arc<FlowMetrics>> {
        self.metrics.as_ref()
    }

    /// Pushes buffered export lines to the file (the agent calls this once a second).
    pub fn flush_export(&self) -> Result<(), ExportError> {
        match &self.exporter {
            Some(e) => match e.lock() {
                Ok(mut e) => e.flush(),
                Err(_) => Ok(()),
            },
            None => Ok(()),
        }
    }

    pub fn ring(&self) -> &Arc<Ring<Entry>> {
        &self.ring
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// What the Peer service announces.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Adds a flow: wrapped as Hubble sends it (`node_name` and `time` copied to the top level).
    pub fn ingest(&self, flow: Flow) {
        let now = Instant::now();
        if let Ok(mut ns) = self.namespaces.lock() {
            for ep in [&flow.source, &flow.destination].into_iter().flatten() {
                if !ep.namespace.is_empty() {
                    let cluster = if ep.cluster_name.is_empty() {
                        "default"
                    } else {
                        &ep.cluster_name
                    };
                    ns.insert((cluster.to_owned(), ep.namespace.clone()), now);
                }
            }
        }
        let node_name = if flow.node_name.is_empty() {
            self.node_name.clone()
        } else {
            flow.node_name.clone()
        };
        if let Some(m) = &self.metrics {
            m.observe(&flow);
        }
        let time = flow.time;
        let entry = Arc::new(GetFlowsResponse {
            node_name,
            time,
            response_types: Some(ResponseTypes::Flow(flow)),
        });
        if let Some(e) = &self.exporter
            && let Ok(mut e) = e.lock()
            && let Err(err) = e.export(&entry)
        {
            // The export is a copy for shippers: a full disk must not stop observation.
            tracing::warn!(error = %err, "flow export: cannot write a flow");
        }
        self.ring.push(entry);
    }

    fn uptime_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }
}

/// The Observer service.
#[derive(Clone)]
pub struct ObserverService {
    hub: Arc<Hub>,
}

/// The Peer service: the hub's [`Peers`], this node alone unless the agent knows its cluster.
#[derive(Clone)]
pub struct PeerService {
    hub: Arc<Hub>,
}

fn with_version<T>(msg: T) -> Response<T> {
    let mut r = Response::new(msg);
    r.metadata_mut().insert(
        "hubble-server-version",
        tonic::metadata::MetadataValue::from_static(HUBBLE_API_VERSION),
    );
    r
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn entry_time(e: &GetFlowsResponse) -> Option<Timestamp> {
    e.time.or(match &e.response_types {
        Some(ResponseTypes::Flow(f)) => f.time,
        _ => None,
    })
}

/// The endpoint fields a mask keeps: all of them for `source`, only the named ones for
/// `source.identity`, `source.namespace` … (the paths Hubble's CLI sends by default).
fn mask_endpoint(ep: &Option<Endpoint>, paths: &[String], side: &str) -> Option<Endpoint> {
    let ep = ep.as_ref()?;
    if paths.iter().any(|p| p == side) {
        return Some(ep.clone());
    }
    let prefix = format!("{side}.");
    let sub: Vec<&str> = paths
        .iter()
        .filter_map(|p| p.strip_prefix(&prefix))
        .collect();
    if sub.is_empty() {
        return None;
    }
    let has = |f: &str| sub.contains(&f);
    Some(Endpoint {
        id: if has("ID") { ep.id } else { 0 },
        identity: if has("identity") { ep.identity } else { 0 },
        cluster_name: if has("cluster_name") {
            ep.cluster_name.clone()
        } else {
            String::new()
        },
        namespace: if has("namespace") {
            ep.namespace.clone()
        } else {
            String::new()
        },
        labels: if has("labels") {
            ep.labels.clone()
        } else {
            Vec::new()
        },
        pod_name: if has("pod_name") {
            ep.pod_name.clone()
        } else {
            String::new()
        },
        workloads: if has("workloads") {
            ep.workloads.clone()
        } else {
            Vec::new()
        },
    })
}

/// Keeps what a field mask names (top-level fields whole; `source.*`/`destination.*` per field),
/// plus the two fields the 1.19 CLI needs but forgets to ask for (docs/hubble.md#filters:
/// traffic_direction and policy_match_type).
fn apply_mask(flow: &Flow, paths: &[String]) -> Flow {
    let keep = |name: &str| paths.iter().any(|p| p.split('.').next() == Some(name));
    let mut out = Flow {
        traffic_direction: flow.traffic_direction,
        policy_match_type: flow.policy_match_type,
        source: mask_endpoint(&flow.source, paths, "source"),
        destination: mask_endpoint(&flow.destination, paths, "destination"),
        ..Default::default()
    };
    macro_rules! copy {
        ($($field:ident => $name:literal),* $(,)?) => {
            $(if keep($name) { out.$field = flow.$field.clone(); })*
        };
    }
    #[allow(deprecated)]
    {
        copy!(time => "time", uuid => "uuid", emitter => "emitter", verdict => "verdict", drop_reason => "drop_reason",
            auth_type => "auth_type", ethernet => "ethernet", ip => "IP", l4 => "l4", tunnel => "tunnel",
            r#type => "Type", node_name => "node_name",
            node_labels => "node_labels", source_names => "source_names", destination_names => "destination_names",
            l7 => "l7", reply => "reply", event_type => "event_type", source_service => "source_service",
            destination_service => "destination_service", trace_observation_point => "trace_observation_point",
            trace_reason => "trace_reason", file => "file", ip_trace_id => "ip_trace_id",
            drop_reason_desc => "drop_reason_desc", is_reply => "is_reply", debug_capture_point => "debug_capture_point",
            interface => "interface", proxy_port => "proxy_port", trace_context => "trace_context",
            sock_xlate_point => "sock_xlate_point", socket_cookie => "socket_cookie", cgroup_id => "cgroup_id",
            summary => "Summary", extensions => "extensions", egress_allowed_by => "egress_allowed_by",
            ingress_allowed_by => "ingress_allowed_by", egress_denied_by => "egress_denied_by",
            ingress_denied_by => "ingress_denied_by", policy_log => "policy_log", aggregate => "aggregate");
    }
    out
}

/// One GetFlows call after validation.
struct Query {
    filters: FlowFilters,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    number: u64,
    first: bool,
    follow: bool,
    mask: Vec<String>,
}

impl Query {
    fn matches(&self, e: &GetFlowsResponse) -> bool {
        match &e.response_types {
            Some(ResponseTypes::Flow(f)) => self.filters.matches(f),
            _ => false,
        }
    }
}

impl ObserverService {
    pub fn new(hub: Arc<Hub>) -> ObserverService {
        ObserverService { hub }
    }

    /// Where the stream starts (docs/hubble.md#getflows-over-the-ring-buffer): the oldest entry,
    /// only new ones, or far enough back to cover `number` matching flows (or everything since
    /// `since`).
    fn start(&self, q: &Query) -> Reader<Entry> {
        let ring = self.hub.ring();
        if q.first && q.since.is_none() {
            return ring.reader_at_oldest();
        }
        if q.follow && q.number == 0 && q.since.is_none() {
            return ring.reader_at_end();
        }
        let mut start = None;
        let mut counted = 0u64;
        for (seq, e) in ring.snapshot_newest_first() {
            if let (Some(since), Some(t)) = (q.since, entry_time(&e))
                && t < since
            {
                break;
            }
            if matches!(e.response_types, Some(ResponseTypes::LostEvents(_))) {
                break;
            }
            start = Some(seq);
            if q.matches(&e) {
                counted += 1;
                if q.since.is_none() && q.number > 0 && counted >= q.number {
                    break;
                }
            }
        }
        match start {
            Some(seq) => ring.reader_at(seq),
            None => ring.reader_at_end(),
        }
    }

    async fn stream(
        self,
        q: Query,
        mut reader: Reader<Entry>,
        tx: mpsc::Sender<Result<GetFlowsResponse, Status>>,
    ) {
        let mut sent = 0u64;
        loop {
            let read = if q.follow {
                reader.next().await
            } else {
                reader.try_next()
            };
            let out = match read {
                Read::Empty => return,
                Read::Lost(n) => {
                    if let Some(m) = self.hub.metrics() {
                        m.lost("hubble_ring_buffer", n);
                    }
                    GetFlowsResponse {
                        node_name: self.hub.node_name.clone(),
                        time: Some(Timestamp::now()),
                        response_types: Some(ResponseTypes::LostEvents(LostEvent {
                            source: LostEventSource::HubbleRingBuffer as i32,
                            num_events_lost: n,
                            ..Default::default()
                        })),
                    }
                }
                Read::Item(_, e) => {
                    let t = entry_time(&e);
                    if let (Some(until), Some(t)) = (q.until, t)
                        && t > until
                    {
                        return;
                    }
                    if let (Some(since), Some(t)) = (q.since, t)
                        && t < since
                    {
                        continue;
                    }
                    if !q.matches(&e) {
                        continue;
                    }
                    let mut resp = (*e).clone();
                    if !q.mask.is_empty()
                        && let Some(ResponseTypes::Flow(f)) = &resp.response_types
                    {
                        resp.response_types = Some(ResponseTypes::Flow(apply_mask(f, &q.mask)));
                    }
                    sent += 1;
                    resp
                }
            };
            // A slow client only ever waits on its own channel; the ring never waits for it.
            if tx.send(Ok(out)).await.is_err() {
                return;
            }
            if q.first && q.number > 0 && sent >= q.number {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl Observer for ObserverService {
    type GetFlowsStream = BoxStream<GetFlowsResponse>;
    type GetAgentEventsStream = BoxStream<GetAgentEventsResponse>;
    type GetDebugEventsStream = BoxStream<GetDebugEventsResponse>;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = request.into_inner();
        if req.first && req.follow {
            return Err(Status::invalid_argument(
                "first cannot be specified with follow",
            ));
        }
        let filters = FlowFilters::new(&req.whitelist, &req.blacklist)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let q = Query {
            filters,
            since: req.since,
            until: if req.follow { None } else { req.until },
            number: req.number,
            first: req.first,
            follow: req.follow,
            mask: req.field_mask.map(|m| m.paths).unwrap_or_default(),
        };
        let reader = self.start(&q);
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(self.clone().stream(q, reader, tx));
        Ok(with_version(
            Box::pin(ReceiverStream::new(rx)) as Self::GetFlowsStream
        ))
    }

    async fn get_agent_events(
        &self,
        _request: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Ok(with_version(
            Box::pin(tokio_stream::empty()) as Self::GetAgentEventsStream
        ))
    }

    async fn get_debug_events(
        &self,
        _request: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Ok(with_version(
            Box::pin(tokio_stream::empty()) as Self::GetDebugEventsStream
        ))
    }

    async fn get_nodes(
        &self,
        _request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let ring = self.hub.ring();
        let node = Node {
            name: self.hub.node_name.clone(),
            version: HUBBLE_API_VERSION.to_owned(),
            address: self.hub.address.clone(),
            state: NodeState::NodeConnected as i32,
            tls: Some(NodeTls {
                enabled: self.hub.tls_server_name.is_some(),
                server_name: self.hub.tls_server_name.clone().unwrap_or_default(),
            }),
            uptime_ns: self.hub.uptime_ns(),
            num_flows: ring.len() as u64,
            max_flows: ring.capacity() as u64,
            seen_flows: ring.seen(),
        };
        Ok(with_version(GetNodesResponse { nodes: vec![node] }))
    }

    async fn get_namespaces(
        &self,
        _request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let mut ns = self
            .hub
            .namespaces
            .lock()
            .map_err(|_| Status::internal("namespace table poisoned"))?;
        ns.retain(|_, seen| seen.elapsed() < Duration::from_secs(3600));
        let namespaces = ns
            .keys()
            .map(|(cluster, namespace)| Namespace {
                cluster: cluster.clone(),
                namespace: namespace.clone(),
            })
            .collect();
        Ok(with_version(GetNamespacesResponse { namespaces }))
    }

    async fn server_status(
        &self,
        _request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let ring = self.hub.ring();
        let uptime = self.hub.uptime_ns();
        let seen = ring.seen();
        Ok(with_version(ServerStatusResponse {
            num_flows: ring.len() as u64,
            max_flows: ring.capacity() as u64,
            seen_flows: seen,
            uptime_ns: uptime,
            version: HUBBLE_API_VERSION.to_owned(),
            flows_rate: if uptime > 0 {
                seen as f64 / (uptime as f64 / 1e9)
            } else {
                0.0
            },
            ..Default::default()
        }))
    }
}

impl PeerService {
    pub fn new(hub: Arc<Hub>) -> PeerService {
        PeerService { hub }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    type NotifyStream = BoxStream<ChangeNotification>;

    async fn notify(
        &self,
        _request: Request<NotifyRequest>,
    ) -> Result<Response<Self::NotifyStream>, Status> {
        let mut peers = self.hub.peers.subscribe();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            // What this stream has announced: the empty set at first, so the current set goes
            // out as PEER_ADDED, as Relay expects of a new stream.
            let mut sent = BTreeMap::new();
            loop {
                let now = peers.borrow_and_update().clone();
                for change in peer_changes(&sent, &now) {
                    if tx.send(Ok(change)).await.is_err() {
                        return;
                    }
                }
                sent = now;
                tokio::select! {
                    changed = peers.changed() => {
                        if changed.is_err() {
                            // The hub is gone: keep the stream open, as Relay expects, until
                            // the client leaves.
                            tx.closed().await;
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(with_version(
            Box::pin(ReceiverStream::new(rx)) as Self::NotifyStream
        ))
    }
}

/// The gRPC router with Observer, Peer and health (reporting `hubble.server.Observer` SERVING).
pub async fn router(hub: Arc<Hub>) -> tonic::transport::server::Router {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(OBSERVER_SERVICE_NAME, tonic_health::ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(ObserverServer::new(ObserverService::new(hub.clone())))
        .add_service(PeerServer::new(PeerService::new(hub)))
}

/// Serves `GET /metrics` (Prometheus/OpenMetrics text) until the listener fails.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<FlowMetrics>,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cli_mask_keeps_what_compact_prints() {
        let flow = Flow {
            verdict: 2,
            source: Some(Endpoint {
                identity: 5,
                namespace: "ns".into(),
                pod_name: "p".into(),
                labels: vec!["k8s:a=b".into()],
                ..Default::default()
            }),
            traffic_direction: 2,
            policy_match_type: 1,
            node_labels: vec!["x=y".into()],
            ..Default::default()
        };
        let paths: Vec<String> = [
            "verdict",
            "source.identity",
            "source.namespace",
            "source.pod_name",
            "Summary",
        ]
        .map(String::from)
        .to_vec();
        let m = apply_mask(&flow, &paths);
        let src = m.source.as_ref().unwrap();
        assert_eq!(
            (src.identity, src.namespace.as_str(), src.pod_name.as_str()),
            (5, "ns", "p")
        );
        assert!(src.labels.is_empty());
        assert!(m.destination.is_none() && m.node_labels.is_empty());
        assert_eq!(
            (m.verdict, m.traffic_direction, m.policy_match_type),
            (2, 2, 1)
        );
    }
}
