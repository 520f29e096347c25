//! Datapath benchmark (needs root, wrk and nginx: `apt-get install wrk nginx-light`).
//!
//! A client pod and an nginx pod on one machine, and wrk from the client, measured in one run:
//! - no program on the client's veth (the baseline);
//! - the `noop` program (the floor of bpf_stats' per-packet cost);
//! - the datapath enforcing an allow policy, with 1 endpoint and then with 1,000;
//! - the same policy as nftables rules for 1,000 pod IPs (forward chain, the client's rule last).
//!
//! `cargo run --release -p imdsguard-datapath --example datapath_bench -- [SECONDS] [ROUNDS]`

use imdsguard_datapath::abi::IfaceInfo;
use imdsguard_datapath::loader::{Datapath, Options, unpin_all};
use imdsguard_datapath::sync::{SyncOptions, TableSync};
use imdsguard_manifest::Source;
use imdsguard_netns::{Pod, Process, run, unique_name};
use imdsguard_policy::{DecodeOptions, EndpointSpec, EngineOptions, Repository, decode_source};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

struct BpfRoot(PathBuf);

impl Drop for BpfRoot {
    fn drop(&mut self) {
        let _ = unpin_all(&self.0);
        let _ = run("umount", &[&self.0.to_string_lossy()]);
        let _ = std::fs::remove_dir(&self.0);
    }
}

struct NftTable(String);

impl Drop for NftTable {
    fn drop(&mut self) {
        let _ = run("nft", &["delete", "table", "inet", &self.0]);
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Wrk {
    keepalive_rps: f64,
    close_rps: f64,
}

fn wrk(client: &Pod, url: &str, secs: u64, close: bool) -> f64 {
    let d = format!("{secs}s");
    let mut args = vec!["-t1", "-c16", "-d", &d];
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(url);
    let out = client.ns.exec("wrk", &args).expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"))
}

fn measure(client: &Pod, url: &str, secs: u64) -> Wrk {
    Wrk {
        keepalive_rps: wrk(client, url, secs, false),
        close_rps: wrk(client, url, secs, true),
    }
}

fn policy(server: Ipv4Addr) -> String {
    format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: to-server, namespace: default}}
spec:
  endpointSelector: {{matchLabels: {{app: client}}}}
  egress:
    - toCIDR: [{server}/32]
      toPorts: [{{ports: [{{port: "8080", protocol: TCP}}]}}]
"#
    )
}

fn endpoint(name: &str, ip: IpAddr) -> EndpointSpec {
    EndpointSpec {
        name: name.to_owned(),
        namespace: "default".to_owned(),
        labels: vec![("app".to_owned(), "client".to_owned())],
        ips: vec![ip],
        ..Default::default()
    }
}

/// ns per run of each program over a measured interval.
fn per_packet(dp: &Datapath, f: impl FnOnce()) -> Vec<(&'static str, f64, u64)> {
    let before = dp.program_stats();
    f();
    let after = dp.program_stats();
    after
        .iter()
        .filter_map(|(name, t, n)| {
            let (_, t0, n0) = before.iter().find(|(b, _, _)| b == name)?;
            let runs = n - n0;
            (runs > 0).then(|| (*name, (*t - *t0).as_nanos() as f64 / runs as f64, runs))
        })
        .collect()
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let k = 100 + (std::process::id() % 50) as u8;
    let client =
        Pod::create(&unique_name("bnc"), Ipv4Addr::new(10, k, 1, 2), None).expect("client");
    let server =
        Pod::create(&unique_name("bns"), Ipv4Addr::new(10, k, 1, 3), None).expect("server");
    let conf_dir = std::env::temp_dir().join(unique_name("bnginx"));
    std::fs::create_dir_all(&conf_dir).expect("mkdir");
    let conf = conf_dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1; daemon off; pid {dir}/nginx.pid; error_log stderr;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path {dir}; proxy_temp_path {dir};\n\
               fastcgi_temp_path {dir}; uwsgi_temp_path {dir}; scgi_temp_path {dir};\n\
               server {{ listen {ip}:8080; location / {{ return 200 \"ok\\n\"; }} }} }}\n",
            dir = conf_dir.display(),
            ip = server.ipv4
        ),
    )
    .expect("nginx.conf");
    let _nginx: Process = server
        .ns
        .spawn("nginx", &["-c", &conf.to_string_lossy()])
        .expect("nginx");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        client.ns.route_dev(server.ipv4.into()).expect("route"),
        "eth0"
    );
    let url = format!("http://{}:8080/", server.ipv4);

    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4)
        .max(1);
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("kernel.bpf_stats_enabled");
    let bpf = BpfRoot(std::env::temp_dir().join(unique_name("bnbpf")));
    let opts = Options {
        bpf_root: bpf.0.clone(),
        ..Default::default()
    };
    let decoded = decode_source(
        &Source::new("policy.yaml", policy(server.ipv4)),
        &DecodeOptions::default(),
    );
    let mut repo = Repository::new(EngineOptions::default());
    repo.load(&decoded);
    repo.upsert_endpoint(endpoint("client", client.ipv4.into()));
    repo.resolve();
    let mut dp = Datapath::open(&opts).expect("load");
    let mut sync = TableSync::new(SyncOptions::default());
    sync.sync(&repo, &mut dp).expect("sync");

    // Rounds of baseline, noop and imdsguard runs in turn, so that the VM's drift over a run
    // falls on all three alike; each figure is the median over the rounds. Per-packet cost is
    // read separately for the keep-alive run (established flows) and the new-connection run.
    let mut baseline = Vec::new();
    let mut noop_wrk = Vec::new();
    let mut one = Vec::new();
    let mut floor = Vec::new();
    let mut one_ka_cost = Vec::new();
    let mut one_nc_cost = Vec::new();
    for r in 1..=rounds {
        // Every other round runs imdsguard first: the state one run leaves (the server's
        // TIME_WAITs, for one) then weighs on both sides alike.
        let ours_first = r % 2 == 0;
        eprintln!(
            "[round {r}/{rounds}] {}",
            if ours_first {
                "imdsguard with 1 endpoint, noop, no program"
            } else {
                "no program, noop, imdsguard with 1 endpoint"
            }
        );
        for step in 0..3 {
            match (step, ours_first) {
                (0, false) | (2, true) => baseline.push(measure(&client, &url, secs)),
                (1, _) => {
                    let mut noop = Datapath::open(&Options {
                        bpf_root: bpf.0.clone(),
                        ..Default::default()
                    })
                    .expect("load noop");
                    noop.attach_noop(&client.host_if).expect("attach noop");
                    let mut rps = 0.0;
                    floor.push(per_packet(&noop, || rps = wrk(&client, &url, secs, false)));
                    noop_wrk.push(Wrk {
                        keepalive_rps: rps,
                        close_rps: 0.0,
                    });
                }
                _ => {
                    dp.attach_pod(&client.host_if, IfaceInfo::new(&[client.ipv4.into()], 1, 0))
                        .expect("attach");
                    let mut w = Wrk::default();
                    one_ka_cost.push(per_packet(&dp, || {
                        w.keepalive_rps = wrk(&client, &url, secs, false)
                    }));
                    one_nc_cost.push(per_packet(&dp, || {
                        w.close_rps = wrk(&client, &url, secs, true)
                    }));
                    one.push(w);
                    dp.detach(&client.host_if).expect("detach");
                }
            }
        }
    }
    let rounds_text = [
        ("no program", &baseline),
        ("noop", &noop_wrk),
        ("imdsguard", &one),
    ]
    .map(|(name, runs)| {
        let list = |f: fn(&Wrk) -> f64| {
            runs.iter()
                .map(|w| format!("{:.0}", f(w)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "- {name}: keep-alive {}; new connections {}",
            list(|w| w.keepalive_rps),
            list(|w| w.close_rps)
        )
    })
    .join("\n");
    // Each round's runs against that round's baseline: neighbours share the VM's drift.
    let paired = |runs: &[Wrk], f: fn(&Wrk) -> f64| {
        median(
            runs.iter()
                .zip(&baseline)
                .map(|(w, b)| f(w) / f(b) - 1.0)
                .collect(),
        )
    };
    let noop_vs = (paired(&noop_wrk, |w| w.keepalive_rps), f64::NAN);
    let one_vs = (
        paired(&one, |w| w.keepalive_rps),
        paired(&one, |w| w.close_rps),
    );
    // The programs' own time per new connection, against the CPU time a connection takes.
    let program_ns: f64 = one_nc_cost
        .iter()
        .flatten()
        .map(|(_, ns, n)| ns * *n as f64)
        .sum();
    let connections: f64 = one.iter().map(|w| w.close_rps * secs as f64).sum();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let per_connection = (
        program_ns / connections / 1e3,
        cpus * 1e6 / median(one.iter().map(|w| w.close_rps).collect()),
    );
    let baseline = median_wrk(&baseline);
    let noop_wrk = median_wrk(&noop_wrk);
    let one = median_wrk(&one);
    let noop_cost = median_cost(&floor);
    let one_ka_cost = median_cost(&one_ka_cost);
    let one_nc_cost = median_cost(&one_nc_cost);
    dp.attach_pod(&client.host_if, IfaceInfo::new(&[client.ipv4.into()], 1, 0))
        .expect("attach");

    // 999 more pods selected by the same policy, each with its own table rows.
    for i in 0..999u32 {
        let ip = Ipv4Addr::new(10, k, 10 + (i / 250) as u8, 1 + (i % 250) as u8);
        repo.upsert_endpoint(endpoint(&format!("pod{i}"), ip.into()));
    }
    repo.resolve();
    sync.sync(&repo, &mut dp).expect("sync 1000");
    eprintln!("imdsguard, 1,000 endpoints");
    let mut thousand = Wrk::default();
    let thousand_ka_cost = per_packet(&dp, || {
        thousand.keepalive_rps = wrk(&client, &url, secs, false)
    });
    let thousand_nc_cost = per_packet(&dp, || thousand.close_rps = wrk(&client, &url, secs, true));
    drop(dp);
    drop(bpf);
    drop(stats);

    // The same policy in nftables: established traffic first, then one rule per pod.
    let table = NftTable(unique_name("imdsgbench"));
    let mut script = format!(
        "table inet {t} {{ chain pods {{ type filter hook forward priority 0; policy accept;\n\
         ct state established,related accept\n",
        t = table.0
    );
    for i in 0..999u32 {
        let ip = Ipv4Addr::new(10, k, 10 + (i / 250) as u8, 1 + (i % 250) as u8);
        script += &format!(
            "ip saddr {ip} ip daddr {} tcp dport 8080 accept\n",
            server.ipv4
        );
    }
    script += &format!(
        "ip saddr {} ip daddr {} tcp dport 8080 accept\nip daddr {} drop\n}}\n}}\n",
        client.ipv4, server.ipv4, server.ipv4
    );
    let file = conf_dir.join("rules.nft");
    std::fs::write(&file, script).expect("rules");
    run("nft", &["-f", &file.to_string_lossy()]).expect("nft -f");
    eprintln!("nftables, 1,000 rules");
    let nft = measure(&client, &url, secs);
    drop(table);
    let _ = std::fs::remove_dir_all(&conf_dir);

    let pct = |v: f64, base: f64| format!("{:+.1} %", (v / base - 1.0) * 100.0);
    let paired_pct = |r: f64| {
        if r.is_nan() {
            "-".to_owned()
        } else {
            format!("{:+.1} %", r * 100.0)
        }
    };
    println!(
        "wrk -t1 -c16 -d{secs}s from the client pod to nginx in the server pod; no program, noop and \
         1 endpoint: median of {rounds} rounds\n"
    );
    println!(
        "| setup | keep-alive req/s | vs none | vs none, paired | new connection req/s | vs none | vs none, paired |"
    );
    println!("|---|---|---|---|---|---|---|");
    let none = (f64::NAN, f64::NAN);
    for (name, w, vs) in [
        ("no program (baseline)", baseline, none),
        ("noop program", noop_wrk, noop_vs),
        ("imdsguard, 1 endpoint", one, one_vs),
        ("imdsguard, 1,000 endpoints", thousand, none),
        ("nftables, 1,000 pod rules", nft, none),
    ] {
        println!(
            "| {name} | {:.0} | {} | {} | {} | {} | {} |",
            w.keepalive_rps,
            pct(w.keepalive_rps, baseline.keepalive_rps),
            paired_pct(vs.0),
            if w.close_rps > 0.0 {
                format!("{:.0}", w.close_rps)
            } else {
                "-".into()
            },
            if w.close_rps > 0.0 {
                pct(w.close_rps, baseline.close_rps)
            } else {
                "-".into()
            },
            paired_pct(vs.1),
        );
    }
    println!(
        "\n\"vs none, paired\": the median over the rounds of each run against its own round's \
         baseline.\n\nEach round, req/s:\n{rounds_text}"
    );
    println!(
        "\nPer new connection (1 endpoint): {:.2} µs in from_pod and to_pod (bpf_stats), of {:.0} µs \
         of CPU a connection takes on this machine ({cpus} CPUs / median req/s): {:.1} %.",
        per_connection.0,
        per_connection.1,
        per_connection.0 / per_connection.1 * 100.0
    );
    println!(
        "\nbpf_stats (run_time_ns / run_cnt; keep-alive: established flows; new connections: \
         every packet of the run, handshakes and closes included):\n"
    );
    println!("| program | setup | run | ns/packet | net of the floor | packets |");
    println!("|---|---|---|---|---|---|");
    let floor_ns = noop_cost.first().map(|c| c.1).unwrap_or(0.0);
    for (setup, run, costs) in [
        ("floor", "keep-alive", &noop_cost),
        ("1 endpoint", "keep-alive", &one_ka_cost),
        ("1 endpoint", "new connections", &one_nc_cost),
        ("1,000 endpoints", "keep-alive", &thousand_ka_cost),
        ("1,000 endpoints", "new connections", &thousand_nc_cost),
    ] {
        for (name, ns, n) in costs {
            let net = if *name == "noop" {
                String::new()
            } else {
                format!("{:.0}", ns - floor_ns)
            };
            println!("| {name} | {setup} | {run} | {ns:.0} | {net} | {n} |");
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn median_wrk(runs: &[Wrk]) -> Wrk {
    Wrk {
        keepalive_rps: median(runs.iter().map(|w| w.keepalive_rps).collect()),
        close_rps: median(runs.iter().map(|w| w.close_rps).collect()),
    }
}

/// Per program, the median ns/packet over the rounds and the packets of all of them.
fn median_cost(rounds: &[Vec<(&'static str, f64, u64)>]) -> Vec<(&'static str, f64, u64)> {
    let mut names: Vec<&'static str> = rounds.iter().flatten().map(|c| c.0).collect();
    names.dedup();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let runs = rounds.iter().flatten().filter(|c| c.0 == name);
            let ns = median(runs.clone().map(|c| c.1).collect());
            (name, ns, runs.map(|c| c.2).sum())
        })
        .collect()
}
