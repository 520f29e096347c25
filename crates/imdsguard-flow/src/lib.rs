//! Hubble-compatible flows: the names Hubble prints for numbers, the printers of `hubble observe`
//! (compact, dict, table and JSON, byte for byte), and flow filters with Hubble's semantics;
//! `observe` itself apart from its transport, with its command-line flags. imdsguard's extension
//! (the container and process of a flow, [`extensions`]) is printed only when asked.
//!
//! Logic over the generated `flow` and `observer` messages. The only I/O is reading recorded
//! flow files ([`jsonline::FlowReader`]) and writing to the writers `observe` is given; no
//! network (the gRPC client is in `imdsguard-hubble-server`). What Hubble does, and so what
//! these must do, is described in `docs/hubble.md`.

pub mod extensions;
pub mod filter;
pub mod filterflags;
pub mod jsonline;
pub mod names;
pub mod observe;
pub mod printer;
pub mod timespec;

pub use imdsguard_hubble_proto::{flow, observer};
