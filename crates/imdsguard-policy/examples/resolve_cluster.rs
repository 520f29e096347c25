//! Builds and resolves the issue's cluster workload once and prints wall time, table sizes and
//! peak memory (Linux: VmHWM). Used for the memory figure in BENCHMARKS.md:
//!
//!   cargo run --release -p imdsguard-policy --example resolve_cluster

// A benchmark: a panic on bad fixed input is the failure it should report.
#![allow(clippy::unwrap_used)]

#[path = "../benches/workloads.rs"]
mod workloads;

use std::time::Instant;
use workloads::*;

fn main() {
    // `resolve_cluster cidr-loop`: resolve Cilium's CIDR workload repeatedly, for profilers.
    if std::env::args().nth(1).as_deref() == Some("cidr-loop") {
        let base = cilium_repository(&cilium_cidr_rules(1000, |_| "k8s:foo: \"\"".into()));
        let t = Instant::now();
        for _ in 0..200 {
            let mut r = base.clone();
            r.invalidate_all();
            r.resolve();
        }
        println!("200 resolves (with clones): {:?}", t.elapsed());
        return;
    }
    let w = Cluster::ISSUE;
    // `resolve_cluster ccnp-loop`: change one cluster-wide policy repeatedly, for profilers.
    if std::env::args().nth(1).as_deref() == Some("ccnp-loop") {
        let mut repo = w.repository();
        let t = Instant::now();
        for n in 0..100 {
            let path = if n % 2 == 0 {
                "/metadata/x.*"
            } else {
                "/metadata/.*"
            };
            let d = decode(&w.policy_text(19, 8080).replace("/metadata/.*", path));
            repo.upsert_policy(d.policies.into_iter().next().unwrap());
            repo.resolve();
        }
        println!("100 CCNP changes: {:?}", t.elapsed());
        return;
    }
    let t = Instant::now();
    let mut repo = w.repository();
    let build = t.elapsed();
    repo.invalidate_all();
    let t = Instant::now();
    let stats = repo.resolve();
    let resolve = t.elapsed();
    println!("load+first resolve: {build:?}");
    println!(
        "full re-resolve: {resolve:?} ({} policies computed, {} table entries)",
        stats.identities, stats.entries
    );
    println!(
        "identities: {}, prefixes in ipcache: {}",
        repo.identities().len(),
        repo.ipcache().entries().len()
    );
    let r = cilium_repository(&cilium_cidr_rules(1000, |_| "k8s:foo: \"\"".into()));
    let id = r.endpoint_identity("default", "subject").unwrap();
    println!(
        "Cilium CIDR workload: egress table entries: {}",
        r.policy(id).unwrap().egress.map.len()
    );
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status
            .lines()
            .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        {
            println!("{line}");
        }
    }
}
