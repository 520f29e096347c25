//! Compiles the C programs in `bpf/` with clang (stable Rust cannot build BPF objects).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let root = PathBuf::from(env("CARGO_MANIFEST_DIR")).join("../../bpf");
    for f in ["datapath.c", "datapath.h", "parse.h", "reject.h", "hooks.h"] {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    if env("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    let out = PathBuf::from(env("OUT_DIR")).join("datapath.o");
    // Debian keeps <asm/types.h> under the multiarch directory.
    let multiarch = match env("CARGO_CFG_TARGET_ARCH").as_str() {
        "aarch64" => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    let status = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .arg("-c")
        .arg(root.join("datapath.c"))
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang failed to compile bpf/datapath.c ({s})"),
        Err(e) => panic!(
            "cannot run clang ({e}): install the BPF toolchain with scripts/prereqs.sh \
             (apt-get install clang llvm libbpf-dev)"
        ),
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}
