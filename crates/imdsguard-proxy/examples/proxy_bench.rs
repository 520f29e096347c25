//! Proxy benchmark (needs root, wrk and nginx: `apt-get install wrk nginx-light`).
//!
//! A client pod runs wrk against an nginx upstream pod, measured in one run:
//! - directly (no proxy);
//! - through nginx as a plain reverse proxy in its own pod (keep-alive to the upstream);
//! - through imdsguard: the datapath redirects the client's connections to this process's
//!   transparent proxy, which judges every request against an HTTP rule and forwards it.
//!
//! Then the proxy's memory with 1,000 open client connections.
//!
//! `cargo run --release -p imdsguard-proxy --example proxy_bench -- [SECONDS] [ROUNDS]`

use imdsguard_datapath::loader::{Datapath, Options, unpin_all};
use imdsguard_datapath::sync::{SyncOptions, TableSync};
use imdsguard_hubble_proto::flow::{Endpoint, Flow};
use imdsguard_manifest::Source;
use imdsguard_netns::{Pod, Process, run, unique_name};
use imdsguard_policy::{DecodeOptions, EndpointSpec, EngineOptions, Repository, decode_source};
use imdsguard_proxy::server::{
    Authority, Client, FlowSink, ProxyConfig, serve, transparent_listener,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

struct Cleanup {
    bpf: PathBuf,
    dir: PathBuf,
    routing_added: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = unpin_all(&self.bpf);
        let _ = run("umount", &[&self.bpf.to_string_lossy()]);
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.routing_added {
            imdsguard_proxy::routing::uninstall(
                imdsguard_proxy::routing::MARK,
                imdsguard_proxy::routing::TABLE,
            );
        }
    }
}

struct Auth(Repository);

impl Authority for Auth {
    fn client(&self, ip: IpAddr) -> Option<Client> {
        let (key, identity) = self.0.endpoint_by_ip(ip)?;
        Some(Client {
            endpoint: Endpoint {
                identity: identity.0,
                ..Default::default()
            },
            policy: self.0.endpoint_policy(key)?.clone(),
        })
    }
    fn destination(&self, ip: IpAddr) -> Endpoint {
        Endpoint {
            identity: self.0.identity_of_ip(ip).0,
            ..Default::default()
        }
    }
}

/// Counts flows instead of keeping them, as a ring buffer would cost little either.
#[derive(Default)]
struct Count(AtomicU64);

impl FlowSink for Count {
    fn flow(&self, _: Flow) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

/// One path's three runs.
#[derive(Debug, Default, Clone, Copy)]
struct Paths {
    keepalive: Run,
    close: Run,
    one: Run,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

impl Run {
    fn median(runs: &[Run]) -> Run {
        Run {
            rps: median(runs.iter().map(|r| r.rps).collect()),
            p50_us: median(runs.iter().map(|r| r.p50_us).collect()),
            p99_us: median(runs.iter().map(|r| r.p99_us).collect()),
        }
    }
}

impl Paths {
    fn median(runs: &[Paths]) -> Paths {
        let of = |f: fn(&Paths) -> Run| Run::median(&runs.iter().map(f).collect::<Vec<_>>());
        Paths {
            keepalive: of(|p| p.keepalive),
            close: of(|p| p.close),
            one: of(|p| p.one),
        }
    }
}

/// Latencies in µs, sorted, of `n` requests on each of `targets` in turn, each over its own
/// keep-alive connection, from a thread in network namespace `ns`: the paths share every
/// moment of the VM's jitter.
fn interleaved(ns: &str, targets: &[SocketAddr], n: usize) -> Vec<Vec<f64>> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let ns = ns.to_owned();
    let targets = targets.to_vec();
    std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns");
        // SAFETY: a valid namespace fd; only this thread moves.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let mut conns: Vec<std::net::TcpStream> = targets
            .iter()
            .map(|t| {
                let s = std::net::TcpStream::connect(t).expect("connect");
                s.set_nodelay(true).expect("nodelay");
                s
            })
            .collect();
        let mut out = vec![Vec::with_capacity(n); targets.len()];
        let mut buf = vec![0u8; 4096];
        for i in 0..n + 200 {
            for (c, o) in conns.iter_mut().zip(out.iter_mut()) {
                let t = std::time::Instant::now();
                c.write_all(b"GET /metadata/instance HTTP/1.1\r\nHost: imds\r\n\r\n")
                    .expect("write");
                // The answer is nginx's `ok\n`: a head, then three bytes.
                let mut have = 0;
                loop {
                    let k = c.read(&mut buf[have..]).expect("read");
                    assert!(k > 0, "closed");
                    have += k;
                    if let Some(h) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n")
                        && have >= h + 4 + 3
                    {
                        break;
                    }
                }
                // The first 200 warm up.
                if i >= 200 {
                    o.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        for o in &mut out {
            o.sort_by(f64::total_cmp);
        }
        out
    })
    .join()
    .expect("interleaved")
}

fn micros(v: &str) -> f64 {
    let v = v.trim();
    for (unit, f) in [("us", 1.0), ("ms", 1e3), ("s", 1e6)] {
        if let Some(n) = v.strip_suffix(unit) {
            return n.parse::<f64>().map(|n| n * f).unwrap_or(f64::NAN);
        }
    }
    f64::NAN
}

fn wrk(client: &Pod, url: &str, secs: u64, close: bool) -> Run {
    wrk_c(client, url, secs, close, "16")
}

/// Latency without queueing: one connection, one request at a time.
fn wrk_c(client: &Pod, url: &str, secs: u64, close: bool, conns: &str) -> Run {
    let d = format!("{secs}s");
    let mut args = vec!["-t1", "-c", conns, "-d", &d, "--latency"];
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(url);
    let out = client.ns.exec("wrk", &args).expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = Run::default();
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("50%") {
            r.p50_us = micros(v);
        } else if let Some(v) = l.strip_prefix("99%") {
            r.p99_us = micros(v);
        }
    }
    assert!(r.rps > 0.0, "no result from wrk:\n{text}");
    r
}

/// Handshake and first-byte times of single `curl` requests, each on a new connection.
fn probe(client: &Pod, url: &str, when: &str) {
    let script = format!(
        "ss -tan state time-wait | wc -l; nstat -az | grep -iE 'SynRetrans|TCPTimeouts|TcpOutRsts|TcpAttemptFails|TcpInErrs|TcpExtTCPAbortOnData|TcpRetransSegs|TcpActiveOpens' | awk '$2 > 0'; for i in $(seq 200); do curl -s -o /dev/null -w '%{{time_connect}} %{{time_starttransfer}}\\n' -H 'Connection: close' {url}; done"
    );
    let out = client.ns.exec("sh", &["-c", &script]).expect("probe");
    let text = String::from_utf8_lossy(&out.stdout);
    let tw = text.lines().next().unwrap_or_default().to_owned();
    let mut t: Vec<(f64, f64)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect();
    t.sort_by(|a, b| a.1.total_cmp(&b.1));
    for l in text.lines().filter(|l| l.starts_with("Tcp")) {
        eprintln!("  client {l}");
    }
    eprintln!(
        "probe {when} ({tw} client TIME_WAIT): (connect, first byte) p50 {:?} p90 {:?} max {:?}",
        t.get(t.len() / 2),
        t.get(t.len() * 9 / 10),
        t.last()
    );
}

fn nginx(pod: &Pod, dir: &Path, name: &str, server: &str) -> Process {
    let conf = dir.join(format!("{name}.conf"));
    let tmp = dir.join(name);
    std::fs::create_dir_all(&tmp).expect("mkdir");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1; daemon off; pid {t}/pid; error_log stderr;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; client_body_temp_path {t}; proxy_temp_path {t};\n\
               fastcgi_temp_path {t}; uwsgi_temp_path {t}; scgi_temp_path {t};\n{server} }}\n",
            t = tmp.display()
        ),
    )
    .expect("conf");
    pod.ns
        .spawn("nginx", &["-c", &conf.to_string_lossy()])
        .expect("nginx")
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

const HOLD: &str = r#"
import socket, sys, time
conns = []
for i in range(int(sys.argv[2])):
    s = socket.create_connection((sys.argv[1], 80), timeout=5)
    s.sendall(b"GET /held HTTP/1.1\r\nHost: imds\r\n\r\n")
    s.recv(4096)
    conns.append(s)
print("open", len(conns), flush=True)
time.sleep(float(sys.argv[3]))
"#;

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let k = 120 + (std::process::id() % 50) as u8;
    let client =
        Pod::create(&unique_name("pbc"), Ipv4Addr::new(10, k, 2, 2), None).expect("client");
    let upstream =
        Pod::create(&unique_name("pbu"), Ipv4Addr::new(10, k, 2, 3), None).expect("upstream");
    let middle =
        Pod::create(&unique_name("pbn"), Ipv4Addr::new(10, k, 2, 4), None).expect("nginx proxy");
    let dir = std::env::temp_dir().join(unique_name("pbdir"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let routing_added = !imdsguard_proxy::routing::installed(imdsguard_proxy::routing::TABLE);
    let cleanup = Cleanup {
        bpf: dir.join("bpf"),
        dir: dir.clone(),
        routing_added,
    };
    let _up = nginx(
        &upstream,
        &dir,
        "upstream",
        &format!(
            "server {{ listen {ip}:80 reuseport; listen {ip}:81; keepalive_requests 1000000; location / {{ return 200 \"ok\\n\"; }} }}",
            ip = upstream.ipv4
        ),
    );
    let _mid = nginx(
        &middle,
        &dir,
        "middle",
        &format!(
            "upstream u {{ server {}:80; keepalive 64; }}\n\
             server {{ listen {}:8080; keepalive_requests 1000000; location / {{ proxy_pass http://u; \
             proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}",
            upstream.ipv4, middle.ipv4
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        client.ns.route_dev(upstream.ipv4.into()).expect("route"),
        "eth0"
    );
    let direct_url = format!("http://{}:80/metadata/instance", upstream.ipv4);
    let nginx_url = format!("http://{}:8080/metadata/instance", middle.ipv4);

    // imdsguard: the client's egress to the upstream carries an HTTP rule, so the datapath
    // redirects it to the proxy below.
    let policy = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: l7, namespace: default}}\n\
         spec:\n  endpointSelector: {{matchLabels: {{app: client}}}}\n  egress:\n    - toCIDR: [{}/32]\n      \
         toPorts: [{{ports: [{{port: \"80\", protocol: TCP}}], rules: {{http: [{{method: GET, path: \"/metadata/.*\"}}]}}}}]\n    \
         - toCIDR: [{}/32]\n      toPorts: [{{ports: [{{port: \"81\", protocol: TCP}}]}}]\n    \
         - toCIDR: [{}/32]\n      toPorts: [{{ports: [{{port: \"8080\", protocol: TCP}}]}}]\n",
        upstream.ipv4, upstream.ipv4, middle.ipv4
    );
    // Two identical engines: one for the proxy's task, one for the table sync (identities are
    // derived from labels and CIDRs, so both number them alike).
    let build = || {
        let decoded = decode_source(
            &Source::new("l7.yaml", policy.clone()),
            &DecodeOptions::default(),
        );
        let mut repo = Repository::new(EngineOptions::default());
        repo.load(&decoded);
        repo.upsert_endpoint(EndpointSpec {
            name: "client".into(),
            namespace: "default".into(),
            labels: vec![("app".into(), "client".into())],
            ips: vec![client.ipv4.into()],
            ..Default::default()
        });
        repo.resolve();
        repo
    };
    let repo = build();
    let proxy_port = 17000 + (std::process::id() % 1000) as u16;
    imdsguard_proxy::routing::install(
        imdsguard_proxy::routing::MARK,
        imdsguard_proxy::routing::TABLE,
    )
    .expect("routing");
    // The proxy's runtime is dropped before the pods, so its sockets close while the routes to
    // the pods exist (after that, a FIN would take the machine's default route).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let guard = rt.enter();
    let listener = transparent_listener((Ipv4Addr::LOCALHOST, proxy_port).into()).expect("listen");
    let listener_fd = {
        use std::os::fd::AsFd;
        listener.as_fd().try_clone_to_owned().expect("dup")
    };
    let flows = Arc::new(Count::default());
    let sink: Arc<dyn FlowSink> = flows.clone();
    // The bench measures the proxy's cost, not its limits: one pod here opens wrk's connections
    // and then a thousand held ones, past the per-pod and per-identity defaults.
    let cfg = ProxyConfig {
        max_connections_per_identity: 4096,
        max_connections_per_pod: 4096,
        ..ProxyConfig::default()
    };
    let proxy = tokio::spawn(serve(listener, cfg, Arc::new(Auth(build())), sink));
    let mut dp = Datapath::open(&Options {
        bpf_root: cleanup.bpf.clone(),
        ..Default::default()
    })
    .expect("datapath");
    {
        use std::os::fd::AsFd;
        dp.set_proxy_listeners(Some(listener_fd.as_fd()), None)
            .expect("proxy listeners");
    }
    let mut sync = TableSync::new(SyncOptions {
        proxy_port,
        ..Default::default()
    });
    sync.sync(&repo, &mut dp).expect("sync");
    // Rounds of the three paths in turn (every other round in reverse), so that the VM's drift
    // and the state one run leaves weigh on all alike; the tables give medians over the rounds.
    // The datapath is attached only for imdsguard's runs.
    let mut runs: [Vec<Paths>; 3] = Default::default();
    for r in 1..=rounds {
        let order = if r % 2 == 0 { [2, 1, 0] } else { [0, 1, 2] };
        eprintln!("[round {r}/{rounds}] {order:?} (0 direct, 1 nginx, 2 imdsguard)");
        for which in order {
            let url = if which == 1 { &nginx_url } else { &direct_url };
            if which == 2 {
                dp.attach(&client.host_if).expect("attach");
                if std::env::var_os("PROBE").is_some() {
                    probe(&client, &direct_url, "before wrk");
                }
            }
            runs[which].push(Paths {
                keepalive: wrk(&client, url, secs, false),
                close: wrk(&client, url, secs, true),
                one: wrk_c(&client, url, secs, false, "1"),
            });
            if which == 2 {
                if std::env::var_os("PROBE").is_some() {
                    probe(&client, &direct_url, "after wrk");
                }
                dp.detach(&client.host_if).expect("detach");
            }
        }
    }
    dp.attach(&client.host_if).expect("attach");
    eprintln!("interleaved latency");
    let targets = [
        SocketAddr::from((upstream.ipv4, 81)),
        SocketAddr::from((middle.ipv4, 8080)),
        SocketAddr::from((upstream.ipv4, 80)),
    ];
    // Three repetitions: each one's p99 added, and the whole table over all of them.
    let reps: Vec<Vec<Vec<f64>>> = (0..3)
        .map(|_| interleaved(&client.ns.name, &targets, 20_000 * secs as usize / 5))
        .collect();
    let rep_added: Vec<[f64; 2]> = reps
        .iter()
        .map(|r| {
            let p99 = |v: &[f64]| v[((v.len() as f64 * 0.99) as usize).min(v.len() - 1)];
            [p99(&r[1]) - p99(&r[0]), p99(&r[2]) - p99(&r[0])]
        })
        .collect();
    let samples: Vec<Vec<f64>> = (0..targets.len())
        .map(|i| {
            let mut all: Vec<f64> = reps.iter().flat_map(|r| r[i].iter().copied()).collect();
            all.sort_by(f64::total_cmp);
            all
        })
        .collect();
    eprintln!("datapath counters: {:?}", dp.counters().unwrap_or_default());
    eprintln!("1,000 open connections");
    let before = rss_kb();
    let mut hold = client
        .ns
        .command("python3")
        .args(["-c", HOLD, &upstream.ipv4.to_string(), "1000", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map(Process)
        .expect("hold");
    let mut line = String::new();
    if let Some(out) = hold.0.stdout.take() {
        use std::io::BufRead;
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let during = rss_kb();
    drop(hold);
    drop(dp);
    proxy.abort();
    drop(guard);
    rt.shutdown_timeout(Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(300));

    let names = [
        "direct",
        "nginx reverse proxy",
        "imdsguard proxy (redirected, judged)",
    ];
    let med: Vec<Paths> = runs.iter().map(|r| Paths::median(r)).collect();
    println!(
        "wrk -t1 -c16 -d{secs}s --latency from the client pod; the upstream is nginx returning 200; \
         medians of {rounds} rounds\n"
    );
    println!("| path | keep-alive req/s | p50 | p99 | new connection req/s | p50 | p99 |");
    println!("|---|---|---|---|---|---|---|");
    for (name, m) in names.iter().zip(&med) {
        let (ka, nc) = (m.keepalive, m.close);
        println!(
            "| {name} | {:.0} | {:.0} µs | {:.0} µs | {:.0} | {:.0} µs | {:.0} µs |",
            ka.rps, ka.p50_us, ka.p99_us, nc.rps, nc.p50_us, nc.p99_us
        );
    }
    println!("\nOne keep-alive connection, one request at a time (latency without queueing):\n");
    println!(
        "| path | req/s | p50 | p99 | p99 added over direct (median of the rounds' differences) |"
    );
    println!("|---|---|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        let added = median(
            runs[i]
                .iter()
                .zip(&runs[0])
                .map(|(r, d)| r.one.p99_us - d.one.p99_us)
                .collect(),
        );
        let r = med[i].one;
        println!(
            "| {name} | {:.0} | {:.0} µs | {:.0} µs | {added:.0} µs |",
            r.rps, r.p50_us, r.p99_us
        );
    }
    println!(
        "\nInterleaved: one keep-alive connection per path from one client thread in the client pod, \
         a request on each in turn ({} each over three repetitions), with the datapath attached (the direct path is \
         allowed at L4 on port 81 and passes the datapath, not the proxy):\n",
        samples[0].len()
    );
    println!("| path | p50 | p90 | p99 | p99.9 | p99 added over direct |");
    println!("|---|---|---|---|---|---|");
    let pct = |v: &[f64], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    let direct_p99 = pct(&samples[0], 0.99);
    for (name, v) in ["direct", "nginx reverse proxy", "imdsguard proxy"]
        .iter()
        .zip(&samples)
    {
        println!(
            "| {name} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs |",
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99),
            pct(v, 0.999),
            pct(v, 0.99) - direct_p99
        );
    }
    // Each round's imdsguard runs against that round's nginx runs: neighbours share the VM's
    // drift, which moves a path's req/s by ±15 % from round to round.
    let paired = |f: fn(&Paths) -> f64| {
        median(
            runs[2]
                .iter()
                .zip(&runs[1])
                .map(|(ours, nginx)| f(ours) / f(nginx) - 1.0)
                .collect(),
        ) * 100.0
    };
    println!(
        "\np99 added over direct in each repetition: nginx {}; imdsguard {}.",
        rep_added
            .iter()
            .map(|a| format!("{:.0} µs", a[0]))
            .collect::<Vec<_>>()
            .join(", "),
        rep_added
            .iter()
            .map(|a| format!("{:.0} µs", a[1]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "\nimdsguard against nginx, median over the rounds of each round's ratio: keep-alive \
         {:+.1} %, new connections {:+.1} %.",
        paired(|p| p.keepalive.rps),
        paired(|p| p.close.rps)
    );
    println!("\nEach round (keep-alive req/s, new connection req/s, one-connection p99 µs):");
    for (name, r) in names.iter().zip(&runs) {
        let list: Vec<String> = r
            .iter()
            .map(|p| {
                format!(
                    "{:.0}/{:.0}/{:.0}",
                    p.keepalive.rps, p.close.rps, p.one.p99_us
                )
            })
            .collect();
        println!("- {name}: {}", list.join(", "));
    }
    println!(
        "1,000 open connections ({}): proxy process RSS {} kB -> {} kB ({:+} kB)",
        line.trim(),
        before,
        during,
        during as i64 - before as i64
    );
    println!("flows emitted: {}", flows.0.load(Ordering::Relaxed));
    drop(cleanup);
}
