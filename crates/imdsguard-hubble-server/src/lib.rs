//! The agent side of Hubble: an in-memory ring buffer of flows and the gRPC services the real
//! `hubble` CLI, Hubble Relay and Hubble UI talk to (observer.Observer, peer.Peer and
//! grpc.health.v1 with `hubble.server.Observer` SERVING), on TCP and on a unix socket.
//!
//! Limits: GetAgentEvents and GetDebugEvents stream nothing yet; the field mask keeps whole
//! top-level fields (a superset of what was asked, which Hubble clients accept).

pub mod exporter;
pub mod metrics;
pub mod ring;
pub mod server;
