//! The HTTP side: the page and its three assets, and the JSON API the page uses (docs/ui.md).
//!
//! * Flows come straight from the hub's ring buffer. A live stream is a ring reader polled only
//!   when the client's connection can take more: the ring never waits for it, so a slow browser
//!   costs the agent nothing but the flows it misses, which it is told about (`lost`). A stream
//!   sends at most one event per [`STREAM_TICK`] with at most [`STREAM_BATCH`] flows, the newest
//!   ones (older ones it skipped are counted in `dropped`), and at most [`MAX_STREAMS`] streams
//!   are open at once.
//! * The service map and the IMDS view are kept by one task that follows the ring; what they
//!   hold is bounded (see those modules) and forgets what was idle for [`WINDOW`].
//! * Bound to loopback, the server answers only requests whose Host is an IP address or
//!   `localhost`, so a web page elsewhere cannot read it through DNS rebinding.

use crate::audit::{AuditModes, AuditSource};
use crate::imds::ImdsReport;
use crate::peer::Sides;
use crate::servicemap::ServiceMap;
use crate::table::{FlowRow, FlowSearch};
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use imdsguard_flow::printer::FlowJson;
use imdsguard_hubble_proto::flow::Flow;
use imdsguard_hubble_proto::observer::get_flows_response::ResponseTypes;
use imdsguard_hubble_server::ring::{Read, Reader};
use imdsguard_hubble_server::server::{Entry, Hub};
use serde::Serialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the map and the IMDS view remember an edge or a caller that has gone quiet.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// Flows sent by `/api/flows` and first sent by a stream when `last` is not given.
pub const DEFAULT_LAST: usize = 100;
/// The most flows `last` may ask for.
pub const MAX_LAST: usize = 5_000;
/// At most this many flows per stream event, and one event per tick: 500 flows a second per
/// browser, more than anyone reads and little enough for a small machine to render.
pub const STREAM_BATCH: usize = 125;
pub const STREAM_TICK: Duration = Duration::from_millis(250);
pub const MAX_STREAMS: usize = 16;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// Same-origin only: everything the page needs is served here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Default)]
struct Aggregates {
    map: ServiceMap,
    imds: ImdsReport,
    /// Flows the aggregating task missed because the ring overwrote them first.
    lost: u64,
}

struct Ui {
    hub: Arc<Hub>,
    /// The agent's audit modes; none when the UI runs without an enforcing agent (replay).
    audit: Option<AuditSource>,
    aggregates: Mutex<Aggregates>,
    streams: Arc<AtomicUsize>,
    loopback: bool,
}

impl Ui {
    fn aggregates(&self) -> std::sync::MutexGuard<'_, Aggregates> {
        // Nothing is left half-done under this lock by a panic that matters to a reader.
        self.aggregates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The UI's listener, bound and ready to serve.
pub struct UiServer {
    listener: tokio::net::TcpListener,
    /// Shared with the handlers once it serves.
    ui: Ui,
}

impl UiServer {
    /// Binds `address` (`HOST:PORT`; a bare `:PORT` means loopback, 127.0.0.1).
    pub async fn bind(address: &str, hub: Arc<Hub>) -> std::io::Result<UiServer> {
        let address = match address.strip_prefix(':') {
            Some(port) => format!("127.0.0.1:{port}"),
            None => address.to_owned(),
        };
        let listener = tokio::net::TcpListener::bind(&address).await?;
        let loopback = listener.local_addr()?.ip().is_loopback();
        Ok(UiServer {
            listener,
            ui: Ui {
                hub,
                audit: None,
                aggregates: Mutex::new(Aggregates::default()),
                streams: Arc::new(AtomicUsize::new(0)),
                loopback,
            },
        })
    }

    /// Reads the agent's audit modes from `source` for each answer, so pods and policies in audit
    /// mode show before any of their flows is audited.
    pub fn with_audit(mut self, source: AuditSource) -> UiServer {
        self.ui.audit = Some(source);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Follows the ring for the map and the IMDS view, and serves until the listener fails.
    pub async fn serve(self) -> std::io::Result<()> {
        let ui = Arc::new(self.ui);
        let aggregating = tokio::spawn(aggregate(ui.clone()));
        let result = axum::serve(self.listener, router(ui)).await;
        aggregating.abort();
        result
    }
}

fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route("/api/status", get(status))
        .route("/api/flows", get(flows))
        .route("/api/flows/stream", get(stream))
        .route("/api/map", get(map))
        .route("/api/imds", get(imds))
        .layer(middleware::from_fn_with_state(ui.clone(), guard))
        .with_state(ui)
}

/// Host check (see the module docs) and the headers every answer carries.
async fn guard(State(ui): State<Arc<Ui>>, req: Request, next: Next) -> Response {
    if ui.loopback && !local_host(req.headers()) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "this UI answers only to http://localhost:PORT or http://<IP>:PORT",
        );
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

fn local_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        // HTTP/1.0 without Host: no browser sends that.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(body),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// One flow as the API sends it: its ring sequence number, the table's columns and the whole
/// flow (protojson, as `hubble observe -o jsonpb` prints it, imdsguard's process information in
/// `extensions` included).
#[derive(Serialize)]
struct FlowEntry<'a> {
    seq: u64,
    node_name: &'a str,
    row: FlowRow,
    flow: FlowJson<'a>,
}

fn flow_of(e: &Entry) -> Option<&Flow> {
    match &e.response_types {
        Some(ResponseTypes::Flow(f)) => Some(f),
        _ => None,
    }
}

fn entries<'a>(batch: impl IntoIterator<Item = &'a (u64, Entry)>) -> Vec<FlowEntry<'a>> {
    batch
        .into_iter()
        .filter_map(|(seq, e)| {
            flow_of(e).map(|f| FlowEntry {
                seq: *seq,
                node_name: &e.node_name,
                row: FlowRow::of(f),
                flow: FlowJson(f),
            })
        })
        .collect()
}

/// The query of a flows request: `last`, `from` and the search (every other pair).
struct FlowsQuery {
    last: usize,
    from: Option<u64>,
    search: FlowSearch,
}

impl FlowsQuery {
    /// The error is the message of a 400 answer.
    fn parse(pairs: &[(String, String)]) -> Result<FlowsQuery, String> {
        let bad = |m: String| m;
        let mut last = DEFAULT_LAST;
        let mut from = None;
        let mut rest = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "last" => {
                    last = v
                        .parse::<usize>()
                        .map_err(|_| bad(format!("last: expected a number of flows, got {v:?}")))?
                        .min(MAX_LAST)
                }
                "from" => {
                    from = Some(v.parse::<u64>().map_err(|_| {
                        bad(format!("from: expected a flow sequence number, got {v:?}"))
                    })?)
                }
                _ => rest.push((k.as_str(), v.as_str())),
            }
        }
        let search = FlowSearch::parse(rest).map_err(|e| e.to_string())?;
        Ok(FlowsQuery { last, from, search })
    }

    /// The newest `last` matching flows held, oldest first, and the sequence number to follow
    /// from.
    fn backlog(&self, hub: &Hub) -> (Vec<(u64, Entry)>, u64) {
        let ring = hub.ring();
        let seen = ring.seen();
        let snapshot = ring.snapshot_newest_first();
        let next = snapshot.first().map_or(seen, |(s, _)| s + 1);
        let mut out: Vec<(u64, Entry)> = snapshot
            .into_iter()
            .filter(|(_, e)| flow_of(e).is_some_and(|f| self.search.matches(f)))
            .take(self.last)
            .collect();
        out.reverse();
        (out, next)
    }
}

#[derive(Serialize)]
struct FlowsPage<'a> {
    flows: Vec<FlowEntry<'a>>,
    /// The sequence number of the next flow (for `/api/flows/stream?from=`).
    next: u64,
}

async fn flows(State(ui): State<Arc<Ui>>, Query(pairs): Query<Vec<(String, String)>>) -> Response {
    let q = match FlowsQuery::parse(&pairs) {
        Ok(q) => q,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    let (batch, next) = q.backlog(&ui.hub);
    json(&FlowsPage {
        flows: entries(&batch),
        next,
    })
}

/// One stream event (`event: flows`).
#[derive(Serialize)]
struct StreamBatch<'a> {
    flows: Vec<FlowEntry<'a>>,
    /// Flows the ring overwrote before this stream read them (the client was too slow).
    lost: u64,
    /// Matching flows skipped to keep to [`STREAM_BATCH`] per [`STREAM_TICK`].
    dropped: u64,
    next: u64,
}

/// Frees a stream's place when the stream goes (the client left).
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct StreamState {
    reader: Reader<Entry>,
    search: FlowSearch,
    backlog: Option<Vec<(u64, Entry)>>,
    last_sent: tokio::time::Instant,
    capacity: usize,
    _slot: StreamSlot,
}

fn flows_event(batch: &StreamBatch) -> Event {
    let data = serde_json::to_string(batch).unwrap_or_else(|_| "{}".into());
    Event::default()
        .event("flows")
        .id(batch.next.to_string())
        .data(data)
}

impl StreamState {
    async fn next_event(&mut self) -> Event {
        if let Some(backlog) = self.backlog.take() {
            return flows_event(&StreamBatch {
                flows: entries(&backlog),
                lost: 0,
                dropped: 0,
                next: self.reader.position(),
            });
        }
        loop {
            let mut read = self.reader.next().await;
            tokio::time::sleep_until(self.last_sent + STREAM_TICK).await;
            let (mut lost, mut dropped) = (0u64, 0u64);
            let mut batch: VecDeque<(u64, Entry)> = VecDeque::new();
            // At most a ring's worth per event, so a writer faster than this loop cannot keep
            // it here forever.
            for _ in 0..=self.capacity {
                match read {
                    Read::Item(seq, e) => {
                        if flow_of(&e).is_some_and(|f| self.search.matches(f)) {
                            batch.push_back((seq, e));
                            if batch.len() > STREAM_BATCH {
                                batch.pop_front();
                                dropped += 1;
                            }
                        }
                    }
                    Read::Lost(n) => lost += n,
                    Read::Empty => break,
                }
                read = self.reader.try_next();
            }
            if batch.is_empty() && lost == 0 && dropped == 0 {
                continue;
            }
            self.last_sent = tokio::time::Instant::now();
            return flows_event(&StreamBatch {
                flows: entries(&batch),
                lost,
                dropped,
                next: self.reader.position(),
            });
        }
    }
}

async fn stream(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let q = match FlowsQuery::parse(&pairs) {
        Ok(q) => q,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    if ui.streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        ui.streams.fetch_sub(1, Ordering::SeqCst);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{MAX_STREAMS} live streams are open already: close a tab and retry"),
        );
    }
    let slot = StreamSlot(ui.streams.clone());
    // EventSource reconnects with the id of the last event it got: carry on from there.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let ring = ui.hub.ring();
    let (reader, backlog) = match resume.or(q.from) {
        Some(seq) => (ring.reader_at(seq), Vec::new()),
        None => {
            let (backlog, next) = q.backlog(&ui.hub);
            (ring.reader_at(next), backlog)
        }
    };
    let state = StreamState {
        reader,
        search: q.search,
        backlog: Some(backlog),
        last_sent: tokio::time::Instant::now(),
        capacity: ring.capacity(),
        _slot: slot,
    };
    let events = futures_util::stream::unfold(state, |mut st| async move {
        let ev = st.next_event().await;
        Some((Ok::<_, Infallible>(ev), st))
    });
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Proxies in front of the agent must not buffer the stream.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

#[derive(serde::Deserialize)]
struct ViewQuery {
    namespace: Option<String>,
}

#[derive(Serialize)]
struct WithLoss<T: Serialize> {
    #[serde(flatten)]
    view: T,
    /// Flows the map and IMDS view missed (the ring overwrote them before they were counted).
    lost: u64,
    window_seconds: u64,
}

async fn map(State(ui): State<Arc<Ui>>, Query(q): Query<ViewQuery>) -> Response {
    let ns = q.namespace.as_deref().filter(|n| !n.is_empty());
    let a = ui.aggregates();
    let mut view = WithLoss {
        view: a.map.view(ns),
        lost: a.lost,
        window_seconds: WINDOW.as_secs(),
    };
    drop(a);
    if let Some(source) = &ui.audit {
        source().mark_map(&mut view.view);
    }
    json(&view)
}

async fn imds(State(ui): State<Arc<Ui>>, Query(q): Query<ViewQuery>) -> Response {
    let ns = q.namespace.as_deref().filter(|n| !n.is_empty());
    let a = ui.aggregates();
    let mut view = WithLoss {
        view: a.imds.view(ns),
        lost: a.lost,
        window_seconds: WINDOW.as_secs(),
    };
    drop(a);
    if let Some(source) = &ui.audit {
        source().mark(&mut view.view);
    }
    json(&view)
}

#[derive(Serialize)]
struct Status {
    node_name: String,
    /// Flows held in the ring, its capacity, and flows ever added.
    num_flows: usize,
    max_flows: usize,
    seen_flows: u64,
    /// Namespaces of the workloads on the map.
    namespaces: Vec<String>,
    streams: usize,
    max_streams: usize,
    window_seconds: u64,
    /// What the agent has in audit mode now (empty without an enforcing agent).
    audit: AuditModes,
}

async fn status(State(ui): State<Arc<Ui>>) -> Response {
    let ring = ui.hub.ring();
    let namespaces = ui.aggregates().map.namespaces();
    json(&Status {
        node_name: ui.hub.node_name().to_owned(),
        num_flows: ring.len(),
        max_flows: ring.capacity(),
        seen_flows: ring.seen(),
        namespaces,
        streams: ui.streams.load(Ordering::SeqCst),
        max_streams: MAX_STREAMS,
        window_seconds: WINDOW.as_secs(),
        audit: ui.audit.as_ref().map(|source| source()).unwrap_or_default(),
    })
}

/// Follows the ring into the map and the IMDS view, a batch at a time.
async fn aggregate(ui: Arc<Ui>) {
    const BATCH: usize = 4_096;
    let mut reader = ui.hub.ring().reader_at_oldest();
    let mut expired = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        batch.push(reader.next().await);
        while batch.len() < BATCH {
            match reader.try_next() {
                Read::Empty => break,
                read => batch.push(read),
            }
        }
        let now = Instant::now();
        {
            let mut a = ui.aggregates();
            for read in batch.drain(..) {
                match read {
                    Read::Item(_, e) => {
                        if let Some(f) = flow_of(&e) {
                            let sides = Sides::of(f);
                            a.map.observe(f, &sides, now);
                            a.imds.observe(f, &sides, now);
                        }
                    }
                    Read::Lost(n) => a.lost += n,
                    Read::Empty => {}
                }
            }
            if now.duration_since(expired) > Duration::from_secs(10) {
                a.map.expire(now, WINDOW);
                a.imds.expire(now, WINDOW);
                expired = now;
            }
        }
        // Let the page's requests in between batches.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::seed_flows;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn ui_with_seed() -> Arc<Ui> {
        ui_with(seed_flows())
    }

    fn ui_with(flows: Vec<Flow>) -> Arc<Ui> {
        let hub = Hub::new(63, "test-node", "");
        for f in flows {
            hub.ingest(f);
        }
        Arc::new(Ui {
            hub,
            audit: None,
            aggregates: Mutex::new(Aggregates::default()),
            streams: Arc::new(AtomicUsize::new(0)),
            loopback: true,
        })
    }

    async fn get(ui: &Arc<Ui>, uri: &str, host: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
        let req = Request::builder()
            .uri(uri)
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        let resp = router(ui.clone()).oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes().to_vec();
        (parts.status, parts.headers, body)
    }

    async fn get_json(ui: &Arc<Ui>, uri: &str) -> serde_json::Value {
        let (status, _, body) = get(ui, uri, "127.0.0.1:12000").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn flows_endpoint_filters_and_limits() {
        let ui = ui_with_seed();
        let all = get_json(&ui, "/api/flows?last=100").await;
        assert_eq!(all["flows"].as_array().unwrap().len(), 12);
        assert_eq!(all["next"], 12);
        let first = &all["flows"][0];
        assert_eq!(first["seq"], 0);
        assert_eq!(
            first["row"]["source"],
            "go-webapp/go-webapp-847857f68-2qlnd"
        );
        assert_eq!(first["flow"]["verdict"], "FORWARDED");
        assert_eq!(
            first["flow"]["source"]["pod_name"],
            "go-webapp-847857f68-2qlnd"
        );

        let dropped = get_json(&ui, "/api/flows?verdict=DROPPED").await;
        let seqs: Vec<u64> = dropped["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [4, 5]);
        let two = get_json(&ui, "/api/flows?last=2&namespace=logging&q=").await;
        let seqs: Vec<u64> = two["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [10, 11]);

        let (status, _, body) = get(&ui, "/api/flows?verdict=nope", "localhost").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(err["error"].as_str().unwrap().contains("verdict"), "{err}");
        let (status, _, _) = get(&ui, "/api/flows?last=many", "localhost").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    /// The agent's audit modes reach the status and mark the IMDS view before any flow is
    /// audited (the seed's flows have none).
    #[tokio::test]
    async fn the_agents_audit_modes_show_in_status_and_the_imds_view() {
        let hub = Hub::new(63, "test-node", "");
        for f in seed_flows() {
            hub.ingest(f);
        }
        let modes = AuditModes {
            all: false,
            pods: ["go-webapp/go-webapp-847857f68-2qlnd".to_owned()].into(),
            policies: [crate::audit::PolicyName {
                kind: "CiliumClusterwideNetworkPolicy".into(),
                namespace: String::new(),
                name: "azure-imds-deny".into(),
            }]
            .into(),
        };
        let source = modes.clone();
        let ui = Arc::new(Ui {
            hub,
            audit: Some(Arc::new(move || source.clone())),
            aggregates: Mutex::new(Aggregates::default()),
            streams: Arc::new(AtomicUsize::new(0)),
            loopback: true,
        });
        let task = tokio::spawn(aggregate(ui.clone()));
        let status = get_json(&ui, "/api/status").await;
        assert_eq!(
            status["audit"]["pods"],
            serde_json::json!(["go-webapp/go-webapp-847857f68-2qlnd"])
        );
        assert_eq!(status["audit"]["policies"][0]["name"], "azure-imds-deny");
        let deadline = Instant::now() + Duration::from_secs(10);
        let imds = loop {
            let imds = get_json(&ui, "/api/imds?namespace=go-webapp").await;
            if !imds["callers"].as_array().unwrap().is_empty() || Instant::now() > deadline {
                break imds;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let caller = &imds["callers"][0];
        assert_eq!(caller["audit_mode"], true, "{caller}");
        assert_eq!(caller["audit"], true);
        let deny = caller["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "azure-imds-deny")
            .cloned()
            .unwrap_or_default();
        assert_eq!(deny["audit_mode"], true, "{caller}");
        let map = get_json(&ui, "/api/map").await;
        let audited: Vec<&serde_json::Value> = map["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["audit_mode"] == true)
            .map(|n| &n["id"])
            .collect();
        assert_eq!(
            audited,
            [&serde_json::json!("go-webapp/go-webapp")],
            "{map}"
        );
        task.abort();
    }

    #[tokio::test]
    async fn map_and_imds_follow_the_ring() {
        let ui = ui_with_seed();
        let task = tokio::spawn(aggregate(ui.clone()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let map = loop {
            let map = get_json(&ui, "/api/map").await;
            if map["flows_seen"] == 12 || Instant::now() > deadline {
                break map;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(map["flows_seen"], 12);
        assert_eq!(map["lost"], 0);
        assert!(
            map["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["id"] == "metadata:169.254.169.254" && n["kind"] == "metadata")
        );
        let imds = get_json(&ui, "/api/imds?namespace=logging").await;
        assert_eq!(
            imds["callers"][0]["credentials"][0]["resource"],
            "https://api.kusto.windows.net"
        );
        let status = get_json(&ui, "/api/status").await;
        assert_eq!(
            status["namespaces"],
            serde_json::json!(["go-webapp", "logging"])
        );
        assert_eq!(status["seen_flows"], 12);
        task.abort();
    }

    #[tokio::test]
    async fn flows_and_imds_name_the_container_and_process() {
        use crate::testdata::{HOSTILE_COMM, attributed_seed_flows};
        let ui = ui_with(attributed_seed_flows());
        let task = tokio::spawn(aggregate(ui.clone()));
        let sidecar = get_json(&ui, "/api/flows?q=istio-proxy&verdict=DROPPED").await;
        let flows = sidecar["flows"].as_array().unwrap();
        assert_eq!(flows.len(), 2);
        let row = &flows[0]["row"];
        assert_eq!(row["container"], "istio-proxy");
        assert_eq!(row["process"], HOSTILE_COMM);
        assert_eq!(row["pid"], 5151);
        assert_eq!(row["uid"], 0);
        assert_eq!(row["socket_cookie"], "1099511627783");
        assert_eq!(row["cgroup_id"], "120");
        // The whole flow as Hubble's tools print it: the Struct itself, not pbjson's bytes.
        let ext = &flows[0]["flow"]["extensions"];
        assert_eq!(ext["@type"], "type.googleapis.com/google.protobuf.Struct");
        assert_eq!(ext["value"]["process"], HOSTILE_COMM);
        assert_eq!(ext["value"]["container"], "istio-proxy");
        let fluent = get_json(&ui, "/api/flows?namespace=logging&last=1").await;
        assert!(fluent["flows"][0]["row"].get("container").is_none());
        let deadline = Instant::now() + Duration::from_secs(10);
        let imds = loop {
            let imds = get_json(&ui, "/api/imds?namespace=go-webapp").await;
            if imds["calls_seen"] == 12 || Instant::now() > deadline {
                break imds;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let containers = &imds["callers"][0]["containers"];
        assert_eq!(containers[0]["pod"], "go-webapp-847857f68-2qlnd");
        assert_eq!(containers[0]["container"], "istio-proxy");
        assert_eq!(containers[0]["processes"][0]["name"], "envoy");
        assert_eq!(containers[1]["processes"][0]["name"], HOSTILE_COMM);
        task.abort();
    }

    #[tokio::test]
    async fn page_and_assets_with_their_headers() {
        let ui = ui_with_seed();
        for (path, kind, needle) in [
            ("/", "text/html", "<main"),
            ("/app.js", "text/javascript", "EventSource"),
            ("/app.css", "text/css", "{"),
        ] {
            let (status, headers, body) = get(&ui, path, "localhost:12000").await;
            assert_eq!(status, StatusCode::OK, "{path}");
            let ct = headers[header::CONTENT_TYPE].to_str().unwrap();
            assert!(ct.starts_with(kind), "{path}: {ct}");
            assert!(String::from_utf8_lossy(&body).contains(needle), "{path}");
            assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
        }
        let (status, _, _) = get(&ui, "/", "evil.example:12000").await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
        let (status, _, _) = get(&ui, "/", "[::1]:12000").await;
        assert_eq!(status, StatusCode::OK);
    }

    /// A stream starts with the backlog, then sends new flows; a client that does not read is
    /// told how many it lost, and the ring's writer never waited for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream_backlog_then_live_then_loss() {
        let ui = ui_with_seed();
        let req = Request::builder()
            .uri("/api/flows/stream?last=3&verdict=FORWARDED")
            .header(header::HOST, "127.0.0.1")
            .body(Body::empty())
            .unwrap();
        let resp = router(ui.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(ui.streams.load(Ordering::SeqCst), 1);
        let mut body = resp.into_body();
        let mut next_event = async || -> serde_json::Value {
            let mut text = String::new();
            loop {
                let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                    .await
                    .expect("no event")
                    .unwrap()
                    .unwrap();
                if let Ok(data) = frame.into_data() {
                    text.push_str(&String::from_utf8_lossy(&data));
                }
                if let Some(line) = text.lines().find_map(|l| l.strip_prefix("data: ")) {
                    return serde_json::from_str(line).unwrap();
                }
            }
        };
        let first = next_event().await;
        let seqs: Vec<u64> = first["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [9, 10, 11]);
        assert_eq!(first["next"], 12);

        let seed = seed_flows();
        ui.hub.ingest(seed[0].clone());
        let live = next_event().await;
        assert_eq!(live["flows"][0]["seq"], 12);
        assert_eq!(live["lost"], 0);

        // 1000 flows into a 63-flow ring while the client reads nothing.
        for _ in 0..1000 {
            ui.hub.ingest(seed[0].clone());
        }
        let after = next_event().await;
        assert_eq!(after["lost"].as_u64().unwrap(), 1000 - 63);
        assert_eq!(after["flows"].as_array().unwrap().len(), 63);
        assert_eq!(after["next"], 1013);
        drop(body);
        assert_eq!(ui.streams.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn hosts_that_may_reach_a_loopback_ui() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_str(v).unwrap());
            local_host(&m)
        };
        assert!(h("localhost:1") && h("LOCALHOST") && h("127.0.0.1:8") && h("[::1]:9"));
        assert!(!h("evil.example") && !h("127.0.0.1.evil.example:1") && !h("[evil]:1"));
    }
}
