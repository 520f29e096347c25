//! Compiles `proto/` without protoc: protox parses the files, tonic-prost-build generates the
//! messages and services, pbjson-build generates protojson-compatible serde code (proto field names,
//! enum names, 64-bit integers as strings), as Hubble's `-o json` prints them.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "flow/flow.proto",
        "observer/observer.proto",
        "peer/peer.proto",
        "relay/relay.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("hubble_descriptor.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .compile_well_known_types(true)
        // Our own Timestamp: Hubble's JSON prints `…Z` with 0, 3, 6 or 9 fractional digits.
        .extern_path(".google.protobuf.Timestamp", "crate::wkt::Timestamp")
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;
    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        // Recorded flows from newer Hubble versions carry fields we do not know: skip them.
        .ignore_unknown_fields()
        .build(&[".flow", ".observer", ".peer", ".relay"])?;
    Ok(())
}
