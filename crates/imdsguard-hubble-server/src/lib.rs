//! The agent side of Hubble: an in-memory ring buffer of flows and the gRPC services the real
//! `hubble` CLI, Hubble Relay and Hubble UI talk to (observer.Observer, peer.Peer and
//! grpc.health.v1 with `hubble.server.Observer` SERVING), on TCP and on a unix socket.
//!
//! [`client`] is the other end: what `imdsguard observe --server` uses to reach any Hubble server.
//! [`tls`] is the server's TLS, its certificates reloaded as they rotate.
//!
//! Limits: GetAgentEvents and GetDebugEvents stream nothing yet; the field mask is applied to
//! top-level fields and to `source`/`destination` fields (other nested paths keep their whole
//! top-level field, a superset Hubble clients accept).

pub mod client;
pub mod exporter;
pub mod metrics;
pub mod report;
pub mod ring;
pub mod server;
pub mod tls;
