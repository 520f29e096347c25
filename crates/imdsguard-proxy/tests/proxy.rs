//! The proxy on loopback against a recording upstream: rules, keep-alive, the faithful forwarder,
//! every refusal of the hardening list, each shown to reach nothing upstream, and the limits and
//! timeouts that keep one client or upstream from holding the proxy.

use imdsguard_hubble_proto::flow::{DropReason, Endpoint, Flow, L7FlowType, layer7};
use imdsguard_manifest::Source;
use imdsguard_policy::{DecodeOptions, EndpointSpec, EngineOptions, Repository, decode_source};
use imdsguard_proxy::server::{Authority, Client, FlowSink, ProxyConfig, Redirected, serve};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// An upstream that records every request head it receives and answers 200 with a body.
async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: the head, then a Content-Length or chunked body if any.
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let lower = head.to_ascii_lowercase();
                    let body_len = lower
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    let chunked = lower.contains("transfer-encoding: chunked");
                    let mut body_end = end + body_len;
                    if chunked {
                        while !buf[end..].windows(5).any(|w| w == b"0\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        body_end = end
                            + buf[end..]
                                .windows(5)
                                .position(|w| w == b"0\r\n\r\n")
                                .unwrap_or(0)
                            + 5;
                    }
                    while buf.len() < body_end {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = String::from_utf8_lossy(&buf[end..body_end]).into_owned();
                    log.lock().expect("log").push(format!("{head}{body}"));
                    buf.drain(..body_end);
                    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nupstream";
                    if s.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

struct Auth {
    repo: Repository,
}

impl Authority for Auth {
    fn client(&self, ip: IpAddr) -> Option<Client> {
        let (key, identity) = self.repo.endpoint_by_ip(ip)?;
        Some(Client {
            endpoint: Endpoint {
                identity: identity.0,
                pod_name: key.to_owned(),
                ..Default::default()
            },
            policy: self.repo.endpoint_policy(key)?.clone(),
        })
    }
    fn destination(&self, ip: IpAddr) -> Endpoint {
        // The client and the upstream share 127.0.0.1 here: name the destination by its CIDR
        // identity, not by the pod that has the same address.
        let identity = self.repo.ipcache().lookup(ip).map_or(2, |(_, id)| id.0);
        Endpoint {
            identity,
            ..Default::default()
        }
    }
}

#[derive(Default)]
struct Sink(Mutex<Vec<Flow>>);

impl FlowSink for Sink {
    fn flow(&self, f: Flow) {
        self.0.lock().expect("flows").push(f);
    }
}

struct Proxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    flows: Arc<Sink>,
}

/// The two client pods, of one identity (same labels). Loopback answers for all of 127/8.
const POD_A: &str = "127.0.0.1";
const POD_B: &str = "127.0.0.2";

/// Where the proxy forwards.
enum Upstream {
    /// A recording upstream (`upstream()`).
    Recording,
    /// A port nothing listens on.
    Down,
    At(SocketAddr),
}

/// A proxy on loopback for client pods at `POD_A` and `POD_B` whose egress to 127.0.0.1 on the
/// proxy's port carries `http` rules.
async fn proxy(http: &str, cfg: ProxyConfig, upstream_down: bool) -> Proxy {
    let to = if upstream_down {
        Upstream::Down
    } else {
        Upstream::Recording
    };
    proxy_to(http, cfg, to).await
}

async fn proxy_to(http: &str, cfg: ProxyConfig, to: Upstream) -> Proxy {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let policy = format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: imds-l7, namespace: default}}
spec:
  endpointSelector: {{matchLabels: {{app: client}}}}
  egress:
    - toCIDR: [127.0.0.1/32]
      toPorts:
        - ports: [{{port: "{port}", protocol: TCP}}]
          rules: {{http: {http}}}
"#,
        port = addr.port()
    );
    let decoded = decode_source(&Source::new("p.yaml", policy), &DecodeOptions::default());
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    let mut repo = Repository::new(EngineOptions::default());
    repo.load(&decoded);
    for (name, ip) in [("client-a", POD_A), ("client-b", POD_B)] {
        repo.upsert_endpoint(EndpointSpec {
            name: name.into(),
            namespace: "default".into(),
            labels: vec![("app".into(), "client".into())],
            ips: vec![ip.parse().expect("ip")],
            ..Default::default()
        });
    }
    repo.resolve();
    let (up, seen) = upstream().await;
    let target = match to {
        Upstream::Recording => up,
        Upstream::Down => {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let a = l.local_addr().expect("addr");
            drop(l);
            a
        }
        Upstream::At(a) => a,
    };
    let flows = Arc::new(Sink::default());
    let cfg = ProxyConfig {
        upstream_override: Some(target),
        node_name: "test-node".into(),
        ..cfg
    };
    let sink: Arc<dyn FlowSink> = flows.clone();
    tokio::spawn(serve(l, cfg, Arc::new(Auth { repo }), sink));
    Proxy { addr, seen, flows }
}

const GET_METADATA: &str = r#"[{method: GET, path: "/metadata/.*"}]"#;

/// Sends `req` and reads one response (its head and a Content-Length body).
async fn exchange(s: &mut TcpStream, req: &str) -> String {
    s.write_all(req.as_bytes()).await.expect("write");
    read_response(s).await
}

async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned();
            }
        }
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return String::from_utf8_lossy(&buf).into_owned(),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A connection from one pod's address.
async fn connect_from(pod: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{pod}:0").parse().expect("addr"))
        .expect("bind");
    socket.connect(to).await.expect("connect")
}

/// Everything the proxy sends until it closes the connection (a FIN or a reset), and whether it
/// did close within a bound far above the timeouts the tests configure.
async fn read_to_close(s: &mut TcpStream) -> (String, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

/// The status codes of the response flows.
fn response_codes(p: &Proxy) -> Vec<u32> {
    p.flows
        .0
        .lock()
        .expect("flows")
        .iter()
        .filter_map(|f| match f.l7.as_ref() {
            Some(l) if l.r#type == L7FlowType::Response as i32 => match &l.record {
                Some(layer7::Record::Http(h)) => Some(h.code),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

const IMDS_GET: &str = "GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nUser-Agent: test\r\n\r\n";

#[tokio::test]
async fn allowed_denied_and_keep_alive() {
    let p = proxy(GET_METADATA, ProxyConfig::default(), false).await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    let r = exchange(&mut s, IMDS_GET).await;
    assert!(
        r.starts_with("HTTP/1.1 200 OK") && r.ends_with("upstream"),
        "{r}"
    );
    // Denied on the same connection, which stays usable.
    let r = exchange(
        &mut s,
        "POST /metadata/instance HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody",
    )
    .await;
    assert_eq!(
        r,
        "HTTP/1.1 403 Forbidden\r\ncontent-length: 15\r\ncontent-type: text/plain\r\n\r\nAccess denied\r\n"
    );
    let r = exchange(&mut s, "GET /other HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 403 Forbidden"), "{r}");
    let r = exchange(&mut s, IMDS_GET).await;
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    // The upstream saw exactly the two allowed requests, byte for byte: Host kept, order kept,
    // nothing added (no X-Forwarded-For, no Via).
    let seen = p.seen.lock().expect("seen").clone();
    assert_eq!(seen, [IMDS_GET, IMDS_GET]);
    let flows = p.flows.0.lock().expect("flows");
    let summaries: Vec<String> = flows
        .iter()
        .map(|f| {
            #[allow(deprecated)]
            let s = f.summary.clone();
            format!("{} {s}", f.verdict)
        })
        .collect();
    assert!(
        summaries[0].starts_with("1 HTTP/1.1 GET http://127.0.0.1:"),
        "{summaries:?}"
    );
    assert!(
        summaries.iter().any(|s| s.starts_with("2 HTTP/1.1 POST")),
        "{summaries:?}"
    );
    assert!(
        summaries.iter().any(|s| s.contains(" 200 ")),
        "{summaries:?}"
    );
}

#[tokio::test]
async fn a_full_match_path_does_not_match_a_longer_path() {
    let p = proxy(
        r#"[{method: GET, path: "/metadata"}]"#,
        ProxyConfig::default(),
        false,
    )
    .await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    let r = exchange(&mut s, IMDS_GET).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(p.seen.lock().expect("seen").is_empty());
}

#[tokio::test]
async fn every_ambiguous_request_is_refused_and_reaches_nothing() {
    let attacks = [
        "POST /metadata/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /metadata/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nbody",
        "POST /metadata/x HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        "POST /metadata/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        "GET /metadata/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n continued\r\n\r\n",
        "GET /metadata/x HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n",
        "GET /metadata/x HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n",
        "GET http://evil.example/metadata/x HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /metadata/scheduledevents%3Fapi-version=2019-08-01 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /metadata/%2e%2e/identity HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /metadata/../identity HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /metadata//instance HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /metadata/x HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    ];
    let p = proxy(r#"[{}]"#, ProxyConfig::default(), false).await;
    for a in attacks {
        let mut s = TcpStream::connect(p.addr).await.expect("connect");
        let r = exchange(&mut s, a).await;
        assert!(r.starts_with("HTTP/1.1 400 Bad Request"), "{a:?}: {r}");
    }
    let long = format!(
        "GET /metadata/{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "x".repeat(10_000)
    );
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    assert!(exchange(&mut s, &long).await.starts_with("HTTP/1.1 400"));
    assert!(
        p.seen.lock().expect("seen").is_empty(),
        "something reached the upstream"
    );
    let refused = p
        .flows
        .0
        .lock()
        .expect("flows")
        .iter()
        .filter(|f| {
            #[allow(deprecated)]
            let s = &f.summary;
            s.starts_with("HTTP request refused: ")
        })
        .count();
    assert_eq!(refused, 14);
}

#[tokio::test]
async fn bodies_are_forwarded_as_they_came() {
    let p = proxy(
        r#"[{method: POST, path: "/metadata/scheduledevents.*"}]"#,
        ProxyConfig::default(),
        false,
    )
    .await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    let chunked = "POST /metadata/scheduledevents?api-version=2020-07-01 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert!(exchange(&mut s, chunked).await.starts_with("HTTP/1.1 200"));
    let sized = "POST /metadata/scheduledevents HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world";
    assert!(exchange(&mut s, sized).await.starts_with("HTTP/1.1 200"));
    assert_eq!(p.seen.lock().expect("seen").clone(), [chunked, sized]);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_503() {
    let p = proxy(GET_METADATA, ProxyConfig::default(), true).await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    let r = exchange(&mut s, IMDS_GET).await;
    assert!(r.starts_with("HTTP/1.1 503 Service Unavailable"), "{r}");
    assert!(r.ends_with("reset reason: connection failure"), "{r}");
    let flows = p.flows.0.lock().expect("flows");
    assert!(flows.iter().any(|f| {
        f.l7.as_ref()
            .and_then(|l| match &l.record {
                Some(imdsguard_hubble_proto::flow::layer7::Record::Http(h)) => Some(h.code == 503),
                _ => None,
            })
            .unwrap_or(false)
    }));
}

#[tokio::test]
async fn one_identity_cannot_take_every_connection() {
    let cfg = ProxyConfig {
        max_connections_per_identity: 2,
        ..Default::default()
    };
    let p = proxy(GET_METADATA, cfg, false).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(p.addr).await.expect("connect");
        assert!(exchange(&mut s, IMDS_GET).await.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = TcpStream::connect(p.addr).await.expect("connect");
    let r = read_response(&mut third).await;
    assert!(
        r.starts_with("HTTP/1.1 503") && r.ends_with("too many connections from this identity"),
        "{r}"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = TcpStream::connect(p.addr).await.expect("connect");
    assert!(
        exchange(&mut again, IMDS_GET)
            .await
            .starts_with("HTTP/1.1 200")
    );
}

/// Flows refused for a connection limit (counted by `hubble_drop_total{reason="DROP_RATE_LIMITED"}`).
fn limited_summaries(p: &Proxy) -> Vec<String> {
    p.flows
        .0
        .lock()
        .expect("flows")
        .iter()
        .filter(|f| f.drop_reason_desc == DropReason::DropRateLimited as i32)
        .map(|f| {
            #[allow(deprecated)]
            let s = f.summary.clone();
            s
        })
        .collect()
}

#[tokio::test]
async fn one_pod_cannot_take_its_identitys_connections() {
    let cfg = ProxyConfig {
        max_connections_per_pod: 3,
        max_connections_per_identity: 5,
        ..Default::default()
    };
    let p = proxy(GET_METADATA, cfg, false).await;
    // Pod A floods: eight connections, each holding on after its request.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        let mut s = connect_from(POD_A, p.addr).await;
        let r = exchange(&mut s, IMDS_GET).await;
        if r.starts_with("HTTP/1.1 200") {
            held.push(s);
        } else {
            assert!(
                r.starts_with("HTTP/1.1 503") && r.ends_with("too many connections from this pod"),
                "{r}"
            );
            refused += 1;
        }
    }
    assert_eq!((held.len(), refused), (3, 5));
    // Pod B, of the same identity, is served while A holds all it may.
    for _ in 0..2 {
        let mut s = connect_from(POD_B, p.addr).await;
        let r = exchange(&mut s, IMDS_GET).await;
        assert!(r.starts_with("HTTP/1.1 200"), "pod B: {r}");
        held.push(s);
    }
    // Now the identity is full (3 + 2): B's third connection meets the identity's limit.
    let mut s = connect_from(POD_B, p.addr).await;
    let r = exchange(&mut s, IMDS_GET).await;
    assert!(
        r.starts_with("HTTP/1.1 503") && r.ends_with("too many connections from this identity"),
        "{r}"
    );
    let limited = limited_summaries(&p);
    assert_eq!(limited.len(), 6, "{limited:?}");
    assert_eq!(
        limited[0],
        "HTTP request refused: too many connections from this pod (3 open)"
    );
    assert_eq!(
        limited[5],
        "HTTP request refused: too many connections from this identity (5 open)"
    );
}

#[tokio::test]
async fn a_body_that_never_arrives_is_a_408_and_frees_its_slot() {
    let cfg = ProxyConfig {
        body_timeout: Duration::from_millis(300),
        // One connection for the pod: the next one is served only if the stalled one's slot
        // came back.
        max_connections_per_pod: 1,
        ..Default::default()
    };
    let p = proxy(
        r#"[{method: GET, path: "/metadata/.*"}, {method: POST, path: "/metadata/post"}]"#,
        cfg,
        false,
    )
    .await;
    for path in ["/metadata/denied", "/metadata/post"] {
        let mut s = TcpStream::connect(p.addr).await.expect("connect");
        let stalled =
            format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789");
        s.write_all(stalled.as_bytes()).await.expect("write");
        let (r, closed) = read_to_close(&mut s).await;
        assert!(r.starts_with("HTTP/1.1 408 Request Timeout"), "{path}: {r}");
        assert!(closed, "{path}: the connection stayed open");
        let mut s = TcpStream::connect(p.addr).await.expect("connect");
        let get = IMDS_GET.replace("User-Agent", "Connection: close\r\nUser-Agent");
        s.write_all(get.as_bytes()).await.expect("write");
        let (r, _) = read_to_close(&mut s).await;
        assert!(r.starts_with("HTTP/1.1 200"), "after {path}: {r}");
    }
    // The allowed request's upstream connection went with the client's: no request whose body
    // never came was ever complete upstream.
    let seen = p.seen.lock().expect("seen").clone();
    assert!(
        seen.len() == 2 && seen.iter().all(|r| r.starts_with("GET ")),
        "{seen:?}"
    );
    assert_eq!(response_codes(&p).iter().filter(|&&c| c == 408).count(), 2);
}

/// An upstream that answers `reply` to each request head it reads (bodies aside) and tells
/// `closed` when the proxy closes a connection. An empty `reply` never answers.
async fn scripted_upstream(
    reply: &'static [u8],
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    Arc<Mutex<usize>>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (closed, rx) = tokio::sync::mpsc::unbounded_channel();
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            *count.lock().expect("count") += 1;
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut chunk).await {
                    let heads = chunk[..n].windows(4).filter(|w| w == b"\r\n\r\n").count();
                    for _ in 0..heads {
                        if !reply.is_empty() && s.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
                let _ = closed.send(());
            });
        }
    });
    (addr, rx, accepted)
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504() {
    let (up, _closed, _) = scripted_upstream(b"").await;
    let cfg = ProxyConfig {
        upstream_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let p = proxy_to(GET_METADATA, cfg, Upstream::At(up)).await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(IMDS_GET.as_bytes()).await.expect("write");
    let (r, closed) = read_to_close(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 504 Gateway Timeout"), "{r}");
    assert!(r.ends_with("upstream request timeout"), "{r}");
    assert!(closed, "the connection stayed open");
    assert_eq!(response_codes(&p), [504]);
}

#[tokio::test]
async fn an_upstream_silent_mid_body_ends_the_connection() {
    let (up, _closed, _) =
        scripted_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
    let cfg = ProxyConfig {
        upstream_idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let p = proxy_to(GET_METADATA, cfg, Upstream::At(up)).await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(IMDS_GET.as_bytes()).await.expect("write");
    let (r, closed) = read_to_close(&mut s).await;
    // The head had gone before the upstream fell silent: the client gets what there was, then
    // the connection ends, and the flow says how the exchange ended.
    assert!(
        r.starts_with("HTTP/1.1 200 OK") && r.ends_with("0123456789"),
        "{r}"
    );
    assert!(closed, "the connection stayed open");
    assert_eq!(response_codes(&p), [504]);
}

#[tokio::test]
async fn an_idle_pooled_upstream_connection_is_closed() {
    let (up, mut closed, accepted) =
        scripted_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let cfg = ProxyConfig {
        upstream_idle_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let p = proxy_to(GET_METADATA, cfg, Upstream::At(up)).await;
    let close = IMDS_GET.replace("User-Agent", "Connection: close\r\nUser-Agent");
    for _ in 0..2 {
        let mut s = TcpStream::connect(p.addr).await.expect("connect");
        s.write_all(close.as_bytes()).await.expect("write");
        let (r, _) = read_to_close(&mut s).await;
        assert!(r.starts_with("HTTP/1.1 200 OK") && r.ends_with("ok"), "{r}");
    }
    // The second client connection reused the pooled upstream connection...
    assert_eq!(*accepted.lock().expect("accepted"), 1);
    // ...which the proxy closes once it has been idle for the timeout.
    let gone = tokio::time::timeout(Duration::from_secs(10), closed.recv()).await;
    assert!(
        matches!(gone, Ok(Some(()))),
        "the idle upstream connection stayed open"
    );
}

#[tokio::test]
async fn a_head_cut_short_is_a_408_and_a_silent_client_is_closed() {
    let cfg = ProxyConfig {
        header_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let p = proxy(GET_METADATA, cfg, false).await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"GET /metadata/instance HTTP/1.1\r\n")
        .await
        .expect("write");
    let (r, closed) = read_to_close(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 408 Request Timeout"), "{r}");
    assert!(closed, "the connection stayed open");
    // A connection that never said anything has no request to answer: it is closed quietly.
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    let (r, closed) = read_to_close(&mut s).await;
    assert_eq!((r.as_str(), closed), ("", true));
    assert_eq!(response_codes(&p), [408]);
    assert!(p.seen.lock().expect("seen").is_empty());
}

/// The agent's view of hostNetwork pods whose connect() the datapath sent to the proxy: one pod,
/// known only for the client ports the test registers (as the datapath records them).
struct HostAuth {
    repo: Repository,
    ports: Mutex<std::collections::HashSet<u16>>,
}

const HOSTNET_DESTINATION: &str = "192.0.2.1:80";

fn collector() -> imdsguard_hubble_proto::process::ProcessInfo {
    imdsguard_hubble_proto::process::ProcessInfo {
        container: "collector".into(),
        process: "curl".into(),
        pid: 4242,
        uid: Some(0),
    }
}

impl Authority for HostAuth {
    fn client(&self, _ip: IpAddr) -> Option<Client> {
        // Loopback names no pod: only the datapath's record does.
        None
    }
    fn destination(&self, ip: IpAddr) -> Endpoint {
        let identity = self.repo.ipcache().lookup(ip).map_or(2, |(_, id)| id.0);
        Endpoint {
            identity,
            ..Default::default()
        }
    }
    fn redirected(&self, peer: SocketAddr) -> Option<Redirected> {
        if !self.ports.lock().expect("ports").remove(&peer.port()) {
            return None;
        }
        let (key, identity) = self
            .repo
            .endpoints()
            .map(|(spec, id)| (spec.key(), id))
            .next()?;
        Some(Redirected {
            client: Client {
                endpoint: Endpoint {
                    identity: identity.0,
                    pod_name: key.clone(),
                    ..Default::default()
                },
                policy: self.repo.endpoint_policy(&key)?.clone(),
            },
            destination: HOSTNET_DESTINATION.parse().expect("addr"),
            process: Some(collector()),
            socket_cookie: 7,
            cgroup_id: 9,
        })
    }
}

#[tokio::test]
async fn a_host_network_pods_redirected_connection_is_judged_with_its_policy() {
    let policy = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: hn-l7, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: collector}}
  egress:
    - toCIDR: [192.0.2.1/32]
      toPorts:
        - ports: [{port: "80", protocol: TCP}]
          rules: {http: [{method: GET, path: "/metadata/instance.*"}]}
"#;
    let decoded = decode_source(&Source::new("p.yaml", policy), &DecodeOptions::default());
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    let mut repo = Repository::new(EngineOptions::default());
    repo.load(&decoded);
    repo.upsert_endpoint(EndpointSpec {
        name: "hn".into(),
        namespace: "default".into(),
        labels: vec![("app".into(), "collector".into())],
        ..Default::default()
    });
    repo.resolve();
    let auth = Arc::new(HostAuth {
        repo,
        ports: Mutex::new(Default::default()),
    });
    let (up, seen) = upstream().await;
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let flows = Arc::new(Sink::default());
    let sink: Arc<dyn FlowSink> = flows.clone();
    let cfg = ProxyConfig {
        upstream_override: Some(up),
        hostnet_redirects: true,
        ..Default::default()
    };
    tokio::spawn(serve(l, cfg, auth.clone(), sink));

    // A connection the datapath recorded: judged with the pod's policy.
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let port = socket.local_addr().expect("local").port();
    auth.ports.lock().expect("ports").insert(port);
    let mut s = socket.connect(addr).await.expect("connect");
    let ok = exchange(
        &mut s,
        "GET /metadata/instance HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let denied = exchange(
        &mut s,
        "GET /metadata/identity/oauth2/token HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
    )
    .await;
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert_eq!(seen.lock().expect("seen").len(), 1, "only the allowed one");
    let requests: Vec<Flow> = flows
        .0
        .lock()
        .expect("flows")
        .iter()
        .filter(|f| {
            f.l7.as_ref()
                .is_some_and(|l| l.r#type == L7FlowType::Request as i32)
        })
        .cloned()
        .collect();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for f in &requests {
        assert_eq!(
            f.source.as_ref().map(|e| e.pod_name.as_str()),
            Some("default/hn")
        );
        let ip = f.ip.as_ref().expect("ip");
        assert_eq!(ip.destination, "192.0.2.1", "the original destination");
        assert_eq!(
            imdsguard_hubble_proto::process::get(f),
            Some(collector()),
            "the process the datapath saw"
        );
        assert_eq!((f.socket_cookie, f.cgroup_id), (7, 9));
    }
    assert_eq!(requests[0].verdict, 1, "FORWARDED");
    assert_eq!(requests[1].verdict, 2, "DROPPED");

    // One the datapath did not record: closed unanswered.
    let mut other = connect_from(POD_A, addr).await;
    other
        .write_all(b"GET /metadata/instance HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok();
    let (answer, closed) = read_to_close(&mut other).await;
    assert!(closed && answer.is_empty(), "{answer:?}");
    assert_eq!(seen.lock().expect("seen").len(), 1);
}
