//! The eBPF datapath: C programs (`bpf/datapath.c`, with its parser in `bpf/parse.h`, built by clang from build.rs) on each pod's
//! host-side veth, loaded with aya 0.14, that enforce the tables the policy engine resolves.
//!
//! - `abi`: the maps' keys and values and the event record, mirrored from `bpf/datapath.h`.
//! - `tables`: the engine's resolved policy as table rows (pure).
//! - `flows`: datapath events as Hubble flows (pure).
//! - `loader` (Linux only): load, pin under `<bpf-root>/imdsguard/v<layout>/`, attach first in
//!   the TCX chain, attach the connect()/sendmsg() hooks at the host's cgroup v2 root (`bpf/hooks.h`:
//!   the process behind sockets to metadata addresses, and hostNetwork pods judged at the
//!   syscall), write the tables, read counters and events, and read the pinned state without an
//!   agent (`inspect`).
//! - `hostnet` (Linux only): the hostNetwork pods' connections the hooks sent to the L7 proxy,
//!   by client port, for the proxy to take when it accepts.
//! - `DenyResponse`: denials dropped silently, or answered (`bpf/reject.h`: ECONNREFUSED at the
//!   hooks, a TCP RST or ICMP unreachable into the pod at TC).
//! - `sync` (Linux only): keeps the tables equal to the engine's state, through `MapWriter`: the
//!   table rows and the protocol that switches an endpoint's policy atomically, implemented by
//!   `Datapath` and, in memory for tests without root, by `sync::fake::FakeMaps`.
//!
//! A pod is known by its interface (the `ifaces` map), never by the source address it writes;
//! what cannot be judged (spoofed sources, unknown ethertypes and VLAN tags, fragments without
//! their ports, IPv6 extension header chains it will not walk) is dropped with Cilium's reasons.
//! docs/security.md has the threat model.
//!
//! Limits: TCX needs Linux 6.6 or later; IPv6 chains of more than six extension headers are
//! dropped; fragments that arrive before their first fragment are dropped; the proxy redirect is
//! for TCP on pod egress, and for a hostNetwork pod's TCP connect() (rewritten at the hook to the
//! proxy on loopback); a hostNetwork pod's UDP under HTTP rules is refused (DROP_PROXY_PROTO).
//! `reject` answers neither fragments, IPv4 packets with options nor IPv6 packets with extension
//! headers: those are dropped as in drop mode.

pub mod abi;
mod deny_response;
pub mod flows;
#[cfg(target_os = "linux")]
pub mod hostnet;
#[cfg(target_os = "linux")]
pub mod loader;
#[cfg(target_os = "linux")]
pub mod sync;
pub mod tables;

pub use deny_response::{DenyResponse, ParseDenyResponseError};
