//! The proxy on loopback against a recording upstream: rules, keep-alive, the faithful forwarder,
//! and every refusal of the hardening list, each shown to reach nothing upstream.

use imdsguard_hubble_proto::flow::{Endpoint, Flow};
use imdsguard_manifest::Source;
use imdsguard_policy::{DecodeOptions, EndpointSpec, EngineOptions, Repository, decode_source};
use imdsguard_proxy::server::{Authority, Client, FlowSink, ProxyConfig, serve};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// A proxy on loopback for a client pod at 127.0.0.1 whose egress to 127.0.0.1 on the proxy's
/// port carries `http` rules.
async fn proxy(http: &str, cfg: ProxyConfig, upstream_down: bool) -> Proxy {
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
    repo.upsert_endpoint(EndpointSpec {
        name: "client".into(),
        namespace: "default".into(),
        labels: vec![("app".into(), "client".into())],
        ips: vec!["127.0.0.1".parse().expect("ip")],
        ..Default::default()
    });
    repo.resolve();
    let (up, seen) = upstream().await;
    let target = if upstream_down {
        // A port nothing listens on.
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = l.local_addr().expect("addr");
        drop(l);
        a
    } else {
        up
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
        r.starts_with("HTTP/1.1 503") && r.contains("too many connections"),
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

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_header_timeout() {
    let cfg = ProxyConfig {
        header_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let p = proxy(GET_METADATA, cfg, false).await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"GET /metadata/instance HTTP/1.1\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection stayed open");
}
