//! GetFlows follow latency, from ingest to a gRPC client on loopback (figures in BENCHMARKS.md):
//!
//!   cargo run --release -p imdsguard-hubble-server --example follow_latency

use imdsguard_hubble_proto::flow::Flow;
use imdsguard_hubble_proto::observer::observer_client::ObserverClient;
use imdsguard_hubble_proto::observer::{GetFlowsRequest, get_flows_response::ResponseTypes};
use imdsguard_hubble_server::server::{Hub, router};
use std::time::{Duration, Instant};
use tokio_stream::wrappers::TcpListenerStream;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let hub = Hub::new(4095, "bench", addr.to_string());
    let r = router(hub.clone()).await;
    tokio::spawn(async move {
        r.serve_with_incoming(TcpListenerStream::new(listener))
            .await
    });
    let mut client = ObserverClient::connect(format!("http://{addr}")).await?;
    let mut stream = client
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let start = Instant::now();
    let total = 20_000u64;
    let producer = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for _ in 0..total {
                // The push time travels in the flow's uuid.
                let now = start.elapsed().as_nanos().to_string();
                hub.ingest(Flow {
                    uuid: now,
                    ..Default::default()
                });
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    let mut latencies = Vec::with_capacity(total as usize);
    while (latencies.len() as u64) < total {
        match stream.message().await? {
            Some(resp) => {
                if let Some(ResponseTypes::Flow(f)) = resp.response_types {
                    let pushed: u128 = f.uuid.parse()?;
                    latencies.push((start.elapsed().as_nanos() - pushed) as f64 / 1e6);
                }
            }
            None => break,
        }
    }
    producer.await?;
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    println!(
        "{} flows: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
        latencies.last().copied().unwrap_or(0.0)
    );
    Ok(())
}
