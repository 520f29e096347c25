//! The eBPF datapath: C programs (`bpf/datapath.c`, built by clang from build.rs) on each pod's
//! host-side veth, loaded with aya 0.14, that enforce the tables the policy engine resolves.
//!
//! - `abi`: the maps' keys and values and the event record, mirrored from `bpf/datapath.h`.
//! - `tables`: the engine's resolved policy as table rows (pure).
//! - `flows`: datapath events as Hubble flows (pure).
//! - `loader` (Linux only): load, pin under `<bpf-root>/imdsguard/v<layout>/`, attach first in
//!   the TCX chain, write the tables atomically per endpoint, read counters and events.
//!
//! Limits: TCX needs Linux 6.6 or later; IPv6 extension headers are not walked (the first next
//! header is taken as the L4 protocol); the proxy redirect is for TCP on pod egress.

pub mod abi;
pub mod flows;
#[cfg(target_os = "linux")]
pub mod loader;
#[cfg(target_os = "linux")]
pub mod sync;
pub mod tables;
