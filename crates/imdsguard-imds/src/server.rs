//! Serves the emulator over HTTP/1.1 and logs every request it receives.

use crate::emulator::{Emulator, Options, Request};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use std::net::SocketAddr;
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
