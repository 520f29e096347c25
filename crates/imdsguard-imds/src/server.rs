//! Serves the emulator over HTTP/1.1 and logs every request it receives.

use crate::emulator::{Emulator, Options, Request};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::TcpListener;

/// Where request log lines go: `<client> <METHOD> <target> <status>`.
pub type Log = Arc<dyn Fn(String) + Send + Sync>;

struct Shared {
    emulator: Mutex<Emulator>,
    log: Log,
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let request = Request {
        method: parts.method.as_str().to_owned(),
        target,
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let resp = match shared.emulator.lock() {
        Ok(mut e) => e.handle(&request, Instant::now()),
        Err(_) => return status_only(StatusCode::INTERNAL_SERVER_ERROR),
    };
    (shared.log)(format!(
        "{peer} {} {} {}",
        request.method, request.target, resp.status
    ));
    let mut out = Response::new(Body::from(resp.body));
    *out.status_mut() =
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static(resp.content_type),
    );
    for (name, value) in resp.headers {
        // from_bytes takes any case (from_static panics on upper case).
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            out.headers_mut().insert(n, v);
        }
    }
    out
}

fn status_only(s: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = s;
    r
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("opening {}", path.display())]
    LogFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listening on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("serving")]
    Serve(#[source] std::io::Error),
}

/// Where the emulator listens unless told otherwise: the metadata address, port 80. Only ever
/// inside a namespace of its own (the lab's), where that address is not the cloud's.
pub fn default_listen() -> String {
    format!("{}:80", imdsguard_metadata::IMDS_V4)
}

/// A log that prints each line to standard error as `request: <line>` and, given a file, appends
/// it there as well (the lab reads that file to see what reached its IMDS).
pub fn stderr_and_file_log(file: Option<&Path>) -> Result<Log, ServeError> {
    let file = match file {
        Some(p) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|source| ServeError::LogFile {
                    path: p.to_owned(),
                    source,
                })?,
        )),
        None => None,
    };
    Ok(Arc::new(move |line: String| {
        eprintln!("request: {line}");
        if let Some(f) = &file
            && let Ok(mut f) = f.lock()
        {
            let _ = writeln!(f, "{line}");
        }
    }))
}

/// Listens on `listen`, says so on standard error (`imds-emulator: serving <flavour> on <addr>`,
/// the line the lab waits for), and serves until `until` completes or the listener fails.
pub async fn run(
    listen: &str,
    opts: Options,
    log: Log,
    until: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: listen.to_owned(),
            source,
        })?;
    let local = listener.local_addr().map_err(ServeError::Serve)?;
    eprintln!("imds-emulator: serving {} on {local}", opts.flavor.name());
    tokio::select! {
        r = serve(listener, opts, log) => r.map_err(ServeError::Serve),
        _ = until => Ok(()),
    }
}

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener, opts: Options, log: Log) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        emulator: Mutex::new(Emulator::new(opts)),
        log,
    });
    let app = Router::new().fallback(handle).with_state(shared);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
