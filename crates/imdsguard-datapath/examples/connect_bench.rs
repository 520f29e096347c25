//! What the cgroup hooks cost a connect() (needs root and a cgroup v2 mount).
//!
//! Two cgroups under a fresh one in the host's cgroup v2 tree: `hooked`, where the datapath's
//! connect/sendmsg hooks are attached, and `plain`, where they are not. The same client (this
//! binary, re-run with `--client`) runs in each, in turn, inside a pod namespace:
//! - `udp-protected`: N connect() calls of one UDP socket to a protected address (the hooks' slow
//!   path: the process recorded in the socket's storage, the cgroup levels searched);
//! - `udp-hostnet`: the same from a cgroup registered as a hostNetwork pod with an allow policy
//!   (the slow path plus the policy lookup and one verdict per socket);
//! - `tcp-loopback`: N connections to a loopback listener, one per request (the fast path every
//!   other connect on the node takes: one ipcache lookup).
//!
//! It reports the median per-call time of each side over the rounds, and bpf_stats' run time per
//! hook run. With `--memory`, it also holds 10,000 UDP sockets connected to the protected address
//! in each cgroup and reports the change in the kernel's unreclaimable slab.
//!
//! Last, the time until a denied TCP connect fails, `drop` against `reject` in paired rounds, with
//! a 1 s client connect timeout (what the SDKs' IMDS probes use):
//! - `pod`: a second pod with the datapath on its veth and an egressDeny for the protected address
//!   (client in `hooked`, unregistered: the hooks pass it and TC judges the SYN);
//! - `hostNetwork`: a cgroup registered as a hostNetwork pod with an egressDeny, refused at
//!   connect() by the hook;
//! - `reference`: the kernel's own refusal (a closed port, no datapath on the path).
//!
//! `--deny-only` skips everything before it.
//!
//! `cargo run --release -p imdsguard-datapath --example connect_bench -- [N] [ROUNDS] [--memory] [--deny-only]`

use imdsguard_datapath::DenyResponse;
use imdsguard_datapath::abi;
use imdsguard_datapath::loader::{Datapath, Options, unpin_all};
use imdsguard_datapath::sync::{SyncOptions, TableSync};
use imdsguard_manifest::Source;
use imdsguard_netns::{Pod, Process, run, unique_name};
use imdsguard_policy::{DecodeOptions, EndpointSpec, EngineOptions, Repository, decode_source};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct BpfRoot(PathBuf);

impl Drop for BpfRoot {
    fn drop(&mut self) {
        let _ = unpin_all(&self.0);
        let _ = run("umount", &[&self.0.to_string_lossy()]);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The bench's cgroups, removed on drop (the clients have exited by then).
struct Cgroups {
    top: PathBuf,
    root: PathBuf,
}

impl Cgroups {
    fn child(&self, name: &str) -> PathBuf {
        self.top.join(name)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for c in ["hooked/hostnet", "hooked/hostdeny", "hooked", "plain"] {
            let dir = self.top.join(c);
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
        let _ = std::fs::remove_dir(&self.top);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--client") {
        client(&args[2..]);
        return;
    }
    let numbers: Vec<u64> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = numbers.first().copied().unwrap_or(200_000);
    let rounds = numbers.get(1).copied().unwrap_or(5).max(1);
    let memory = args.iter().any(|a| a == "--memory");
    let deny_only = args.iter().any(|a| a == "--deny-only");

    let root = imdsguard_cgroup::host::default_root().expect("a cgroup v2 mount");
    let cg = Cgroups {
        top: root.join(unique_name("igcb")),
        root: root.clone(),
    };
    for c in ["", "hooked", "hooked/hostnet", "hooked/hostdeny", "plain"] {
        std::fs::create_dir_all(cg.top.join(c)).expect("create the cgroups");
    }
    let pod = Pod::create(&unique_name("cbp"), Ipv4Addr::new(10, 251, 7, 2), None).expect("pod");
    let server =
        Pod::create(&unique_name("cbs"), Ipv4Addr::new(10, 251, 7, 3), None).expect("server");
    let denied =
        Pod::create(&unique_name("cbd"), Ipv4Addr::new(10, 251, 7, 4), None).expect("denied pod");
    let bpf = BpfRoot(std::env::temp_dir().join(unique_name("cbbpf")));
    let hooked = cg.child("hooked");
    let hostnet = cg.child("hooked/hostnet");
    let hostdeny = cg.child("hooked/hostdeny");
    let plain = cg.child("plain");
    let mut dp = Datapath::open(&Options {
        bpf_root: bpf.0.clone(),
        cgroup_root: Some(hooked.clone()),
        ..Default::default()
    })
    .expect("load the datapath");
    let repo = repository();
    let mut sync = TableSync::new(SyncOptions {
        protected: vec![ipnet::IpNet::from(IpAddr::V4(server.ipv4))],
        ..Default::default()
    });
    let cgroup_id = |p: &Path| imdsguard_cgroup::host::cgroup_id(p).expect("cgroup id");
    sync.set_cgroup_endpoints(HashMap::from([
        (cgroup_id(&hostnet), "default/hostnet".to_owned()),
        (cgroup_id(&hostdeny), "default/hostdeny".to_owned()),
    ]));
    sync.sync(&repo, &mut dp).expect("sync");
    dp.attach_pod(
        &denied.host_if,
        abi::IfaceInfo::new(&[denied.ipv4.into()], 0, 0),
    )
    .expect("attach the denied pod");
    let target = format!("{}:53", server.ipv4);
    let _listener = listen(&server, 80);
    if !deny_only {
        timings(&dp, &pod, &cg, &target, n, rounds, memory);
    }
    deny_times(
        &mut dp,
        &DenySetup {
            pod: &denied,
            pod_cgroup: &hooked,
            hostnet_ns: &pod,
            hostnet_cgroup: &hostdeny,
            plain: &plain,
            server: server.ipv4,
        },
    );
}

/// Parts (1)-(3): connect() with and without the hooks, bpf_stats, memory.
fn timings(
    dp: &Datapath,
    pod: &Pod,
    cg: &Cgroups,
    target: &str,
    n: u64,
    rounds: u64,
    memory: bool,
) {
    let hooked = cg.child("hooked");
    let hostnet = cg.child("hooked/hostnet");
    let plain = cg.child("plain");
    let target = target.to_owned();

    let mut results: HashMap<(&str, &str), Vec<f64>> = HashMap::new();
    let mut hook_cost: HashMap<&str, Vec<Cost>> = HashMap::new();
    for r in 1..=rounds {
        eprintln!("[round {r}/{rounds}]");
        // Every other round starts with the hooked side, so drift weighs on both alike.
        let sides: [(&str, &Path); 3] = if r % 2 == 0 {
            [
                ("hooks", &hostnet),
                ("hooks", &hooked),
                ("no hooks", &plain),
            ]
        } else {
            [
                ("no hooks", &plain),
                ("hooks", &hooked),
                ("hooks", &hostnet),
            ]
        };
        for (side, cgroup) in sides {
            let cases: &[(&str, &str, &str)] = if cgroup == hostnet.as_path() {
                &[("udp-hostnet", "udp", "")]
            } else {
                &[
                    ("udp-protected", "udp", ""),
                    ("tcp-loopback", "tcp", "127.0.0.1:0"),
                ]
            };
            for (case, mode, addr) in cases {
                let addr = if addr.is_empty() {
                    target.as_str()
                } else {
                    addr
                };
                let ns = per_call(cgroup, pod, &[mode, addr], n);
                results.entry((case, side)).or_default().push(ns);
            }
        }
    }
    // bpf_stats on its own pass: counting run time costs two clock reads per run, which the
    // timings above leave out.
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("kernel.bpf_stats_enabled");
    for _ in 0..rounds {
        for (case, mode, cgroup, addr) in [
            ("udp-protected", "udp", &hooked, target.as_str()),
            ("udp-hostnet", "udp", &hostnet, target.as_str()),
            ("tcp-loopback", "tcp", &hooked, "127.0.0.1:0"),
        ] {
            let before = dp.program_stats();
            per_call(cgroup, pod, &[mode, addr], n);
            hook_cost
                .entry(case)
                .or_default()
                .push(cost(&before, &dp.program_stats()));
        }
    }
    drop(stats);

    println!("connect() cost, median of {rounds} rounds of {n} calls (ns per call):");
    for case in ["udp-protected", "udp-hostnet", "tcp-loopback"] {
        let with = results.get(&(case, "hooks")).cloned().map(median);
        // The hostNetwork pod's baseline: the same connect from the plain cgroup.
        let base = if case == "udp-hostnet" {
            "udp-protected"
        } else {
            case
        };
        let without = results.get(&(base, "no hooks")).cloned().map(median);
        if let (Some(w), Some(wo)) = (with, without) {
            println!(
                "  {case:<14} no hooks {wo:>8.0}   hooks {w:>8.0}   ({:+.0})",
                w - wo
            );
        }
        // Paired: each round's hooked time over the same round's baseline, which ran next to it,
        // so drift between rounds cancels out.
        if let (Some(w), Some(wo)) = (
            results.get(&(case, "hooks")),
            results.get(&(base, "no hooks")),
        ) {
            let ratios: Vec<f64> = w
                .iter()
                .zip(wo)
                .map(|(a, b)| (a / b - 1.0) * 100.0)
                .collect();
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:+.1}")).collect();
            println!(
                "      paired: median {:+.1} % (rounds: {} %)",
                median(ratios.clone()),
                each.join(" ")
            );
        }
        for (name, ns, runs) in median_cost(hook_cost.get(case).map_or(&[][..], Vec::as_slice)) {
            if runs > 0 {
                println!("      bpf_stats {name:<14} {ns:>6.0} ns/run ({runs} runs)");
            }
        }
    }

    if memory {
        println!("kernel memory for 10,000 UDP sockets connected to the protected address:");
        for (side, cgroup) in [("no hooks", &plain), ("hooks", &hooked)] {
            let kb: Vec<f64> = (0..3)
                .map(|_| run_client(cgroup, pod, &["hold", &target, "10000"]))
                .collect();
            println!(
                "  {side:<8} SUnreclaim +{:.1} MB (median of 3)",
                median(kb) / 1024.0
            );
        }
    }
}

/// The client's per-call time in ns, run in `cgroup` inside the pod.
fn per_call(cgroup: &Path, pod: &Pod, args: &[&str], n: u64) -> f64 {
    let n = n.to_string();
    let mut all = args.to_vec();
    all.push(&n);
    run_client(cgroup, pod, &all)
}

/// Runs this binary as the client in `cgroup` and in the pod's namespace; its one line of output
/// is a number.
fn run_client(cgroup: &Path, pod: &Pod, args: &[&str]) -> f64 {
    let text = client_output(cgroup, pod, args);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("client {args:?}: {text}"))
}

/// Runs this binary as the client in `cgroup` (joined before `ip netns exec` remounts /sys)
/// and in the pod's namespace, and returns its output.
fn client_output(cgroup: &Path, pod: &Pod, args: &[&str]) -> String {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new("sh")
        .args([
            "-c",
            r#"echo $$ > "$1/cgroup.procs" && shift && exec ip netns exec "$@""#,
            "sh",
        ])
        .arg(cgroup)
        .arg(&pod.ns.name)
        .arg(exe)
        .arg("--client")
        .args(args)
        .output()
        .expect("run the client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Where each kind of denied connect starts.
struct DenySetup<'a> {
    /// The pod with the datapath on its veth and an egressDeny for `server`.
    pod: &'a Pod,
    pod_cgroup: &'a Path,
    /// A namespace with no datapath on its veth: only the hooks judge its connects.
    hostnet_ns: &'a Pod,
    /// Registered as the hostNetwork pod denied `server`.
    hostnet_cgroup: &'a Path,
    /// No hooks, for the reference.
    plain: &'a Path,
    server: Ipv4Addr,
}

/// Rounds of the denied-connect comparison: each costs one client timeout per drop case.
const DENY_ROUNDS: usize = 3;
/// Connects per round for the cases that fail at once.
const DENY_CONNECTS: u64 = 200;
/// The client's connect timeout, in ms.
const CONNECT_TIMEOUT_MS: u64 = 1000;

/// Part (4): how long a denied TCP connect takes to fail, with `drop` and with `reject`, in paired
/// rounds (the order alternates per round).
fn deny_times(dp: &mut Datapath, s: &DenySetup) {
    // Port 80 of the server listens, so a connect the datapath let through would succeed rather
    // than look refused; port 9 is closed, for the kernel's own answer.
    let denied = format!("{}:80", s.server);
    let closed = format!("{}:9", s.server);
    let counters = |dp: &Datapath| -> HashMap<&'static str, u64> {
        dp.counters().expect("counters").into_iter().collect()
    };
    let before = counters(dp);
    let mut results: HashMap<(&str, &str), Samples> = HashMap::new();
    for r in 0..DENY_ROUNDS {
        eprintln!("[deny round {}/{DENY_ROUNDS}]", r + 1);
        let order = if r % 2 == 0 {
            [DenyResponse::Drop, DenyResponse::Reject]
        } else {
            [DenyResponse::Reject, DenyResponse::Drop]
        };
        for response in order {
            dp.set_deny_response(response)
                .expect("set the deny response");
            let name = if response == DenyResponse::Drop {
                "drop"
            } else {
                "reject"
            };
            // A dropped SYN costs the whole timeout: one connect per round is enough.
            let pod_n = if response == DenyResponse::Drop {
                1
            } else {
                DENY_CONNECTS
            };
            for (case, cgroup, ns, n) in [
                ("pod", s.pod_cgroup, s.pod, pod_n),
                ("hostNetwork", s.hostnet_cgroup, s.hostnet_ns, DENY_CONNECTS),
            ] {
                let (outcome, ns_each) = deny_client(cgroup, ns, &denied, n);
                results
                    .entry((case, name))
                    .or_default()
                    .add(outcome, ns_each);
            }
        }
        let (outcome, ns_each) = deny_client(s.plain, s.hostnet_ns, &closed, DENY_CONNECTS);
        results
            .entry(("reference", "closed port"))
            .or_default()
            .add(outcome, ns_each);
    }
    dp.set_deny_response(DenyResponse::Drop)
        .expect("back to drop");
    let after = counters(dp);

    println!(
        "time until a denied TCP connect fails ({CONNECT_TIMEOUT_MS} ms client connect timeout, \
         {DENY_ROUNDS} paired rounds, drop/reject order alternating):"
    );
    for (case, response, how) in [
        ("pod", "drop", "TC drops the SYN"),
        ("pod", "reject", "TC answers the SYN with a RST"),
        ("hostNetwork", "drop", "the hook refuses connect()"),
        ("hostNetwork", "reject", "the hook refuses connect()"),
        (
            "reference",
            "closed port",
            "the server's kernel, no datapath",
        ),
    ] {
        let Some(Samples {
            outcomes,
            ns: all,
            round_medians: rounds,
        }) = results.get(&(case, response))
        else {
            continue;
        };
        let rounds: Vec<String> = rounds.iter().map(|ns| us(*ns)).collect();
        println!(
            "  {case:<11} {response:<11} {:<13} median {:>10}  p99 {:>10}  max {:>10}  \
             ({} connects; round medians {}; {how})",
            outcomes.join(","),
            us(median(all.clone())),
            us(percentile(all.clone(), 0.99)),
            us(all.iter().copied().fold(0.0, f64::max)),
            all.len(),
            rounds.join(" "),
        );
    }
    let delta = |k: &str| {
        after
            .get(k)
            .copied()
            .unwrap_or(0)
            .saturating_sub(before.get(k).copied().unwrap_or(0))
    };
    println!(
        "  datapath counters: rejected +{}, hook_denied +{}",
        delta("rejected"),
        delta("hook_denied")
    );
}

/// A TCP listener on `port` in the server's namespace, once it is bound.
fn listen(server: &Pod, port: u16) -> Process {
    let addr = server.ipv4.to_string();
    let p = server
        .ns
        .spawn(
            "python3",
            &[
                "-c",
                "import socket, sys\n\
                 s = socket.create_server((sys.argv[1], int(sys.argv[2])), backlog=1024)\n\
                 while True:\n    s.accept()[0].close()",
                &addr,
                &port.to_string(),
            ],
        )
        .expect("listener");
    let filter = format!("sport = :{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .ns
        .exec("ss", &["-Hltn", &filter])
        .is_ok_and(|o| !o.stdout.is_empty())
    {
        assert!(Instant::now() < deadline, "the listener did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// One case's connects over the rounds.
#[derive(Default)]
struct Samples {
    /// The outcomes seen (ECONNREFUSED, TIMEOUT, ...).
    outcomes: Vec<String>,
    /// ns of every connect.
    ns: Vec<f64>,
    round_medians: Vec<f64>,
}

impl Samples {
    fn add(&mut self, outcome: String, ns: Vec<f64>) {
        if !self.outcomes.contains(&outcome) {
            self.outcomes.push(outcome);
        }
        self.round_medians.push(median(ns.clone()));
        self.ns.extend(ns);
    }
}

/// `n` TCP connects with the client's timeout: (the outcomes, joined; ns of each).
fn deny_client(cgroup: &Path, pod: &Pod, addr: &str, n: u64) -> (String, Vec<f64>) {
    let text = client_output(
        cgroup,
        pod,
        &[
            "deny",
            addr,
            &n.to_string(),
            &CONNECT_TIMEOUT_MS.to_string(),
        ],
    );
    let mut words = text.split_whitespace();
    let outcome = words.next().unwrap_or("none").to_owned();
    let ns: Vec<f64> = words.filter_map(|w| w.parse().ok()).collect();
    assert_eq!(ns.len() as u64, n, "client said {text}");
    (outcome, ns)
}

/// ns as µs, or ms from 10 ms on.
fn us(ns: f64) -> String {
    if ns >= 10e6 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

/// The client side: `udp ADDR N` (N connects of one socket), `tcp 127.0.0.1:0 N` (N connections
/// to its own listener), both printing ns per call; `hold ADDR N` (N connected sockets held,
/// printing the SUnreclaim growth in kB).
fn client(args: &[String]) {
    let (mode, addr, n) = (
        args[0].as_str(),
        args[1].parse::<SocketAddr>().expect("address"),
        args[2].parse::<u64>().expect("count"),
    );
    match mode {
        "udp" => {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            let t = Instant::now();
            for _ in 0..n {
                s.connect(addr).expect("connect");
            }
            println!("{}", t.elapsed().as_nanos() as f64 / n as f64);
        }
        "tcp" => {
            // One thread: connect (the handshake completes into the backlog), accept, close
            // both; a listener thread falling behind would overflow the backlog and time out.
            let l = TcpListener::bind(addr).expect("listen");
            let to = l.local_addr().expect("addr");
            let t = Instant::now();
            for _ in 0..n {
                let c = TcpStream::connect(to).expect("connect");
                // Closed with a RST: no TIME_WAIT, so the port search stays cheap over N.
                reset_on_close(&c);
                drop(l.accept().expect("accept"));
                drop(c);
            }
            println!("{}", t.elapsed().as_nanos() as f64 / n as f64);
        }
        "deny" => {
            let timeout = Duration::from_millis(args[3].parse().expect("timeout ms"));
            let mut outcomes: Vec<String> = Vec::new();
            let mut times = Vec::new();
            for _ in 0..n {
                let t = Instant::now();
                let r = TcpStream::connect_timeout(&addr, timeout);
                times.push(t.elapsed().as_nanos().to_string());
                let outcome = match r {
                    Ok(_) => "OK".to_owned(),
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => "TIMEOUT".to_owned(),
                    Err(e) => match e.raw_os_error() {
                        Some(libc::ECONNREFUSED) => "ECONNREFUSED".to_owned(),
                        Some(libc::EPERM) => "EPERM".to_owned(),
                        _ => e.to_string().replace(' ', "_"),
                    },
                };
                if !outcomes.contains(&outcome) {
                    outcomes.push(outcome);
                }
            }
            println!("{} {}", outcomes.join(","), times.join(" "));
        }
        "hold" => {
            raise_nofile(n + 100);
            let before = sunreclaim_kb();
            let socks: Vec<UdpSocket> = (0..n)
                .map(|_| {
                    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
                    s.connect(addr).expect("connect");
                    s
                })
                .collect();
            std::thread::sleep(Duration::from_millis(200));
            let after = sunreclaim_kb();
            drop(socks);
            println!("{}", after - before);
        }
        _ => panic!("unknown client mode {mode}"),
    }
}

fn reset_on_close(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a linger struct of the size given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

fn raise_nofile(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: a valid rlimit for the call to read.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

fn sunreclaim_kb() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("SUnreclaim:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0.0)
}

/// A hostNetwork pod (no addresses) allowed to reach the protected address; another one, and a
/// pod at 10.251.7.4, denied it.
fn repository() -> Repository {
    let text = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: hostnet-allow, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: hostnet}}
  egress:
    - toCIDR: [10.251.7.3/32]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: no-metadata, namespace: default}
spec:
  endpointSelector: {matchLabels: {metadata: denied}}
  egressDeny:
    - toCIDR: [10.251.7.3/32]
"#;
    let decoded = decode_source(&Source::new("policy.yaml", text), &DecodeOptions::default());
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    let mut repo = Repository::new(EngineOptions::default());
    repo.load(&decoded);
    repo.upsert_endpoint(EndpointSpec {
        name: "hostnet".to_owned(),
        namespace: "default".to_owned(),
        labels: vec![("app".to_owned(), "hostnet".to_owned())],
        ..Default::default()
    });
    for (name, ips) in [
        ("hostdeny", Vec::new()),
        ("denied", vec![IpAddr::V4(Ipv4Addr::new(10, 251, 7, 4))]),
    ] {
        repo.upsert_endpoint(EndpointSpec {
            name: name.to_owned(),
            namespace: "default".to_owned(),
            labels: vec![("metadata".to_owned(), "denied".to_owned())],
            ips,
            ..Default::default()
        });
    }
    repo.resolve();
    repo
}

/// (program, ns per run, runs) of each hook program.
type Cost = Vec<(&'static str, f64, u64)>;

/// Per-run cost of each hook program between two bpf_stats readings.
fn cost(
    before: &[(&'static str, Duration, u64)],
    after: &[(&'static str, Duration, u64)],
) -> Vec<(&'static str, f64, u64)> {
    after
        .iter()
        .filter(|(name, _, _)| name.starts_with("sock_"))
        .map(|(name, t, c)| {
            let (bt, bc) = before
                .iter()
                .find(|(b, _, _)| b == name)
                .map_or((Duration::ZERO, 0), |(_, t, c)| (*t, *c));
            let runs = c - bc;
            let ns = if runs == 0 {
                0.0
            } else {
                (*t - bt).as_nanos() as f64 / runs as f64
            };
            (*name, ns, runs)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The nearest-rank percentile `p` (0..1).
fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn median_cost(rounds: &[Vec<(&'static str, f64, u64)>]) -> Vec<(&'static str, f64, u64)> {
    let Some(first) = rounds.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|(name, _, runs)| {
            let ns: Vec<f64> = rounds
                .iter()
                .filter_map(|r| r.iter().find(|(n, _, _)| n == name).map(|(_, ns, _)| *ns))
                .collect();
            (*name, median(ns), *runs)
        })
        .collect()
}
