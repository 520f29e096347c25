//! The L7 HTTP proxy. The datapath hands it connections whose policy has HTTP rules
//! (`bpf_sk_assign` to an IP_TRANSPARENT listener); it judges each request against the rules of
//! the client's identity for that destination and port, answers as Cilium's Envoy does (403
//! `Access denied`), and forwards allowed requests faithfully to the original destination.
//!
//! - `http1`: a strict request/response head parser that refuses anything the upstream could read
//!   differently (pure).
//! - `judge`: the HTTP decision for one request, with audit-mode policies (pure).
//! - `flows`: the access log as Hubble `http-request` / `http-response` flows (pure).
//! - `server` (Linux): the transparent listener, per-connection judging and forwarding, and the
//!   timeouts.
//! - `slots` (Linux): connection limits per identity and, inside them, per pod.
//!
//! Limits: HTTP/1.x only (no HTTP/2, no upgrades); one upstream connection per client connection.

pub mod flows;
pub mod http1;
pub mod judge;
#[cfg(target_os = "linux")]
pub mod routing;
#[cfg(target_os = "linux")]
pub mod server;
#[cfg(target_os = "linux")]
mod slots;
