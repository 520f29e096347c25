//! What the UI costs per flow (figures in BENCHMARKS.md):
//!
//!   cargo bench -p imdsguard-ui --bench aggregate
//!
//! The flows are the seed's twelve told by 50 workloads in 5 namespaces, as in the browser load
//! test (crates/imdsguard/tests/ui.rs).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use imdsguard_hubble_proto::flow::{Flow, Workload};
use imdsguard_hubble_proto::observer::GetFlowsResponse;
use imdsguard_hubble_proto::observer::get_flows_response::ResponseTypes;
use imdsguard_ui::imds::ImdsReport;
use imdsguard_ui::peer::Sides;
use imdsguard_ui::servicemap::ServiceMap;
use imdsguard_ui::table::{FlowRow, FlowSearch};
use std::hint::black_box;
use std::time::Instant;

const FLOWS: usize = 12_000;

fn flows() -> Vec<Flow> {
    let seed: Vec<Flow> = include_str!("../../../tests/flows/seed.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            match serde_json::from_str::<GetFlowsResponse>(l)
                .ok()?
                .response_types
            {
                Some(ResponseTypes::Flow(f)) => Some(f),
                _ => None,
            }
        })
        .collect();
    (0..FLOWS)
        .map(|i| {
            let mut f = seed[i % seed.len()].clone();
            let k = (i / seed.len()) % 25;
            if let Some(src) = f.source.as_mut().filter(|s| !s.pod_name.is_empty()) {
                let name = src
                    .workloads
                    .first()
                    .map_or("app".to_owned(), |w| w.name.clone());
                src.namespace = format!("team-{}", k % 5);
                src.pod_name = format!("{name}-{k}-abcde");
                src.workloads = vec![Workload {
                    name: format!("{name}-{k}"),
                    kind: "Deployment".into(),
                }];
            }
            f
        })
        .collect()
}

fn aggregate(c: &mut Criterion) {
    let flows = flows();
    let mut g = c.benchmark_group("ui");
    g.throughput(Throughput::Elements(flows.len() as u64));
    g.bench_function("map and IMDS view: observe (12,000 flows)", |b| {
        let mut map = ServiceMap::default();
        let mut imds = ImdsReport::default();
        b.iter(|| {
            let now = Instant::now();
            for f in &flows {
                let sides = Sides::of(f);
                map.observe(f, &sides, now);
                imds.observe(f, &sides, now);
            }
        })
    });
    let search = FlowSearch::parse([("namespace", "team-1"), ("q", "webapp")]).expect("search");
    g.bench_function("stream: search (12,000 flows)", |b| {
        b.iter(|| flows.iter().filter(|f| search.matches(f)).count())
    });
    g.bench_function("stream: row and JSON entry (12,000 flows)", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for f in &flows {
                let row = FlowRow::of(f);
                bytes += serde_json::to_vec(&(&row, f)).map_or(0, |v| v.len());
            }
            black_box(bytes)
        })
    });
    g.finish();
}

criterion_group!(benches, aggregate);
criterion_main!(benches);
