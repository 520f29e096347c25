//! Resolution and lookup benchmarks (figures in BENCHMARKS.md).
//!
//!   cargo bench -p imdsguard-policy --bench resolve

// A benchmark: a panic on bad fixed input is the failure it should report.
#![allow(clippy::unwrap_used)]

#[path = "workloads.rs"]
mod workloads;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use imdsguard_policy::{FlowQuery, Identity, Peer, Protocol};
use std::hint::black_box;
use std::time::Duration;
use workloads::*;

fn cluster(c: &mut Criterion) {
    let w = Cluster::ISSUE;
    let mut g = c.benchmark_group("cluster");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let base = w.repository();
    g.bench_function(
        "resolve-all: 1000 policies, 10000 endpoints, 500 ns, 2000 prefixes",
        |b| {
            b.iter_batched_ref(
                || {
                    let mut r = base.clone();
                    r.invalidate_all();
                    r
                },
                |r| black_box(r.resolve()),
                BatchSize::PerIteration,
            )
        },
    );
    let mut port = 9000u16;
    g.sample_size(50).measurement_time(Duration::from_secs(10));
    g.bench_function("re-resolve after one CNP changes", |b| {
        let mut r = base.clone();
        let i = 12;
        b.iter(|| {
            port = port.wrapping_add(1).max(1);
            let d = decode(&w.policy_text(i, port));
            r.upsert_policy(d.policies.into_iter().next().unwrap());
            black_box(r.resolve())
        })
    });
    g.bench_function("re-resolve after one CCNP changes", |b| {
        let mut r = base.clone();
        let i = 19;
        let mut flip = false;
        b.iter(|| {
            flip = !flip;
            let text = w.policy_text(i, 8080).replace(
                "/metadata/.*",
                if flip {
                    "/metadata/x.*"
                } else {
                    "/metadata/.*"
                },
            );
            let d = decode(&text);
            r.upsert_policy(d.policies.into_iter().next().unwrap());
            black_box(r.resolve())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("lookup");
    let ep = w.endpoint(12);
    let id = base.endpoint_identity(&ep.namespace, &ep.name).unwrap();
    let policy = base.policy(id).unwrap().clone();
    let peer = base.endpoint_identity("ns-12", "pod-512").unwrap();
    g.bench_function("mapstate lookup (one direction)", |b| {
        b.iter(|| {
            black_box(
                policy
                    .ingress
                    .map
                    .lookup(black_box(peer), Protocol::Tcp, black_box(8080)),
            )
        })
    });
    g.bench_function("mapstate lookup miss (one direction)", |b| {
        b.iter(|| {
            black_box(policy.ingress.map.lookup(
                black_box(Identity(7)),
                Protocol::Udp,
                black_box(53),
            ))
        })
    });
    let q = FlowQuery {
        from: Peer::Endpoint("ns-12/pod-512".into()),
        to: Peer::Ip("10.3.0.5".parse().unwrap()),
        protocol: Protocol::Tcp,
        port: 80,
        http: None,
    };
    g.bench_function(
        "evaluate flow (endpoint lookup, both directions, verdict)",
        |b| b.iter(|| black_box(base.evaluate(&q))),
    );
    g.finish();
}

fn cilium(c: &mut Criterion) {
    let mut g = c.benchmark_group("cilium");
    g.sample_size(30);
    let cases = [
        (
            "L3 ingress (Cilium 2.5 ms)",
            cilium_l3("ingress", "fromEndpoints"),
        ),
        (
            "L3 egress (Cilium 2.4 ms)",
            cilium_l3("egress", "toEndpoints"),
        ),
        (
            "CIDR resolve+table (Cilium 13.6+16.0 ms)",
            cilium_cidr_rules(1000, |_| "k8s:foo: \"\"".into()),
        ),
        (
            "no match, 20000 rules (Cilium 2.2 ms)",
            cilium_cidr_rules(20_000, |i| format!("k8s:value: \"{i}\"")),
        ),
    ];
    for (name, text) in cases {
        let base = cilium_repository(&text);
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || {
                    let mut r = base.clone();
                    r.invalidate_all();
                    r
                },
                |r| black_box(r.resolve()),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, cluster, cilium);
criterion_main!(benches);
