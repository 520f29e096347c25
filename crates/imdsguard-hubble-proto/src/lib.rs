//! Hubble's API, generated from `proto/` (our own files with Hubble's packages, messages, field
//! numbers and enum values), so the real `hubble` CLI, Hubble Relay and Hubble UI can talk to us.
//! Every message also has serde support with protojson's conventions (via pbjson).

pub mod process;
pub mod wkt;

#[allow(clippy::all, clippy::pedantic, deprecated, missing_docs, rustdoc::all)]
pub mod flow {
    include!(concat!(env!("OUT_DIR"), "/flow.rs"));
    include!(concat!(env!("OUT_DIR"), "/flow.serde.rs"));
}

#[allow(clippy::all, clippy::pedantic, deprecated, missing_docs, rustdoc::all)]
pub mod observer {
    include!(concat!(env!("OUT_DIR"), "/observer.rs"));
    include!(concat!(env!("OUT_DIR"), "/observer.serde.rs"));
}

#[allow(clippy::all, clippy::pedantic, deprecated, missing_docs, rustdoc::all)]
pub mod peer {
    include!(concat!(env!("OUT_DIR"), "/peer.rs"));
    include!(concat!(env!("OUT_DIR"), "/peer.serde.rs"));
}

#[allow(clippy::all, clippy::pedantic, deprecated, missing_docs, rustdoc::all)]
pub mod relay {
    include!(concat!(env!("OUT_DIR"), "/relay.rs"));
    include!(concat!(env!("OUT_DIR"), "/relay.serde.rs"));
}
