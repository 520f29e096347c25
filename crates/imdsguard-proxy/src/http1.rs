//! A strict HTTP/1.1 message-head parser for a filtering proxy.
//!
//! The proxy judges a request by its head and then forwards the bytes. Whatever the upstream could
//! read differently from us is refused here, before anything is forwarded: a request is either
//! unambiguous or it is an error with a reason (RFC 9112 §2.2, §3, §5, §6.1, §6.3, and the
//! smuggling cases of docs/metadata-services.md).

use imdsguard_metadata::percent::{Piece, pieces};
use imdsguard_policy::l7::HttpRequest;
use std::fmt;

/// Limits on what a client may send before the proxy has decided.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_line: usize,
    pub head: usize,
    pub headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Envoy's defaults are 60 KiB and 100 headers; IMDS requests are a few hundred bytes.
        Limits {
            request_line: 8 * 1024,
            head: 32 * 1024,
            headers: 100,
        }
    }
}

/// Why a message was refused. `Display` is the text that goes into the flow and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    RequestLineTooLong,
    HeadTooLarge,
    TooManyHeaders,
    BareCr,
    BareLf,
    Nul,
    ControlCharacter,
    BadRequestLine,
    BadMethod,
    UnsupportedVersion,
    BadTarget(&'static str),
    ForeignAuthority(String),
    BadHeaderName,
    WhitespaceBeforeColon,
    ObsFold,
    BadHeaderValue,
    ContentLengthAndTransferEncoding,
    DuplicateContentLength,
    BadContentLength,
    UnknownTransferCoding(String),
    TransferEncodingInHttp10,
    MissingHost,
    DuplicateHost,
    Upgrade,
    BadStatusLine,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::RequestLineTooLong => write!(f, "request line too long"),
            Refusal::HeadTooLarge => write!(f, "request head too large"),
            Refusal::TooManyHeaders => write!(f, "too many header fields"),
            Refusal::BareCr => write!(f, "bare CR"),
            Refusal::BareLf => write!(f, "bare LF (lines must end with CRLF)"),
            Refusal::Nul => write!(f, "NUL byte"),
            Refusal::ControlCharacter => write!(f, "control character"),
            Refusal::BadRequestLine => write!(f, "malformed request line"),
            Refusal::BadMethod => write!(f, "invalid method"),
            Refusal::UnsupportedVersion => write!(f, "unsupported HTTP version"),
            Refusal::BadTarget(why) => write!(f, "request target: {why}"),
            Refusal::ForeignAuthority(a) => {
                write!(f, "absolute-form target names another host ({a})")
            }
            Refusal::BadHeaderName => write!(f, "invalid header field name"),
            Refusal::WhitespaceBeforeColon => write!(f, "whitespace between field name and colon"),
            Refusal::ObsFold => write!(f, "obsolete line folding"),
            Refusal::BadHeaderValue => write!(f, "invalid header field value"),
            Refusal::ContentLengthAndTransferEncoding => {
                write!(f, "both Content-Length and Transfer-Encoding")
            }
            Refusal::DuplicateContentLength => write!(f, "more than one Content-Length"),
            Refusal::BadContentLength => write!(f, "invalid Content-Length"),
            Refusal::UnknownTransferCoding(c) => write!(f, "unknown transfer coding {c:?}"),
            Refusal::TransferEncodingInHttp10 => write!(f, "Transfer-Encoding in HTTP/1.0"),
            Refusal::MissingHost => write!(f, "no Host header"),
            Refusal::DuplicateHost => write!(f, "more than one Host header"),
            Refusal::Upgrade => write!(f, "protocol upgrade"),
            Refusal::BadStatusLine => write!(f, "malformed status line"),
        }
    }
}

/// How the message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
    /// Responses only: until the upstream closes.
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What the rules match: the method, the origin-form path and query (`path`), `host`, and
    /// the fields in the order received, names as sent.
    pub http: HttpRequest,
    /// As sent: origin-form (`/path?query`) or absolute-form naming the original destination.
    pub target: String,
    pub minor_version: u8,
    pub body: Body,
    /// The client wants the connection closed after this exchange.
    pub close: bool,
    /// The head's length in bytes (where the body starts).
    pub head_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub minor_version: u8,
    pub body: Body,
    pub close: bool,
    pub head_len: usize,
}

/// Parsing needs more bytes, or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse<T> {
    Done(T),
    Partial,
    Refused(Refusal),
}

/// Where the head ends: the index just past `\r\n\r\n`, checking line endings as it goes.
fn head_end(buf: &[u8], limits: &Limits) -> Result<Option<usize>, Refusal> {
    let mut line_start = 0;
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            b'\r' => match buf.get(i + 1) {
                None => return check_partial(buf, line_start, limits).map(|_| None),
                Some(b'\n') => {
                    if line_start == 0 && i > limits.request_line {
                        return Err(Refusal::RequestLineTooLong);
                    }
                    if i == line_start {
                        return Ok(Some(i + 2));
                    }
                    i += 2;
                    line_start = i;
                    continue;
                }
                Some(_) => return Err(Refusal::BareCr),
            },
            b'\n' => return Err(Refusal::BareLf),
            0 => return Err(Refusal::Nul),
            _ => {}
        }
        i += 1;
        if i > limits.head {
            return Err(Refusal::HeadTooLarge);
        }
    }
    check_partial(buf, line_start, limits).map(|_| None)
}

fn check_partial(buf: &[u8], line_start: usize, limits: &Limits) -> Result<(), Refusal> {
    if line_start == 0 && buf.len() > limits.request_line {
        return Err(Refusal::RequestLineTooLong);
    }
    if buf.len() > limits.head {
        return Err(Refusal::HeadTooLarge);
    }
    Ok(())
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    // `head` ends with the empty line; every line ends with CRLF (checked by head_end).
    head.split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
}

/// The header fields after the start line: names and values validated, values trimmed.
fn fields<'a>(
    mut it: impl Iterator<Item = &'a [u8]>,
    limits: &Limits,
) -> Result<Vec<(String, String)>, Refusal> {
    let mut out = Vec::new();
    for line in &mut it {
        if out.len() == limits.headers {
            return Err(Refusal::TooManyHeaders);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(Refusal::ObsFold);
        }
        let colon = line
            .iter()
            .position(|&c| c == b':')
            .ok_or(Refusal::BadHeaderName)?;
        let name = &line[..colon];
        if name.last().is_some_and(|c| *c == b' ' || *c == b'\t') {
            return Err(Refusal::WhitespaceBeforeColon);
        }
        if name.is_empty() || !name.iter().all(|&c| is_tchar(c)) {
            return Err(Refusal::BadHeaderName);
        }
        let value = line[colon + 1..].trim_ascii();
        if value.iter().any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f) {
            return Err(Refusal::BadHeaderValue);
        }
        // Names are tchars (ASCII); values may carry obs-text, kept byte for byte.
        let name = String::from_utf8_lossy(name).into_owned();
        let value = match std::str::from_utf8(value) {
            Ok(v) => v.to_owned(),
            Err(_) => return Err(Refusal::BadHeaderValue),
        };
        out.push((name, value));
    }
    Ok(out)
}

/// Content-Length, Transfer-Encoding and Connection, the framing fields.
fn framing(headers: &[(String, String)], minor: u8) -> Result<(Option<u64>, bool, bool), Refusal> {
    let mut length = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut close = minor == 0;
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(Refusal::DuplicateContentLength);
            }
            if v.is_empty() || v.len() > 18 || !v.bytes().all(|c| c.is_ascii_digit()) {
                return Err(Refusal::BadContentLength);
            }
            length = Some(v.parse().map_err(|_| Refusal::BadContentLength)?);
        } else if n.eq_ignore_ascii_case("transfer-encoding") {
            if minor == 0 {
                return Err(Refusal::TransferEncodingInHttp10);
            }
            if te_seen || !v.eq_ignore_ascii_case("chunked") {
                return Err(Refusal::UnknownTransferCoding(v.clone()));
            }
            te_seen = true;
            chunked = true;
        } else if n.eq_ignore_ascii_case("connection") {
            for token in v.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        }
    }
    if chunked && length.is_some() {
        return Err(Refusal::ContentLengthAndTransferEncoding);
    }
    Ok((length, chunked, close))
}

fn version(v: &[u8]) -> Result<u8, Refusal> {
    match v {
        b"HTTP/1.1" => Ok(1),
        b"HTTP/1.0" => Ok(0),
        _ => Err(Refusal::UnsupportedVersion),
    }
}

/// Checks an origin-form target: a path that means one thing to every server. Returns the path.
fn origin_form(target: &str) -> Result<(), Refusal> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if !path.starts_with('/') {
        return Err(Refusal::BadTarget("must start with /"));
    }
    if target.contains('#') {
        return Err(Refusal::BadTarget("fragment"));
    }
    if path.contains('\\') {
        return Err(Refusal::BadTarget("backslash"));
    }
    if path.contains("//") {
        return Err(Refusal::BadTarget("empty path segment (//)"));
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(Refusal::BadTarget("dot segment"));
    }
    // Percent-encoding: well formed everywhere; in the path, nothing whose decoding could move
    // a boundary the rules match on (IMDS decodes before routing).
    let query_at = target.find('?').unwrap_or(target.len());
    for piece in pieces(target) {
        match piece {
            Piece::Literal(_) => {}
            Piece::Malformed { .. } => return Err(Refusal::BadTarget("bad percent-encoding")),
            Piece::Escaped { offset, byte } => {
                if offset < query_at
                    && (matches!(byte, b'?' | b'/' | b'.' | b'%' | b'#' | b'\\')
                        || !(0x20..0x7f).contains(&byte))
                {
                    return Err(Refusal::BadTarget(
                        "percent-encoded ?, /, ., %, # or non-printable byte in the path",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Parses a request head from the start of `buf`. `authority` is the original destination
/// (`ip:port`), the only host an absolute-form target may name.
pub fn parse_request(buf: &[u8], authority: &str, limits: &Limits) -> Parse<Request> {
    match parse_request_inner(buf, authority, limits) {
        Ok(Some(r)) => Parse::Done(r),
        Ok(None) => Parse::Partial,
        Err(e) => Parse::Refused(e),
    }
}

fn parse_request_inner(
    buf: &[u8],
    authority: &str,
    limits: &Limits,
) -> Result<Option<Request>, Refusal> {
    let Some(end) = head_end(buf, limits)? else {
        return Ok(None);
    };
    let head = &buf[..end];
    let mut it = lines(head);
    let line = it.next().ok_or(Refusal::BadRequestLine)?;
    if line.iter().any(|&c| c < 0x20 || c == 0x7f) {
        return Err(Refusal::ControlCharacter);
    }
    let mut parts = line.split(|&c| c == b' ');
    let (Some(method), Some(target), Some(ver), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequestLine);
    };
    if method.is_empty() || !method.iter().all(|&c| is_tchar(c)) {
        return Err(Refusal::BadMethod);
    }
    let minor_version = version(ver)?;
    if target.is_empty() || !target.iter().all(|c| c.is_ascii_graphic()) {
        return Err(Refusal::BadTarget("empty or not printable ASCII"));
    }
    let target = String::from_utf8_lossy(target).into_owned();
    let path = if target.starts_with('/') {
        target.clone()
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("HTTP://"))
    {
        let (auth, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "80"));
        let same = auth.eq_ignore_ascii_case(authority)
            || (port == "80" && auth.eq_ignore_ascii_case(host));
        if !same {
            return Err(Refusal::ForeignAuthority(auth.to_owned()));
        }
        if path.is_empty() {
            "/".to_owned()
        } else {
            path.to_owned()
        }
    } else {
        return Err(Refusal::BadTarget("not origin-form or absolute-form http"));
    };
    origin_form(&path)?;
    let headers = fields(it, limits)?;
    let (length, chunked, close) = framing(&headers, minor_version)?;
    let mut hosts = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"));
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(Refusal::DuplicateHost),
        (Some((_, h)), None) => h.clone(),
        (None, _) if minor_version == 1 => return Err(Refusal::MissingHost),
        (None, _) => String::new(),
    };
    if headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("upgrade")
            || (n.eq_ignore_ascii_case("connection")
                && v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
    }) {
        return Err(Refusal::Upgrade);
    }
    let body = match (chunked, length) {
        (true, _) => Body::Chunked,
        (false, Some(0)) | (false, None) => Body::None,
        (false, Some(n)) => Body::Length(n),
    };
    Ok(Some(Request {
        http: HttpRequest {
            method: String::from_utf8_lossy(method).into_owned(),
            path,
            host,
            headers,
        },
        target,
        minor_version,
        body,
        close,
        head_len: end,
    }))
}

/// Parses a response head. `request_method` decides whether a body follows (HEAD has none).
pub fn parse_response(buf: &[u8], request_method: &str, limits: &Limits) -> Parse<Response> {
    let r = (|| -> Result<Option<Response>, Refusal> {
        let Some(end) = head_end(buf, limits)? else {
            return Ok(None);
        };
        let mut it = lines(&buf[..end]);
        let line = it.next().ok_or(Refusal::BadStatusLine)?;
        if line.len() < 12 || line[8] != b' ' {
            return Err(Refusal::BadStatusLine);
        }
        let minor_version = version(&line[..8])?;
        let code = &line[9..12];
        if !code.iter().all(u8::is_ascii_digit) || line.get(12).is_some_and(|c| *c != b' ') {
            return Err(Refusal::BadStatusLine);
        }
        let status: u16 = std::str::from_utf8(code)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(Refusal::BadStatusLine)?;
        let headers = fields(it, limits)?;
        let (length, chunked, close) = framing(&headers, minor_version)?;
        let no_body = request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304;
        let body = match (no_body, chunked, length) {
            (true, _, _) => Body::None,
            (false, true, _) => Body::Chunked,
            (false, false, Some(0)) => Body::None,
            (false, false, Some(n)) => Body::Length(n),
            (false, false, None) => Body::UntilClose,
        };
        Ok(Some(Response {
            status,
            minor_version,
            body,
            close: close || body == Body::UntilClose,
            head_len: end,
        }))
    })();
    match r {
        Ok(Some(r)) => Parse::Done(r),
        Ok(None) => Parse::Partial,
        Err(e) => Parse::Refused(e),
    }
}

/// Follows chunked framing over bytes that are forwarded unchanged, to find where the body ends.
#[derive(Debug, Clone, Default)]
pub struct ChunkedFramer {
    state: ChunkState,
    size: u64,
    line: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data,
    DataCrLf,
    Trailer,
    Done,
}

impl ChunkedFramer {
    /// Consumes bytes; returns how many belong to the body (the rest is the next message), or
    /// an error for malformed framing.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, Refusal> {
        let mut i = 0;
        while i < buf.len() && self.state != ChunkState::Done {
            match self.state {
                ChunkState::Size | ChunkState::Trailer | ChunkState::DataCrLf => {
                    let c = buf[i];
                    i += 1;
                    // After chunk data comes exactly CRLF: anything else is an error at once.
                    if self.state == ChunkState::DataCrLf
                        && c != [b'\r', b'\n'][self.line.len().min(1)]
                    {
                        return Err(Refusal::BadContentLength);
                    }
                    self.line.push(c);
                    if self.line.len() > 4096 {
                        return Err(Refusal::HeadTooLarge);
                    }
                    if c != b'\n' {
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    let Some(line) = line.strip_suffix(b"\r\n") else {
                        return Err(Refusal::BareLf);
                    };
                    match self.state {
                        ChunkState::DataCrLf => {
                            if !line.is_empty() {
                                return Err(Refusal::BadContentLength);
                            }
                            self.state = ChunkState::Size;
                        }
                        ChunkState::Size => {
                            // chunk-size [ ; chunk-ext ]
                            let hex = line.split(|&c| c == b';').next().unwrap_or(b"");
                            if hex.is_empty()
                                || hex.len() > 15
                                || !hex.iter().all(u8::is_ascii_hexdigit)
                            {
                                return Err(Refusal::BadContentLength);
                            }
                            self.size =
                                u64::from_str_radix(std::str::from_utf8(hex).unwrap_or("0"), 16)
                                    .map_err(|_| Refusal::BadContentLength)?;
                            self.state = if self.size == 0 {
                                ChunkState::Trailer
                            } else {
                                ChunkState::Data
                            };
                        }
                        _ => {
                            if line.is_empty() {
                                self.state = ChunkState::Done;
                            }
                        }
                    }
                }
                ChunkState::Data => {
                    let n = (buf.len() - i).min(self.size as usize);
                    i += n;
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = ChunkState::DataCrLf;
                    }
                }
                ChunkState::Done => {}
            }
        }
        Ok(i)
    }

    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: &str = "169.254.169.254:80";

    fn req(text: &str) -> Result<Request, Refusal> {
        match parse_request(text.as_bytes(), AUTH, &Limits::default()) {
            Parse::Done(r) => Ok(r),
            Parse::Refused(e) => Err(e),
            Parse::Partial => panic!("partial: {text:?}"),
        }
    }

    #[test]
    fn a_plain_imds_request() {
        let r = req("GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n")
            .expect("valid");
        assert_eq!(r.http.method, "GET");
        assert_eq!(r.http.path, "/metadata/instance?api-version=2021-02-01");
        assert_eq!(r.http.host, "169.254.169.254");
        assert_eq!(r.body, Body::None);
        assert!(!r.close);
        assert_eq!(
            r.http.headers[1],
            ("Metadata".to_owned(), "true".to_owned())
        );
    }

    #[test]
    fn partial_heads_wait_for_more() {
        for cut in ["GET / HTTP/1.1\r\nHost: a\r\n", "GET / HTTP/1.1\r", "GET"] {
            assert_eq!(
                parse_request(cut.as_bytes(), AUTH, &Limits::default()),
                Parse::Partial,
                "{cut:?}"
            );
        }
    }

    #[test]
    fn framing_is_unambiguous_or_refused() {
        let cases = [
            (
                "Content-Length: 5\r\nTransfer-Encoding: chunked",
                Refusal::ContentLengthAndTransferEncoding,
            ),
            (
                "Content-Length: 5\r\nContent-Length: 5",
                Refusal::DuplicateContentLength,
            ),
            ("Content-Length: 5, 5", Refusal::BadContentLength),
            ("Content-Length: +5", Refusal::BadContentLength),
            ("Content-Length: 0x10", Refusal::BadContentLength),
            (
                "Transfer-Encoding: gzip, chunked",
                Refusal::UnknownTransferCoding("gzip, chunked".into()),
            ),
            (
                "Transfer-Encoding: identity",
                Refusal::UnknownTransferCoding("identity".into()),
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                Refusal::UnknownTransferCoding("chunked".into()),
            ),
            ("Foo: a\r\n bar", Refusal::ObsFold),
            ("Foo : a", Refusal::WhitespaceBeforeColon),
            ("Fo o: a", Refusal::BadHeaderName),
            ("Foo: a\x01b", Refusal::BadHeaderValue),
            ("Host: b", Refusal::DuplicateHost),
            ("Upgrade: h2c\r\nConnection: Upgrade", Refusal::Upgrade),
        ];
        for (extra, want) in cases {
            let text = format!("POST /metadata HTTP/1.1\r\nHost: a\r\n{extra}\r\n\r\n");
            assert_eq!(req(&text), Err(want), "{extra:?}");
        }
        let r = req("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .expect("chunked");
        assert_eq!(r.body, Body::Chunked);
        let r = req("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n").expect("length");
        assert_eq!(r.body, Body::Length(12));
    }

    #[test]
    fn line_endings_and_bytes() {
        assert_eq!(req("GET / HTTP/1.1\nHost: a\r\n\r\n"), Err(Refusal::BareLf));
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"),
            Err(Refusal::BareCr)
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\0\r\n\r\n"),
            Err(Refusal::Nul)
        );
        assert_eq!(
            req("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(Refusal::BadRequestLine)
        );
        assert_eq!(
            req("GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            Err(Refusal::UnsupportedVersion)
        );
        assert_eq!(req("GET / HTTP/1.1\r\n\r\n"), Err(Refusal::MissingHost));
        assert_eq!(
            req("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(Refusal::BadMethod)
        );
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(req(&long), Err(Refusal::RequestLineTooLong));
        let many: String = (0..101).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            req(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            Err(Refusal::TooManyHeaders)
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(40_000)
        );
        assert_eq!(req(&big), Err(Refusal::HeadTooLarge));
    }

    #[test]
    fn targets_that_could_be_read_two_ways_are_refused() {
        let refused = [
            "/metadata/scheduledevents%3Fapi-version=2019-08-01",
            "/metadata%2Fidentity/oauth2/token",
            "/metadata/%2e%2e/identity",
            "/metadata/%252e",
            "/metadata/../identity/oauth2/token",
            "/metadata/./instance",
            "/metadata//instance",
            "/metadata\\instance",
            "/metadata/instance#frag",
            "/metadata/%zz",
            "/metadata/%4",
            "*",
            "metadata",
            "/metadata/%00",
        ];
        for t in refused {
            let text = format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n");
            assert!(
                matches!(req(&text), Err(Refusal::BadTarget(_))),
                "{t}: {:?}",
                req(&text)
            );
        }
        // Encoded characters in the query are data (resource URIs, ARM IDs).
        let ok = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fapi.kusto.windows.net%2F";
        assert!(req(&format!("GET {ok} HTTP/1.1\r\nHost: a\r\n\r\n")).is_ok());
        assert!(req("GET /metadata/a%20b HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
    }

    #[test]
    fn absolute_form_only_for_the_original_destination() {
        let r = req("GET http://169.254.169.254/metadata/instance HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
            .expect("same host");
        assert_eq!(r.http.path, "/metadata/instance");
        assert!(req("GET http://169.254.169.254:80/m HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
        assert_eq!(
            req("GET http://evil.example/m HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"),
            Err(Refusal::ForeignAuthority("evil.example".into()))
        );
        assert_eq!(
            req("GET http://169.254.169.254:8080/m HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(Refusal::ForeignAuthority("169.254.169.254:8080".into()))
        );
        assert!(matches!(
            req("GET https://169.254.169.254/m HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(Refusal::BadTarget(_))
        ));
    }

    #[test]
    fn responses() {
        let l = Limits::default();
        let Parse::Done(r) = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
            "GET",
            &l,
        ) else {
            panic!("response")
        };
        assert_eq!((r.status, r.body, r.head_len), (200, Body::Length(3), 38));
        let Parse::Done(r) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "HEAD", &l)
        else {
            panic!("response")
        };
        assert_eq!(r.body, Body::None);
        let Parse::Done(r) = parse_response(b"HTTP/1.0 200 OK\r\n\r\n", "GET", &l) else {
            panic!("response")
        };
        assert_eq!((r.body, r.close), (Body::UntilClose, true));
        assert_eq!(
            parse_response(b"HTTP/1.1 2000 OK\r\n\r\n", "GET", &l),
            Parse::Refused(Refusal::BadStatusLine)
        );
    }

    #[test]
    fn chunked_framing_finds_the_end() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nGET /next";
        let mut f = ChunkedFramer::default();
        let n = f.feed(body).expect("valid");
        assert!(f.done());
        assert_eq!(&body[n..], b"GET /next");
        // Byte by byte gives the same answer.
        let mut f = ChunkedFramer::default();
        let mut total = 0;
        for b in body.chunks(1) {
            if f.done() {
                break;
            }
            total += f.feed(b).expect("valid");
        }
        assert_eq!(total, n);
        for bad in [&b"x\r\n"[..], b"4\r\nWikiXX", b"4\nWiki"] {
            assert!(ChunkedFramer::default().feed(bad).is_err(), "{bad:?}");
        }
    }
}
