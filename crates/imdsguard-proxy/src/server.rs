//! The proxy's sockets: a transparent listener, one task per client connection, a faithful
//! forwarder to the original destination, and Envoy's answers for what is not forwarded.

use crate::flows::Exchange;
use crate::http1::{
    Body, ChunkedFramer, Limits, Parse, Refusal, Request, parse_request, parse_response,
};
use imdsguard_hubble_proto::flow::{Endpoint, Flow};
use imdsguard_policy::Identity;
use imdsguard_policy::repository::EndpointPolicy;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Time for a client to send a whole request head.
    pub header_timeout: Duration,
    /// Time a kept-alive client connection may stay silent.
    pub idle_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    /// Time for the upstream to send its response head.
    pub upstream_timeout: Duration,
    /// Open client connections per source identity, so one pod cannot starve the others.
    pub max_connections_per_identity: usize,
    /// The most request body the proxy reads and throws away to keep a connection after a 403.
    pub max_discarded_body: u64,
    pub limits: Limits,
    pub node_name: String,
    /// Tests: connect here instead of the original destination.
    pub upstream_override: Option<SocketAddr>,
    /// SO_MARK for upstream connections, so policy routing can steer them (the lab routes its
    /// mark to its IMDS emulator). None: the main routing table, the real metadata service.
    pub upstream_mark: Option<u32>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            upstream_connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(15),
            max_connections_per_identity: 64,
            max_discarded_body: 64 * 1024,
            limits: Limits::default(),
            node_name: String::new(),
            upstream_override: None,
            upstream_mark: None,
        }
    }
}

/// A client pod as the agent knows it.
#[derive(Clone)]
pub struct Client {
    /// For flows: ID, identity, namespace, pod name, labels.
    pub endpoint: Endpoint,
    pub policy: Arc<EndpointPolicy>,
}

/// What the proxy asks the agent.
pub trait Authority: Send + Sync + 'static {
    fn client(&self, ip: IpAddr) -> Option<Client>;
    /// The destination's identity and labels.
    fn destination(&self, ip: IpAddr) -> Endpoint;
}

/// Where flows go (the agent's Hubble ring buffer).
pub trait FlowSink: Send + Sync + 'static {
    fn flow(&self, f: Flow);
}

const FORBIDDEN: &[u8] = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 15\r\ncontent-type: text/plain\r\n\r\nAccess denied\r\n";
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nBad Request";
const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 91\r\ncontent-type: text/plain\r\n\r\nupstream connect error or disconnect/reset before headers. reset reason: connection failure";
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 37\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\ntoo many connections from this source";

/// A listener for connections the datapath assigns with `bpf_sk_assign`: IP_TRANSPARENT lets it
/// accept connections to addresses that are not local (the original destination).
pub fn transparent_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    let (level, name) = if addr.is_ipv4() {
        (libc::SOL_IP, libc::IP_TRANSPARENT)
    } else {
        (libc::SOL_IPV6, libc::IPV6_TRANSPARENT)
    };
    if let Err(e) = set_int_option(&socket, level, name, 1) {
        return Err(io::Error::new(
            e.kind(),
            format!("setting IP_TRANSPARENT ({e}); it needs CAP_NET_ADMIN"),
        ));
    }
    socket.set_reuseaddr(true)?;
    // Accepted connections inherit it: one setsockopt less per connection.
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Open connections per identity.
#[derive(Default)]
struct Slots(Mutex<HashMap<u32, usize>>);

struct Slot<'a>(&'a Slots, u32);

impl Slots {
    fn take(&self, identity: u32, max: usize) -> Option<Slot<'_>> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(identity).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot(self, identity))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.0.0.lock()
            && let Some(n) = m.get_mut(&self.1)
        {
            *n = n.saturating_sub(1);
        }
    }
}

struct Ctx {
    cfg: ProxyConfig,
    authority: Arc<dyn Authority>,
    sink: Arc<dyn FlowSink>,
    slots: Slots,
    /// Idle upstream connections by destination, reused across client connections (as nginx's
    /// `keepalive`): no connect per request, and no TIME_WAIT pile-up on the proxy's ports.
    pool: Mutex<HashMap<SocketAddr, Vec<TcpStream>>>,
}

/// Idle upstream connections kept per destination.
const POOL_PER_DESTINATION: usize = 64;

impl Ctx {
    /// A pooled connection that is still open, or a new one.
    async fn upstream(&self, target: SocketAddr) -> io::Result<TcpStream> {
        loop {
            let pooled = self
                .pool
                .lock()
                .ok()
                .and_then(|mut p| p.get_mut(&target).and_then(Vec::pop));
            let Some(s) = pooled else {
                return connect(
                    target,
                    self.cfg.upstream_connect_timeout,
                    self.cfg.upstream_mark,
                )
                .await;
            };
            // Open and silent is the only reusable state: EOF or stray bytes mean it is not.
            let mut probe = [0u8; 1];
            if matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                return Ok(s);
            }
        }
    }

    fn give_back(&self, target: SocketAddr, s: TcpStream) {
        if let Ok(mut p) = self.pool.lock() {
            let idle = p.entry(target).or_default();
            if idle.len() < POOL_PER_DESTINATION {
                idle.push(s);
            }
        }
    }
}

/// Accepts connections until the listener fails.
pub async fn serve(
    listener: TcpListener,
    cfg: ProxyConfig,
    authority: Arc<dyn Authority>,
    sink: Arc<dyn FlowSink>,
) -> io::Result<()> {
    let ctx = Arc::new(Ctx {
        cfg,
        authority,
        sink,
        slots: Slots::default(),
        pool: Mutex::new(HashMap::new()),
    });
    loop {
        let (stream, peer) = listener.accept().await?;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            // With IP_TRANSPARENT the local address is the original destination.
            let Ok(local) = stream.local_addr() else {
                return;
            };
            connection(stream, peer, local, &ctx).await;
        });
    }
}

/// How much a read asks the kernel for.
const READ_SIZE: usize = 16 * 1024;

/// Reads until a request head is complete. `None` at a clean end of stream.
async fn read_head(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    authority: &str,
    limits: &Limits,
    first_byte: Duration,
    rest: Duration,
) -> Result<Option<Request>, Option<Refusal>> {
    let mut deadline = None;
    loop {
        if !buf.is_empty() {
            match parse_request(buf, authority, limits) {
                Parse::Done(r) => return Ok(Some(r)),
                Parse::Refused(e) => return Err(Some(e)),
                Parse::Partial => {}
            }
            deadline.get_or_insert_with(|| Instant::now() + rest);
        }
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => first_byte,
        };
        // Straight into the buffer's spare room: no zeroed chunk and no copy per read.
        buf.reserve(READ_SIZE);
        let had = buf.len();
        let n = match timeout(wait, s.read_buf(buf)).await {
            Ok(Ok(n)) => n,
            // A timeout or a reset: nothing to answer.
            _ => return Err(None),
        };
        if n == 0 {
            return if had == 0 { Ok(None) } else { Err(None) };
        }
    }
}

/// Moves one message body from `from` (whose first bytes are already in `buf`) to `to` (or
/// nowhere), without buffering it. Leaves in `buf` whatever follows the body.
async fn pass_body(
    from: &mut TcpStream,
    buf: &mut Vec<u8>,
    body: Body,
    mut to: Option<&mut TcpStream>,
) -> io::Result<()> {
    // Allocated on the first read: most bodies are already in `buf`, or absent.
    let mut chunk = Vec::new();
    match body {
        Body::None => Ok(()),
        Body::Length(mut left) => {
            let take = (buf.len() as u64).min(left) as usize;
            if let Some(t) = to.as_deref_mut() {
                t.write_all(&buf[..take]).await?;
            }
            buf.drain(..take);
            left -= take as u64;
            while left > 0 {
                chunk.resize(READ_SIZE, 0);
                let want = (left as usize).min(chunk.len());
                let n = from.read(&mut chunk[..want]).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                if let Some(t) = to.as_deref_mut() {
                    t.write_all(&chunk[..n]).await?;
                }
                left -= n as u64;
            }
            Ok(())
        }
        Body::Chunked => {
            let mut framer = ChunkedFramer::default();
            loop {
                let used = framer
                    .feed(buf)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                if let Some(t) = to.as_deref_mut() {
                    t.write_all(&buf[..used]).await?;
                }
                buf.drain(..used);
                if framer.done() {
                    return Ok(());
                }
                buf.reserve(READ_SIZE);
                let n = from.read_buf(buf).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        Body::UntilClose => {
            if let Some(t) = to.as_deref_mut() {
                t.write_all(buf).await?;
            }
            buf.clear();
            chunk.resize(READ_SIZE, 0);
            loop {
                let n = from.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                if let Some(t) = to.as_deref_mut() {
                    t.write_all(&chunk[..n]).await?;
                }
            }
        }
    }
}

/// The request head as forwarded: the request line as received, then the fields in order minus
/// the hop-by-hop ones (RFC 9110 §7.6.1). Nothing is added: no Via, no X-Forwarded-For.
fn forwarded_head(req: &Request) -> Vec<u8> {
    const HOP: [&str; 6] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "proxy-authorization",
    ];
    let headers = &req.http.headers;
    // Fields the client's Connection names are hop-by-hop too.
    let listed = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(name))
    };
    let mut out = Vec::with_capacity(req.head_len + 32);
    out.extend_from_slice(req.http.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.");
    out.push(b'0' + req.minor_version);
    out.extend_from_slice(b"\r\n");
    for (n, v) in headers {
        if HOP.iter().any(|h| n.eq_ignore_ascii_case(h)) || listed(n) {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // Connection is per hop: the client's `close` ends the client's connection, not the pooled
    // upstream one.
    out.extend_from_slice(b"\r\n");
    out
}

/// A response head with its Connection and Keep-Alive fields replaced by `Connection: close`.
fn closing_head(head: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + 19);
    let body = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
    for (i, line) in body.split(|&c| c == b'\n').enumerate() {
        let lower = line.to_ascii_lowercase();
        if i > 0 && (lower.starts_with(b"connection:") || lower.starts_with(b"keep-alive:")) {
            continue;
        }
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

async fn connect(addr: SocketAddr, within: Duration, mark: Option<u32>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(mark) = mark {
        set_int_option(
            &socket,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            mark as libc::c_int,
        )?;
    }
    match timeout(within, socket.connect(addr)).await {
        Ok(r) => {
            let s = r?;
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

async fn connection(mut client: TcpStream, peer: SocketAddr, local: SocketAddr, ctx: &Ctx) {
    let target = ctx.cfg.upstream_override.unwrap_or(local);
    let mut upstream = None;
    exchanges(&mut client, peer, local, target, ctx, &mut upstream).await;
    if let Some(Upstream {
        stream,
        reusable: true,
        ..
    }) = upstream
    {
        ctx.give_back(target, stream);
    }
    // Close as a server does: our FIN first (carried by the last response segment when
    // `exchanges` corked it), so the TIME_WAIT stays here. Left on the client's side, thousands
    // of them make every new connect() search for a free port (4 ms per connect at 15,000 on
    // this kernel). If the client has sent more, read until it closes, so that a request still
    // in flight cannot turn into a reset that destroys the response; if not, a close now sends
    // nothing more.
    let _ = client.shutdown().await;
    let mut sink = [0u8; 1024];
    match client.try_read(&mut sink) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
        Ok(0) => return,
        _ => {}
    }
    let _ = timeout(Duration::from_secs(2), async {
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Holds partial segments until the connection's FIN: the last response and the FIN then
/// leave in one segment, so the client sees the close before it could start its own.
/// Failure only costs a separate FIN segment.
fn cork(s: &TcpStream) {
    let _ = set_int_option(s, libc::IPPROTO_TCP, libc::TCP_CORK, 1);
}

/// A socket option whose value is a C int (tokio offers no setter for these).
fn set_int_option(
    socket: &impl std::os::fd::AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid socket fd and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The upstream connection of one client connection.
struct Upstream {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The last response ended cleanly and the upstream keeps the connection open.
    reusable: bool,
}

async fn exchanges(
    client: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    target: SocketAddr,
    ctx: &Ctx,
    upstream: &mut Option<Upstream>,
) {
    let cfg = &ctx.cfg;
    let authority = local.to_string();
    let destination = ctx.authority.destination(local.ip());
    let Some(c) = ctx.authority.client(peer.ip()) else {
        // The datapath only redirects known pods; one that just went away gets a refusal.
        let _ = client.write_all(FORBIDDEN).await;
        return;
    };
    let Some(_slot) = ctx
        .slots
        .take(c.endpoint.identity, cfg.max_connections_per_identity)
    else {
        let _ = client.write_all(OVERLOADED).await;
        return;
    };
    let mut buf = Vec::with_capacity(4096);
    let mut first = true;
    loop {
        let wait = if first {
            cfg.header_timeout
        } else {
            cfg.idle_timeout
        };
        first = false;
        let req = match read_head(
            client,
            &mut buf,
            &authority,
            &cfg.limits,
            wait,
            cfg.header_timeout,
        )
        .await
        {
            Ok(Some(r)) => r,
            Ok(None) | Err(None) => return,
            Err(Some(refusal)) => {
                ctx.sink.flow(crate::flows::refused_flow(
                    peer,
                    local,
                    &c.endpoint,
                    &destination,
                    &cfg.node_name,
                    &refusal,
                ));
                let _ = client.write_all(BAD_REQUEST).await;
                return;
            }
        };
        buf.drain(..req.head_len);
        let (allowed, origins) =
            c.policy
                .egress
                .http_allows(Identity(destination.identity), local.port(), &req.http);
        let exchange = Exchange {
            client: peer,
            server: local,
            source: &c.endpoint,
            destination: &destination,
            request: &req,
            node_name: &cfg.node_name,
            allowed_by: &origins,
        };
        if !allowed {
            ctx.sink.flow(exchange.request_flow(false));
            // Read the body away so the connection stays usable; a large one ends it.
            let small = match req.body {
                Body::Length(n) => n <= cfg.max_discarded_body,
                _ => true,
            };
            if !small || pass_body(client, &mut buf, req.body, None).await.is_err() {
                let _ = client.write_all(FORBIDDEN).await;
                return;
            }
            if client.write_all(FORBIDDEN).await.is_err() || req.close {
                return;
            }
            continue;
        }
        let started = Instant::now();
        if upstream.is_none() {
            match ctx.upstream(target).await {
                Ok(stream) => {
                    *upstream = Some(Upstream {
                        stream,
                        buf: Vec::with_capacity(4096),
                        reusable: false,
                    })
                }
                Err(_) => {
                    ctx.sink.flow(exchange.request_flow(true));
                    ctx.sink
                        .flow(exchange.response_flow(503, elapsed_ns(started)));
                    if pass_body(client, &mut buf, req.body, None).await.is_err()
                        || client.write_all(UNAVAILABLE).await.is_err()
                        || req.close
                    {
                        return;
                    }
                    continue;
                }
            }
        }
        let Some(Upstream {
            stream: up,
            buf: upbuf,
            reusable,
        }) = upstream.as_mut()
        else {
            return;
        };
        *reusable = false;
        let head_sent = up.write_all(&forwarded_head(&req)).await;
        // The request's flow is built once the request is on its way, off the latency path.
        ctx.sink.flow(exchange.request_flow(true));
        let sent = match head_sent {
            Ok(()) => pass_body(client, &mut buf, req.body, Some(up)).await,
            Err(e) => Err(e),
        };
        if sent.is_err() {
            let _ = client.write_all(UNAVAILABLE).await;
            return;
        }
        // The response head, then its body, passed through unchanged.
        let resp = loop {
            match parse_response(upbuf, &req.http.method, &cfg.limits) {
                Parse::Done(r) => break Some(r),
                Parse::Refused(_) => break None,
                Parse::Partial => {}
            }
            upbuf.reserve(READ_SIZE);
            match timeout(cfg.upstream_timeout, up.read_buf(upbuf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break None,
            }
        };
        let Some(resp) = resp else {
            ctx.sink
                .flow(exchange.response_flow(503, elapsed_ns(started)));
            let _ = client.write_all(UNAVAILABLE).await;
            return;
        };
        // The upstream connection stays open (Connection is per hop), so a client that asked
        // to close must hear it from us.
        if req.close || resp.close {
            cork(client);
        }
        // The head and as much of a sized body as has arrived leave in one write: one segment
        // and one wake-up for the client where a small response (an IMDS answer) is complete.
        let (body, arrived) = match resp.body {
            Body::Length(n) => {
                let arrived =
                    (upbuf.len() - resp.head_len).min(usize::try_from(n).unwrap_or(usize::MAX));
                (Body::Length(n - arrived as u64), arrived)
            }
            other => (other, 0),
        };
        let end = resp.head_len + arrived;
        let written = if req.close && !resp.close {
            let mut out = closing_head(&upbuf[..resp.head_len]);
            out.extend_from_slice(&upbuf[resp.head_len..end]);
            client.write_all(&out).await
        } else {
            client.write_all(&upbuf[..end]).await
        };
        if written.is_err() {
            return;
        }
        upbuf.drain(..end);
        let done = pass_body(up, upbuf, body, Some(client)).await;
        ctx.sink
            .flow(exchange.response_flow(resp.status, elapsed_ns(started)));
        *reusable = done.is_ok() && !resp.close && upbuf.is_empty();
        if done.is_err() || req.close || resp.close {
            return;
        }
    }
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closing_head_says_close_once() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n";
        assert_eq!(
            closing_head(head),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n".to_vec()
        );
    }
}
