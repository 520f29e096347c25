//! How many flows per second one Hubble server streams to a following client (GetFlows with
//! `follow`, as Relay reads each agent), over TLS 1.3 and in plaintext, in the same run
//! (figures in BENCHMARKS.md, "Hubble over TLS"):
//!
//!   cargo run --release -p imdsguard-hubble-server --example tls_follow [FLOWS] [ROUNDS]
//!
//! One server process side (the ring, the gRPC services, a TLS listener built as the agent
//! builds it, with a certificate made here by rcgen) and one follower (tonic with rustls, as
//! `imdsguard observe` connects), on loopback. The flows are the seed's recorded flows. The
//! producer never gets more than half a ring ahead of the follower, so no flow is lost and the
//! figure is the rate the follower is served at, not the rate the ring is written at. Rounds
//! alternate plaintext and TLS; the median of each is printed, with the CPU time the process
//! (server and follower together) spent per flow, which a busy machine disturbs less than the
//! rate.

use imdsguard_flow::jsonline::FlowReader;
use imdsguard_hubble_proto::flow::Flow;
use imdsguard_hubble_proto::observer::observer_client::ObserverClient;
use imdsguard_hubble_proto::observer::{GetFlowsRequest, get_flows_response::ResponseTypes};
use imdsguard_hubble_proto::wkt::Timestamp;
use imdsguard_hubble_server::client::{ClientOptions, ClientTls};
use imdsguard_hubble_server::server::{Hub, router};
use imdsguard_hubble_server::tls::{ServerTls, ServerTlsFiles};
use prost::Message;
use rcgen::{CertificateParams, KeyPair};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_stream::wrappers::TcpListenerStream;

const CAPACITY: usize = 65_535;
/// How far the producer may run ahead of the follower: half the ring, so nothing is lost.
const WINDOW: u64 = (CAPACITY / 2) as u64;

fn seed_flows() -> Result<Vec<Flow>, Box<dyn std::error::Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/flows/seed.jsonl");
    let flows = FlowReader::file(&path)?
        .read_all(|_, _| {})?
        .into_iter()
        .filter_map(|r| match r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(f),
            _ => None,
        })
        .collect::<Vec<_>>();
    if flows.is_empty() {
        return Err("no flows in tests/flows/seed.jsonl".into());
    }
    Ok(flows)
}

/// One server listener and its client: plaintext, or TLS with the certificate in `dir`.
async fn serve(
    tls: Option<&Path>,
) -> Result<(Arc<Hub>, ClientOptions), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let hub = Hub::new(CAPACITY, "bench", addr.clone());
    let r = router(hub.clone()).await;
    let client = match tls {
        None => {
            tokio::spawn(r.serve_with_incoming(TcpListenerStream::new(listener)));
            ClientOptions::new(addr)
        }
        Some(dir) => {
            let files = ServerTlsFiles {
                cert_file: dir.join("server.crt"),
                key_file: dir.join("server.key"),
                client_ca_files: Vec::new(),
            };
            let incoming = ServerTls::load(files)?.incoming(listener);
            tokio::spawn(r.serve_with_incoming(incoming));
            ClientOptions::new(addr).with_tls(ClientTls {
                ca_cert_files: vec![dir.join("server.crt")],
                server_name: Some("bench.default.hubble-grpc.cilium.io".into()),
                ..Default::default()
            })
        }
    };
    Ok((hub, client))
}

/// Streams `total` flows to one follower; returns flows per second and bytes of protobuf.
async fn round(
    flows: &[Flow],
    total: u64,
    tls: Option<&Path>,
) -> Result<(f64, u64), Box<dyn std::error::Error>> {
    let (hub, client) = serve(tls).await?;
    let mut stream = ObserverClient::new(client.connect().await?)
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let received = Arc::new(AtomicU64::new(0));
    let follower = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut bytes = 0u64;
            let mut lost = 0u64;
            while received.load(Ordering::Relaxed) < total {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        bytes += resp.encoded_len() as u64;
                        if let Some(ResponseTypes::LostEvents(l)) = &resp.response_types {
                            lost += l.num_events_lost;
                        }
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            (bytes, lost)
        })
    };
    let start = Instant::now();
    for i in 0..total {
        while i.saturating_sub(received.load(Ordering::Relaxed)) >= WINDOW {
            tokio::task::yield_now().await;
        }
        let mut f = flows[i as usize % flows.len()].clone();
        f.time = Some(Timestamp::now());
        hub.ingest(f);
    }
    let (bytes, lost) = tokio::time::timeout(Duration::from_secs(120), follower).await??;
    let secs = start.elapsed().as_secs_f64();
    if lost > 0 {
        return Err(format!("the follower lost {lost} flows").into());
    }
    Ok((total as f64 / secs, bytes))
}

/// CPU time of this process so far (user + system), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(5), |a| a.parse())?;
    let flows = seed_flows()?;
    let dir = std::env::temp_dir().join(format!("imdsguard-tls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["bench.default.hubble-grpc.cilium.io".to_owned()])?
        .self_signed(&key)?;
    std::fs::write(dir.join("server.crt"), cert.pem())?;
    std::fs::write(dir.join("server.key"), key.serialize_pem())?;

    let (mut plain, mut tls) = (Vec::new(), Vec::new());
    let (mut plain_cpu, mut tls_cpu) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..rounds {
        let cpu = cpu_seconds();
        let (rate, b) = round(&flows, total, None).await?;
        plain_cpu.push((cpu_seconds() - cpu) / total as f64 * 1e6);
        plain.push(rate);
        bytes = b;
        let cpu = cpu_seconds();
        tls.push(round(&flows, total, Some(&dir)).await?.0);
        tls_cpu.push((cpu_seconds() - cpu) / total as f64 * 1e6);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (p, t) = (median(plain.clone()), median(tls.clone()));
    let per_flow = bytes as f64 / total as f64;
    println!(
        "{total} flows per round ({per_flow:.0} bytes of protobuf each), {rounds} rounds of each, median:"
    );
    let (pc, tc) = (median(plain_cpu), median(tls_cpu));
    println!(
        "  plaintext: {p:>9.0} flows/s ({:.0} MB/s), {pc:.2} µs of CPU per flow",
        p * per_flow / 1e6
    );
    println!(
        "  TLS 1.3:   {t:>9.0} flows/s ({:.0} MB/s), {tc:.2} µs of CPU per flow; {:.1}% of plaintext's rate, {:+.1}% CPU",
        t * per_flow / 1e6,
        t / p * 100.0,
        (tc / pc - 1.0) * 100.0
    );
    println!("  rounds: plaintext {plain:.0?}, TLS {tls:.0?}");
    Ok(())
}
