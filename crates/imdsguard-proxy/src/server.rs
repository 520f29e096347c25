//! The proxy's sockets: a transparent listener, one task per client connection, a faithful
//! forwarder to the original destination, and Envoy's answers for what is not forwarded.

use crate::flows::{Exchange, Unjudged};
use crate::http1::{
    Body, ChunkedFramer, Limits, Parse, Refusal, Request, parse_request, parse_response,
};
use crate::judge::judge_http;
use crate::slots::{Caps, Limit, Slots};
use imdsguard_hubble_proto::flow::{Endpoint, Flow};
use imdsguard_hubble_proto::process::{self, ProcessInfo};
use imdsguard_policy::Identity;
use imdsguard_policy::repository::EndpointPolicy;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Time for a client to send a whole request head once it has begun (and for the first
    /// request's first byte). A head cut short is answered 408.
    pub header_timeout: Duration,
    /// Time for a client to send a whole request body, from the end of its head: a body that
    /// trickles in does not extend it. Answered 408.
    pub body_timeout: Duration,
    /// Time a kept-alive client connection may stay silent between requests, and the longest the
    /// proxy waits on a client that does not read what it is sent.
    pub idle_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    /// Time for the upstream to begin its response head once the request has gone, and then to
    /// complete it. Answered 504.
    pub upstream_timeout: Duration,
    /// Time an upstream may stay silent in the middle of a response body (or leave a request
    /// body unread), and the longest an upstream connection waits in the pool for reuse.
    pub upstream_idle_timeout: Duration,
    /// Open client connections per source identity, so one workload cannot starve the others.
    pub max_connections_per_identity: usize,
    /// Open client connections per client address, inside its identity's limit, so one pod
    /// cannot starve the other pods of its identity.
    pub max_connections_per_pod: usize,
    /// The most request body the proxy reads and throws away to keep a connection after a 403.
    pub max_discarded_body: u64,
    pub limits: Limits,
    pub node_name: String,
    /// Tests: connect here instead of the original destination.
    pub upstream_override: Option<SocketAddr>,
    /// SO_MARK for upstream connections, so policy routing can steer them (the lab routes its
    /// mark to its IMDS emulator). None: the main routing table, the real metadata service.
    pub upstream_mark: Option<u32>,
    /// Connections from loopback to the listener's own address are hostNetwork pods' connect()s
    /// that the datapath rewrote (`Authority::redirected`); none that it cannot name is served.
    /// Off: they are served as any other (a listener a test connects to directly).
    pub hostnet_redirects: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            upstream_connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(15),
            upstream_idle_timeout: Duration::from_secs(15),
            max_connections_per_identity: 64,
            // A quarter of the identity's: one pod of a workload never holds more than that,
            // and it takes four pods at their cap at once to fill the identity's.
            max_connections_per_pod: 16,
            max_discarded_body: 64 * 1024,
            limits: Limits::default(),
            node_name: String::new(),
            upstream_override: None,
            upstream_mark: None,
            hostnet_redirects: false,
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

/// A connection the datapath sent to the proxy's own address on loopback: a hostNetwork pod's
/// connect(), rewritten at the cgroup hook, whose client address (the node's loopback) names no
/// pod and whose local address is not where it was going.
#[derive(Clone)]
pub struct Redirected {
    pub client: Client,
    /// Where the connection was going.
    pub destination: SocketAddr,
    /// The process that connected, when the datapath knew it.
    pub process: Option<ProcessInfo>,
    /// The client socket's cookie and cgroup id (0 unknown), for the flows.
    pub socket_cookie: u64,
    pub cgroup_id: u64,
}

/// What the proxy asks the agent.
pub trait Authority: Send + Sync + 'static {
    fn client(&self, ip: IpAddr) -> Option<Client>;
    /// The destination's identity and labels.
    fn destination(&self, ip: IpAddr) -> Endpoint;
    /// A connection from `peer` (on loopback) to the listener's own address: the hostNetwork pod
    /// whose connect() the datapath sent here, taken from the datapath's record of it (once).
    /// None: no such record, and the connection is closed unjudged (fail closed).
    fn redirected(&self, _peer: SocketAddr) -> Option<Redirected> {
        None
    }
}

/// Where flows go (the agent's Hubble ring buffer).
pub trait FlowSink: Send + Sync + 'static {
    fn flow(&self, f: Flow);
}

const FORBIDDEN: &[u8] = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 15\r\ncontent-type: text/plain\r\n\r\nAccess denied\r\n";
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nBad Request";
const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 91\r\ncontent-type: text/plain\r\n\r\nupstream connect error or disconnect/reset before headers. reset reason: connection failure";
const POD_OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 34\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\ntoo many connections from this pod";
const IDENTITY_OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 39\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\ntoo many connections from this identity";
// Envoy's texts for its request and upstream timeouts.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 15\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nrequest timeout";
const GATEWAY_TIMEOUT: &[u8] = b"HTTP/1.1 504 Gateway Timeout\r\ncontent-length: 24\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nupstream request timeout";

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

struct Ctx {
    cfg: ProxyConfig,
    authority: Arc<dyn Authority>,
    sink: Arc<dyn FlowSink>,
    slots: Slots,
    /// Idle upstream connections by destination, reused across client connections (as nginx's
    /// `keepalive`): no connect per request, and no TIME_WAIT pile-up on the proxy's ports.
    pool: Mutex<HashMap<SocketAddr, Vec<Pooled>>>,
}

struct Pooled {
    stream: TcpStream,
    since: Instant,
}

/// Idle upstream connections kept per destination.
const POOL_PER_DESTINATION: usize = 64;

impl Ctx {
    fn caps(&self) -> Caps {
        Caps {
            per_identity: self.cfg.max_connections_per_identity,
            per_pod: self.cfg.max_connections_per_pod,
        }
    }

    /// A pooled connection that is still open, or a new one.
    async fn upstream(&self, target: SocketAddr) -> io::Result<TcpStream> {
        loop {
            let pooled = self
                .pool
                .lock()
                .ok()
                .and_then(|mut p| p.get_mut(&target).and_then(Vec::pop));
            let Some(Pooled { stream, since }) = pooled else {
                return connect(
                    target,
                    self.cfg.upstream_connect_timeout,
                    self.cfg.upstream_mark,
                )
                .await;
            };
            // Past its idle time the upstream may be closing it as we send: a request lost in
            // that race would be a 503 for nothing.
            if since.elapsed() >= self.cfg.upstream_idle_timeout {
                continue;
            }
            // Open and silent is the only reusable state: EOF or stray bytes mean it is not.
            let mut probe = [0u8; 1];
            if matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            {
                return Ok(stream);
            }
        }
    }

    fn give_back(&self, target: SocketAddr, stream: TcpStream) {
        if let Ok(mut p) = self.pool.lock() {
            let idle = p.entry(target).or_default();
            if idle.len() < POOL_PER_DESTINATION {
                idle.push(Pooled {
                    stream,
                    since: Instant::now(),
                });
            }
        }
    }

    /// Closes the pooled connections idle for longer than `upstream_idle_timeout`. Without it a
    /// burst's connections would stay open (and, once the upstream closes its end, in
    /// CLOSE_WAIT) for as long as nothing else goes to their destination.
    fn close_idle(&self) {
        let max = self.cfg.upstream_idle_timeout;
        if let Ok(mut p) = self.pool.lock() {
            p.retain(|_, idle| {
                idle.retain(|c| c.since.elapsed() < max);
                !idle.is_empty()
            });
        }
    }
}

/// Runs `close_idle` until the proxy is gone; it holds the context weakly so as not to keep it.
async fn close_idle_upstreams(ctx: Weak<Ctx>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(ctx) = ctx.upgrade() else {
            return;
        };
        ctx.close_idle();
    }
}

/// Accepts connections until the listener fails.
pub async fn serve(
    listener: TcpListener,
    cfg: ProxyConfig,
    authority: Arc<dyn Authority>,
    sink: Arc<dyn FlowSink>,
) -> io::Result<()> {
    // A zero interval would make the sweeper spin.
    let sweep = cfg.upstream_idle_timeout.max(Duration::from_millis(10));
    let ctx = Arc::new(Ctx {
        cfg,
        authority,
        sink,
        slots: Slots::default(),
        pool: Mutex::new(HashMap::new()),
    });
    tokio::spawn(close_idle_upstreams(Arc::downgrade(&ctx), sweep));
    let own = listener.local_addr()?;
    loop {
        let (stream, peer) = listener.accept().await?;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            // With IP_TRANSPARENT the local address is the original destination.
            let Ok(local) = stream.local_addr() else {
                return;
            };
            // A connection to the listener itself was rewritten at connect() (a hostNetwork
            // pod): the datapath's record says where it was going. Without one it is closed.
            if ctx.cfg.hostnet_redirects && local == own && is_loopback(peer.ip()) {
                let Some(r) = ctx.authority.redirected(peer) else {
                    let _ = stream.set_zero_linger();
                    return;
                };
                connection(stream, peer, r.destination, Some(r), &ctx).await;
                return;
            }
            connection(stream, peer, local, None, &ctx).await;
        });
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The flows of one client connection: a redirected hostNetwork pod's name its socket and
/// process, which the datapath saw at connect() (no packet of theirs crosses a pod interface).
struct Flows<'a> {
    sink: &'a dyn FlowSink,
    redirected: Option<&'a Redirected>,
}

impl Flows<'_> {
    fn flow(&self, mut f: Flow) {
        if let Some(r) = self.redirected {
            f.socket_cookie = r.socket_cookie;
            f.cgroup_id = r.cgroup_id;
            if let Some(p) = &r.process {
                process::set(&mut f, p);
            }
        }
        self.sink.flow(f);
    }
}

/// How much a read asks the kernel for.
const READ_SIZE: usize = 16 * 1024;

/// Why no message head came.
#[derive(Debug, thiserror::Error)]
enum HeadError {
    #[error("{0}")]
    Refused(Refusal),
    /// Nothing at all arrived in time: for a client, an idle connection ending.
    #[error("nothing arrived in time")]
    Silent,
    /// The head began but was not complete in time.
    #[error("the head did not complete in time")]
    TimedOut,
    /// End of stream or a reset before a whole head.
    #[error("the connection ended before a whole head")]
    Ended,
}

/// Reads until a message head is complete: its first byte within `first_byte`, then the whole
/// head within `rest` of it. Clients and upstreams are held to the same shape of deadline.
async fn read_head<T>(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Parse<T>,
    first_byte: Duration,
    rest: Duration,
) -> Result<T, HeadError> {
    let mut deadline = None;
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Parse::Done(r) => return Ok(r),
                Parse::Refused(e) => return Err(HeadError::Refused(e)),
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
        match timeout(wait, s.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(HeadError::Ended),
            Ok(Ok(_)) => {}
            Err(_) if deadline.is_none() => return Err(HeadError::Silent),
            Err(_) => return Err(HeadError::TimedOut),
        }
    }
}

/// How long the sending side of a body may take.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// The whole body by then: a client's request body, which trickling must not stretch.
    Until(Instant),
    /// Each read within this: a response body, of any size, for as long as it keeps coming.
    Idle(Duration),
}

impl Wait {
    fn next_read(self) -> Duration {
        match self {
            Wait::Until(deadline) => deadline.saturating_duration_since(Instant::now()),
            Wait::Idle(d) => d,
        }
    }
}

/// Why a body did not pass whole.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the sender stopped sending the body")]
    ReadTimeout,
    #[error("the receiver stopped reading the body")]
    WriteTimeout,
    #[error("the connection ended in the middle of the body")]
    Ended,
    #[error("malformed chunked body: {0}")]
    Framing(Refusal),
    #[error(transparent)]
    Io(#[from] io::Error),
}

async fn read_within(
    wait: Wait,
    read: impl Future<Output = io::Result<usize>>,
) -> Result<usize, BodyError> {
    match timeout(wait.next_read(), read).await {
        Ok(Ok(0)) => Err(BodyError::Ended),
        Ok(r) => Ok(r?),
        Err(_) => Err(BodyError::ReadTimeout),
    }
}

async fn write_within(
    to: Option<&mut TcpStream>,
    bytes: &[u8],
    within: Duration,
) -> Result<(), BodyError> {
    // Most bodies have arrived whole with their head: nothing to write, no timer to set.
    let Some(to) = to.filter(|_| !bytes.is_empty()) else {
        return Ok(());
    };
    match timeout(within, to.write_all(bytes)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(BodyError::WriteTimeout),
    }
}

/// Moves one message body from `from` (whose first bytes are already in `buf`) to `to` (or
/// nowhere), without buffering it. Leaves in `buf` whatever follows the body. `read` bounds the
/// sender; each write must complete within `write`, so a receiver that stops reading cannot
/// hold the connection either.
async fn pass_body(
    from: &mut TcpStream,
    buf: &mut Vec<u8>,
    body: Body,
    mut to: Option<&mut TcpStream>,
    read: Wait,
    write: Duration,
) -> Result<(), BodyError> {
    // Allocated on the first read: most bodies are already in `buf`, or absent.
    let mut chunk = Vec::new();
    match body {
        Body::None => Ok(()),
        Body::Length(mut left) => {
            let take = (buf.len() as u64).min(left) as usize;
            write_within(to.as_deref_mut(), &buf[..take], write).await?;
            buf.drain(..take);
            left -= take as u64;
            while left > 0 {
                chunk.resize(READ_SIZE, 0);
                let want = (left as usize).min(chunk.len());
                let n = read_within(read, from.read(&mut chunk[..want])).await?;
                write_within(to.as_deref_mut(), &chunk[..n], write).await?;
                left -= n as u64;
            }
            Ok(())
        }
        Body::Chunked => {
            let mut framer = ChunkedFramer::default();
            loop {
                let used = framer.feed(buf).map_err(BodyError::Framing)?;
                write_within(to.as_deref_mut(), &buf[..used], write).await?;
                buf.drain(..used);
                if framer.done() {
                    return Ok(());
                }
                buf.reserve(READ_SIZE);
                read_within(read, from.read_buf(buf)).await?;
            }
        }
        Body::UntilClose => {
            write_within(to.as_deref_mut(), buf, write).await?;
            buf.clear();
            chunk.resize(READ_SIZE, 0);
            loop {
                let n = match read_within(read, from.read(&mut chunk)).await {
                    Ok(n) => n,
                    Err(BodyError::Ended) => return Ok(()),
                    Err(e) => return Err(e),
                };
                write_within(to.as_deref_mut(), &chunk[..n], write).await?;
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

/// `local`: the original destination.
async fn connection(
    mut client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    redirected: Option<Redirected>,
    ctx: &Ctx,
) {
    let target = ctx.cfg.upstream_override.unwrap_or(local);
    let mut upstream = None;
    let ending = exchanges(
        &mut client,
        peer,
        local,
        target,
        redirected.as_ref(),
        ctx,
        &mut upstream,
    )
    .await;
    if let Some(Upstream {
        stream,
        reusable: true,
        ..
    }) = upstream
    {
        ctx.give_back(target, stream);
    }
    if ending == Ending::Abort {
        // A reset, not a FIN: a FIN could pass for the end of a response that was cut short.
        let _ = client.set_zero_linger();
        return;
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

/// How a client connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Close,
    /// A response was cut short.
    Abort,
}

/// Ends an exchange with an answer of the proxy's own, after that answer's response flow.
async fn answer(
    client: &mut TcpStream,
    ctx: &Ctx,
    sink: &Flows<'_>,
    exchange: &Exchange<'_>,
    started: Instant,
    status: u16,
    bytes: &[u8],
) -> Ending {
    sink.flow(exchange.response_flow(status, elapsed_ns(started)));
    send(client, ctx, bytes).await;
    Ending::Close
}

/// Sends an answer of the proxy's own, and says whether it went. A client that has stopped
/// reading is given up on after `idle_timeout`, as it is for a forwarded response.
async fn send(client: &mut TcpStream, ctx: &Ctx, bytes: &[u8]) -> bool {
    write_within(Some(client), bytes, ctx.cfg.idle_timeout)
        .await
        .is_ok()
}

async fn exchanges(
    client: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    target: SocketAddr,
    redirected: Option<&Redirected>,
    ctx: &Ctx,
    upstream: &mut Option<Upstream>,
) -> Ending {
    let cfg = &ctx.cfg;
    let authority = local.to_string();
    let destination = ctx.authority.destination(local.ip());
    let sink = &Flows {
        sink: &*ctx.sink,
        redirected,
    };
    let client_pod = match redirected {
        Some(r) => Some(r.client.clone()),
        None => ctx.authority.client(peer.ip()),
    };
    let Some(c) = client_pod else {
        // The datapath only redirects known pods; one that just went away gets a refusal.
        send(client, ctx, FORBIDDEN).await;
        return Ending::Close;
    };
    let unjudged = Unjudged {
        client: peer,
        server: local,
        source: &c.endpoint,
        destination: &destination,
        node_name: &cfg.node_name,
    };
    let _slot = match ctx.slots.take(c.endpoint.identity, peer.ip(), ctx.caps()) {
        Ok(slot) => slot,
        Err(limit) => {
            sink.flow(unjudged.limited(&limit));
            let bytes = match limit {
                Limit::Pod(_) => POD_OVERLOADED,
                Limit::Identity(_) => IDENTITY_OVERLOADED,
            };
            send(client, ctx, bytes).await;
            return Ending::Close;
        }
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
        let parse = |b: &[u8]| parse_request(b, &authority, &cfg.limits);
        let req = match read_head(client, &mut buf, parse, wait, cfg.header_timeout).await {
            Ok(r) => r,
            // Closed, or silent since the last request: how kept-alive connections end.
            Err(HeadError::Ended | HeadError::Silent) => return Ending::Close,
            Err(HeadError::TimedOut) => {
                let why = "request head timed out";
                sink.flow(unjudged.refused(&why));
                let took = u64::try_from(cfg.header_timeout.as_nanos()).unwrap_or(u64::MAX);
                sink.flow(unjudged.answered(408, took, &why));
                send(client, ctx, REQUEST_TIMEOUT).await;
                return Ending::Close;
            }
            Err(HeadError::Refused(refusal)) => {
                sink.flow(unjudged.refused(&refusal));
                send(client, ctx, BAD_REQUEST).await;
                return Ending::Close;
            }
        };
        buf.drain(..req.head_len);
        let head_done = Instant::now();
        let body_by = Wait::Until(head_done + cfg.body_timeout);
        let decision = judge_http(
            &c.policy,
            Identity(destination.identity),
            local.port(),
            &req.http,
        );
        let exchange = Exchange {
            client: peer,
            server: local,
            source: &c.endpoint,
            destination: &destination,
            request: &req,
            node_name: &cfg.node_name,
            allowed_by: &decision.allowed_by,
            audited_by: &decision.audited_by,
        };
        if !decision.allowed {
            sink.flow(exchange.request_flow(false));
            // Read the body away so the connection stays usable; a large one ends it.
            let small = match req.body {
                Body::Length(n) => n <= cfg.max_discarded_body,
                _ => true,
            };
            if !small {
                send(client, ctx, FORBIDDEN).await;
                return Ending::Close;
            }
            match pass_body(client, &mut buf, req.body, None, body_by, cfg.idle_timeout).await {
                Ok(()) => {}
                Err(BodyError::ReadTimeout) => {
                    return answer(
                        client,
                        ctx,
                        sink,
                        &exchange,
                        head_done,
                        408,
                        REQUEST_TIMEOUT,
                    )
                    .await;
                }
                Err(_) => {
                    send(client, ctx, FORBIDDEN).await;
                    return Ending::Close;
                }
            }
            if !send(client, ctx, FORBIDDEN).await || req.close {
                return Ending::Close;
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
                    sink.flow(exchange.request_flow(true));
                    let read_away =
                        pass_body(client, &mut buf, req.body, None, body_by, cfg.idle_timeout)
                            .await;
                    if let Err(BodyError::ReadTimeout) = read_away {
                        return answer(client, ctx, sink, &exchange, started, 408, REQUEST_TIMEOUT)
                            .await;
                    }
                    sink.flow(exchange.response_flow(503, elapsed_ns(started)));
                    if read_away.is_err() || !send(client, ctx, UNAVAILABLE).await || req.close {
                        return Ending::Close;
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
            return Ending::Close;
        };
        *reusable = false;
        let head_sent =
            write_within(Some(up), &forwarded_head(&req), cfg.upstream_idle_timeout).await;
        // The request's flow is built once the request is on its way, off the latency path.
        sink.flow(exchange.request_flow(true));
        let sent = match head_sent {
            Ok(()) => {
                let to = Some(&mut *up);
                pass_body(
                    client,
                    &mut buf,
                    req.body,
                    to,
                    body_by,
                    cfg.upstream_idle_timeout,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match sent {
            Ok(()) => {}
            // The upstream has part of a request: the connection goes with the client's.
            Err(BodyError::ReadTimeout) => {
                return answer(client, ctx, sink, &exchange, started, 408, REQUEST_TIMEOUT).await;
            }
            Err(BodyError::WriteTimeout) => {
                return answer(client, ctx, sink, &exchange, started, 504, GATEWAY_TIMEOUT).await;
            }
            Err(_) => {
                send(client, ctx, UNAVAILABLE).await;
                return Ending::Close;
            }
        }
        // The response head, then its body, passed through unchanged.
        let parse = |b: &[u8]| parse_response(b, &req.http.method, &cfg.limits);
        let waited = cfg.upstream_timeout;
        let resp = match read_head(up, upbuf, parse, waited, waited).await {
            Ok(r) => r,
            Err(HeadError::Silent | HeadError::TimedOut) => {
                return answer(client, ctx, sink, &exchange, started, 504, GATEWAY_TIMEOUT).await;
            }
            Err(HeadError::Refused(_) | HeadError::Ended) => {
                return answer(client, ctx, sink, &exchange, started, 503, UNAVAILABLE).await;
            }
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
            write_within(Some(client), &out, cfg.idle_timeout).await
        } else {
            write_within(Some(client), &upbuf[..end], cfg.idle_timeout).await
        };
        if written.is_err() {
            return Ending::Abort;
        }
        upbuf.drain(..end);
        let upstream_idle = Wait::Idle(cfg.upstream_idle_timeout);
        let done = pass_body(
            up,
            upbuf,
            body,
            Some(client),
            upstream_idle,
            cfg.idle_timeout,
        )
        .await;
        // An upstream gone silent mid-body ends the exchange as a gateway timeout, though the
        // client has had the head already; the flow counts what went wrong, not what was sent.
        let status = match done {
            Err(BodyError::ReadTimeout) => 504,
            _ => resp.status,
        };
        sink.flow(exchange.response_flow(status, elapsed_ns(started)));
        *reusable = done.is_ok() && !resp.close && upbuf.is_empty();
        if done.is_err() {
            return Ending::Abort;
        }
        if req.close || resp.close {
            return Ending::Close;
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
    fn every_canned_answer_announces_its_own_length() {
        for answer in [
            FORBIDDEN,
            BAD_REQUEST,
            UNAVAILABLE,
            POD_OVERLOADED,
            IDENTITY_OVERLOADED,
            REQUEST_TIMEOUT,
            GATEWAY_TIMEOUT,
        ] {
            let text = String::from_utf8_lossy(answer);
            let (head, body) = text.split_once("\r\n\r\n").expect("a head");
            let announced = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.parse::<usize>().ok());
            assert_eq!(announced, Some(body.len()), "{text}");
        }
    }

    #[test]
    fn a_closing_head_says_close_once() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n";
        assert_eq!(
            closing_head(head),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n".to_vec()
        );
    }
}
