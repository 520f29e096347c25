//! The agent side of Hubble: an in-memory ring buffer of flows and the gRPC services the real
//! `hubble` CLI, Hubble Relay and Hubble UI talk to (observer.Observer, peer.Peer and
//! grpc.health.v1 with `hubble.server.Observer` SERVING), on TCP and on a unix socket.
//!
//! Limits: GetAgentEvents and GetDebugEvents stream nothing yet; the field mask is applied to
//! top-level fields and to `source`/`destination` fields (other nested paths keep their whole
//! top-level field, a superset Hubble clients accept).

pub mod exporter;
pub mod metrics;
pub mod ring;
pub mod server;
