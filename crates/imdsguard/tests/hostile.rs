//! Root tests of a pod that attacks the datapath on purpose: root in its own network namespace
//! with CAP_NET_RAW, writing whole frames onto its interface (tests/hostile/packets.py). The
//! ground truth is a capture in the server's namespace (tests/hostile/capture.py): an attack
//! fails when none of its frames arrive there, and each case has a control, the same frames from
//! a pod that may send them, which must arrive (so silence means the datapath dropped them).
//! Pods, server and routes are the test's own namespaces; no machine route changes.

mod common;

use common::agent::{Agent, BpfRoot, TempDir, agent_test, eventually, write};
use imdsguard_netns::{Pod, unique_name};
use std::io::BufRead as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PACKETS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/hostile/packets.py"
);
const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/hostile/capture.py"
);

/// Every frame that reached the server's eth0, as hex, collected in the background.
struct Capture {
    child: Child,
    frames: Arc<Mutex<Vec<String>>>,
}

impl Capture {
    fn start(server: &Pod) -> Capture {
        let mut child = server
            .ns
            .command("python3")
            .args(["-u", CAPTURE])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the capture");
        let frames = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("capture stdout");
        let sink = frames.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line == "capturing" {
                    let _ = tx.send(());
                } else if let Ok(mut f) = sink.lock() {
                    f.push(line);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the capture started");
        Capture { child, frames }
    }

    fn saw(&self, hex: &str) -> bool {
        self.frames
            .lock()
            .is_ok_and(|f| f.iter().any(|l| l.contains(hex)))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A marker no other frame carries, and its hex as the capture prints it.
fn marker(case: &str) -> (String, String) {
    let m = format!("HOSTILE-{case}-{}", std::process::id());
    let h = hex(m.as_bytes());
    (m, h)
}

fn host_mac(pod: &Pod) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{}/address", pod.host_if))
        .expect("host-side MAC")
        .trim()
        .to_owned()
}

/// Puts hand-built frames on `pod`'s interface.
fn send(pod: &Pod, case: &str, args: &[String]) {
    let mut all = vec![PACKETS.to_owned(), host_mac(pod), case.to_owned()];
    all.extend(args.iter().cloned());
    let argv: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = pod.ns.exec("python3", &argv).expect("python3");
    assert!(
        out.status.success(),
        "packets.py {case}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kv(k: &str, v: impl std::fmt::Display) -> String {
    format!("{k}={v}")
}

/// Sends the attack from `attacker` and the same frames as the control from `control` (with its
/// own addresses), waits until the control arrives, then checks the attack never did.
fn attack_fails(
    cap: &Capture,
    case: &str,
    attacker: (&Pod, Vec<String>),
    control: Option<(&Pod, Vec<String>)>,
    kind: &str,
) {
    let (m, mhex) = marker(case);
    let mut args = attacker.1;
    args.push(kv("marker", &m));
    send(attacker.0, kind, &args);
    if let Some((pod, mut args)) = control {
        let (cm, chex) = marker(&format!("{case}-control"));
        args.push(kv("marker", &cm));
        // The control may be lost once to a neighbour resolution on a fresh path: resend.
        eventually(&format!("the control of {case} reaches the server"), || {
            send(pod, kind, &args);
            std::thread::sleep(Duration::from_millis(100));
            cap.saw(&chex)
        });
    } else {
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        !cap.saw(&mhex),
        "{case}: the attacker's frames reached the server"
    );
}

fn policies(s4: Ipv4Addr, s6: Ipv6Addr) -> String {
    // a may reach the server, but never on TCP/80 (the seed's deny, narrowed to a port, which
    // makes the verdict depend on the ports a fragment may hide); b may reach all of it.
    format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: a-no-http, namespace: default}}
spec:
  endpointSelector: {{matchLabels: {{app: a}}}}
  egressDeny:
    - toCIDR: [{s4}/32, {s6}/128]
      toPorts: [{{ports: [{{port: "80", protocol: TCP}}]}}]
  egress:
    - toCIDR: [{s4}/32, {s6}/128]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: b-to-server, namespace: default}}
spec:
  endpointSelector: {{matchLabels: {{app: b}}}}
  egress:
    - toCIDR: [{s4}/32, {s6}/128]
"#
    )
}

fn endpoint_line(name: &str, pod: &Pod) -> String {
    let v6 = pod.ipv6.map(|v| format!(", {v}")).unwrap_or_default();
    format!(
        "  - {{name: {name}, labels: {{app: {name}}}, ips: [{}{v6}], interface: {}}}\n",
        pod.ipv4, pod.host_if
    )
}

fn agent_args(policies: &str, endpoints: &str, bpf_root: &str) -> Vec<String> {
    [
        "--policies",
        policies,
        "--endpoints",
        endpoints,
        "--bpf-root",
        bpf_root,
        "--hubble-listen-address",
        "127.0.0.1:0",
        "--node-name",
        "lab-node",
        "--reload-interval",
        "100ms",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn status_json(bpf_root: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(["status", "--bpf-root", bpf_root, "-o", "json"])
        .output()
        .expect("status");
    serde_json::from_slice(&out.stdout).expect("status -o json")
}

fn counter(bpf_root: &str, name: &str) -> u64 {
    status_json(bpf_root)["counters"][name]
        .as_u64()
        .unwrap_or(0)
}

fn curl_ok(from: &Pod, url: &str, extra: &[&str]) -> bool {
    let mut args = vec!["-s", "-g", "-o", "/dev/null", "--max-time", "2"];
    args.extend(extra);
    args.push(url);
    from.ns.exec("curl", &args).expect("curl").status.success()
}

#[test]
fn a_hostile_pod_never_reaches_what_its_policy_denies() {
    let Some((_serial, _routing, k)) = agent_test() else {
        return;
    };
    let v6 = |host: u16| Ipv6Addr::new(0xfd00, 0x1e57, u16::from(k), 0, 0, 0, 0, host);
    let a = Pod::create(&unique_name("hsa"), Ipv4Addr::new(10, k, 7, 2), Some(v6(2))).expect("a");
    let b = Pod::create(&unique_name("hsb"), Ipv4Addr::new(10, k, 7, 3), Some(v6(3))).expect("b");
    let s = Pod::create(&unique_name("hss"), Ipv4Addr::new(10, k, 7, 4), Some(v6(4))).expect("s");
    let (s4, s6) = (s.ipv4, v6(4));
    // Our own routes, checked before any traffic: the server is reached through its veth, from
    // the node and from both pods.
    for dst in [IpAddr::V4(s4), IpAddr::V6(s6)] {
        let out = imdsguard_netns::run("ip", &["route", "get", &dst.to_string()]).expect("route");
        assert_eq!(
            imdsguard_netns::route_dev(&out).as_deref(),
            Some(s.host_if.as_str()),
            "{out}"
        );
        for pod in [&a, &b] {
            assert_eq!(pod.ns.route_dev(dst).expect("route"), "eth0");
        }
    }
    let _http =
        s.ns.spawn("python3", &["-m", "http.server", "80", "--bind", "::"])
            .expect("server");
    let cap = Capture::start(&s);
    let url4 = format!("http://{s4}/");
    let url6 = format!("http://[{s6}]/");
    eventually("the server answers b", || curl_ok(&b, &url4, &[]));

    let dir = TempDir(std::env::temp_dir().join(unique_name("hsdir")));
    let policy_dir = dir.0.join("policies");
    std::fs::create_dir_all(&policy_dir).expect("mkdir");
    write(&policy_dir.join("p.yaml"), &policies(s4, s6));
    let endpoints = dir.0.join("endpoints.yaml");
    write(
        &endpoints,
        &format!(
            "endpoints:\n{}{}",
            endpoint_line("a", &a),
            endpoint_line("b", &b)
        ),
    );
    let bpf = BpfRoot(dir.0.join("bpf"));
    let bpf_root = bpf.0.to_string_lossy().into_owned();
    let args = agent_args(
        &policy_dir.to_string_lossy(),
        &endpoints.to_string_lossy(),
        &bpf_root,
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&args);
    agent.wait_log(&format!("attached to {}", a.host_if));
    agent.wait_log(&format!("attached to {}", b.host_if));
    eventually("a is denied HTTP and b allowed", || {
        !curl_ok(&a, &url4, &[]) && curl_ok(&b, &url4, &[])
    });
    assert!(!curl_ok(&a, &url6, &[]), "a reached the server over IPv6");
    assert!(
        curl_ok(&b, &url6, &[]),
        "b could not reach the server over IPv6"
    );

    let syn = |src: IpAddr, dst: IpAddr, sport: u16| {
        vec![
            kv("src", src),
            kv("dst", dst),
            kv("sport", sport),
            kv("dport", 80),
        ]
    };
    let (a4, a6, b4, b6) = (
        IpAddr::V4(a.ipv4),
        IpAddr::V6(v6(2)),
        IpAddr::V4(b.ipv4),
        IpAddr::V6(v6(3)),
    );
    let (s4i, s6i) = (IpAddr::V4(s4), IpAddr::V6(s6));

    // 1. A spoofed source: a writes b's address (b may reach TCP/80), IPv4 and IPv6.
    attack_fails(
        &cap,
        "spoof4",
        (&a, syn(b4, s4i, 41001)),
        Some((&b, syn(b4, s4i, 41002))),
        "syn",
    );
    attack_fails(
        &cap,
        "spoof6",
        (&a, syn(b6, s6i, 41003)),
        Some((&b, syn(b6, s6i, 41004))),
        "syn",
    );
    // ... and through the pod's own stack, with b's address added inside the pod.
    a.ns.ip(&["addr", "add", &format!("{b4}/32"), "dev", "eth0"])
        .expect("add b's address in a");
    let spoofed = curl_ok(&a, &url4, &["--interface", &b4.to_string()]);
    let _ =
        a.ns.ip(&["addr", "del", &format!("{b4}/32"), "dev", "eth0"]);
    assert!(!spoofed, "a reached the server with b's address");

    // 2. A forged reply: a writes a SYN-ACK "from" the server's port 80 to a port of its own,
    // then connects from that port: the connection must be judged, and denied.
    send(
        &a,
        "synack",
        &[
            kv("src", s4i),
            kv("dst", a4),
            kv("sport", 80),
            kv("dport", 43210),
        ],
    );
    assert!(
        !curl_ok(&a, &url4, &["--local-port", "43210"]),
        "a forged reply opened a's connection to the server"
    );
    let from_port = format!(
        "{}{}{:04x}0050",
        hex(&a.ipv4.octets()),
        hex(&s4.octets()),
        43210
    );
    assert!(
        !cap.saw(&from_port),
        "a's SYN from port 43210 reached the server"
    );

    // 3. Fragments: the ports hidden after the first 8 or 16 bytes of the TCP header, and a
    // later fragment alone.
    for (case, first) in [("frag4-8", 8), ("frag4-16", 16)] {
        let mut atk = syn(a4, s4i, 42001 + first);
        atk.push(kv("first", first));
        let mut ctl = syn(b4, s4i, 42101 + first);
        ctl.push(kv("first", first));
        attack_fails(&cap, case, (&a, atk), Some((&b, ctl)), "frag");
    }
    let mut later = syn(a4, s4i, 42201);
    later.push(kv("only", "later"));
    attack_fails(&cap, "frag4-later", (&a, later), None, "frag");
    let mut atk6 = syn(a6, s6i, 42301);
    atk6.push(kv("first", 8));
    let mut ctl6 = syn(b6, s6i, 42302);
    ctl6.push(kv("first", 8));
    attack_fails(&cap, "frag6-8", (&a, atk6), Some((&b, ctl6)), "frag");

    // IPv6 extension headers are walked to the real TCP header: a's denied SYN behind
    // hop-by-hop and destination options is still judged on port 80; b's passes.
    let mut ext_a = syn(a6, s6i, 42401);
    ext_a.push(kv("chain", "0,60"));
    let mut ext_b = syn(b6, s6i, 42402);
    ext_b.push(kv("chain", "0,60"));
    attack_fails(&cap, "ext6", (&a, ext_a), Some((&b, ext_b)), "ext6");
    // A routing header with a segment left to visit hides the real destination: dropped even
    // for b.
    let mut rh = syn(b6, s6i, 42403);
    rh.push(kv("chain", "43"));
    attack_fails(&cap, "rh6", (&b, rh), None, "ext6");

    // 4. VLAN tags and unknown ethertypes: never passed on unjudged.
    let before = counter(&bpf_root, "unsupported_l3");
    let mut vlan = syn(a4, s4i, 42501);
    vlan.push(kv("vlans", 2));
    let mut vlan_b = syn(b4, s4i, 42502);
    vlan_b.push(kv("vlans", 2));
    attack_fails(&cap, "vlan-a", (&a, vlan), None, "syn");
    attack_fails(&cap, "vlan-b", (&b, vlan_b), None, "syn");
    // One tag the kernel takes off before the datapath runs: still never judged as the packet
    // inside it.
    let mut vlan1 = syn(b4, s4i, 42503);
    vlan1.push(kv("vlans", 1));
    attack_fails(&cap, "vlan1-b", (&b, vlan1), None, "syn");
    send(&a, "ethertype", &[kv("type", "0x88b5")]);
    eventually("the unknown L3 frames are counted", || {
        counter(&bpf_root, "unsupported_l3") >= before + 4
    });

    // A first fragment too short to carry the ports is refused, not judged as port 0.
    let before = counter(&bpf_root, "fragment_dropped");
    let mut tiny = syn(b4, s4i, 42601);
    tiny.extend([kv("first", 2), kv("only", "first")]);
    attack_fails(&cap, "tiny-first", (&b, tiny), None, "frag");
    eventually("the tiny first fragment is counted", || {
        counter(&bpf_root, "fragment_dropped") > before
    });

    // What a is allowed still works for it: UDP to the server.
    let (m, mhex) = marker("a-udp");
    eventually("a's allowed UDP reaches the server", || {
        send(
            &a,
            "udp",
            &[
                kv("src", a4),
                kv("dst", s4i),
                kv("dport", 9999),
                kv("marker", &m),
            ],
        );
        std::thread::sleep(Duration::from_millis(100));
        cap.saw(&mhex)
    });

    // The operator sees each defence act, with Cilium's drop reasons.
    let flows = agent.observe();
    for want in [
        "Invalid source ip DROPPED",
        "First logical datagram fragment not found DROPPED",
        "Invalid IPv6 extension header DROPPED",
        "Unsupported L3 protocol DROPPED",
        "VLAN traffic disallowed by VLAN filter DROPPED",
        "Policy denied by denylist DROPPED",
    ] {
        assert!(flows.contains(want), "no {want:?} in:\n{flows}");
    }
    let st = status_json(&bpf_root);
    for c in ["invalid_source", "fragment_dropped", "invalid_packet"] {
        assert!(st["counters"][c].as_u64().unwrap_or(0) >= 1, "{c}: {st}");
    }
    drop(agent);
    drop(bpf);
}

fn pods_line(name: &str, namespace: &str, app: &str, pod: &Pod) -> String {
    format!(
        "  - {{name: {name}, namespace: {namespace}, labels: {{app: {app}}}, ip: {}, interface: {}}}\n",
        pod.ipv4, pod.host_if
    )
}

fn endpoint_ids(bpf_root: &str) -> std::collections::HashMap<String, u64> {
    status_json(bpf_root)["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["ip"].as_str()?.to_owned(), e["id"].as_u64()?)))
        .collect()
}

#[test]
fn restarts_and_broken_endpoint_files_never_open_a_denied_pod() {
    let Some((_serial, _routing, k)) = agent_test() else {
        return;
    };
    let pod = |p: &str, host: u8| {
        Pod::create(&unique_name(p), Ipv4Addr::new(10, k, 6, host), None).expect("pod")
    };
    let (batch, fluentbit, webapp, s) =
        (pod("hrb", 2), pod("hrf", 3), pod("hrw", 4), pod("hrs", 9));
    let _http =
        s.ns.spawn("python3", &["-m", "http.server", "80", "--bind", "0.0.0.0"])
            .expect("server");
    let url = format!("http://{}/", s.ipv4);
    eventually("the server answers", || curl_ok(&fluentbit, &url, &[]));

    let dir = TempDir(std::env::temp_dir().join(unique_name("hrdir")));
    let policy_dir = dir.0.join("policies");
    std::fs::create_dir_all(&policy_dir).expect("mkdir");
    // The seed's shape: logging may reach the server on TCP/80, the web app may not.
    write(
        &policy_dir.join("p.yaml"),
        &format!(
            r#"apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: allow-logging}}
spec:
  endpointSelector: {{matchLabels: {{app: fluentbit}}}}
  egress:
    - toCIDR: [{s}/32]
      toPorts: [{{ports: [{{port: "80", protocol: TCP}}]}}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: deny-web}}
spec:
  endpointSelector: {{matchLabels: {{app: webapp}}}}
  egressDeny:
    - toCIDR: [{s}/32]
"#,
            s = s.ipv4
        ),
    );
    let endpoints = dir.0.join("endpoints.yaml");
    let all = format!(
        "endpoints:\n{}{}{}",
        pods_line("batch", "a-batch", "batch", &batch),
        pods_line("fluentbit", "logging", "fluentbit", &fluentbit),
        pods_line("webapp", "web", "webapp", &webapp)
    );
    write(&endpoints, &all);
    let bpf = BpfRoot(dir.0.join("bpf"));
    let bpf_root = bpf.0.to_string_lossy().into_owned();
    let args = agent_args(
        &policy_dir.to_string_lossy(),
        &endpoints.to_string_lossy(),
        &bpf_root,
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Agent::start(&args);
    agent.wait_log(&format!("attached to {}", webapp.host_if));
    let enforced = |agent: &Agent, what: &str| {
        let mut last = (false, false);
        for _ in 0..40 {
            last = (curl_ok(&webapp, &url, &[]), curl_ok(&fluentbit, &url, &[]));
            if last == (false, true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "{what}: webapp reached the server: {}, fluentbit reached it: {}; the agent logged:\n{}",
            last.0,
            last.1,
            agent.logged()
        );
    };
    enforced(&agent, "at start");
    let ids = endpoint_ids(&bpf_root);

    // While no agent runs, batch is deleted and a new web pod is created.
    agent.kill();
    let late = pod("hrl", 5);
    let without_batch = format!(
        "endpoints:\n{}{}{}",
        pods_line("fluentbit", "logging", "fluentbit", &fluentbit),
        pods_line("webapp", "web", "webapp", &webapp),
        pods_line("late", "web", "webapp", &late)
    );
    write(&endpoints, &without_batch);
    drop(batch);
    assert!(
        !curl_ok(&webapp, &url, &[]),
        "webapp reached the server while no agent ran"
    );
    let agent = Agent::start(&args);
    agent.wait_log(&format!("attached to {}", late.host_if));
    // The restarted agent never hands webapp another pod's policy, not even for a moment.
    for _ in 0..5 {
        assert!(
            !curl_ok(&webapp, &url, &[]),
            "webapp reached the server after the restart"
        );
    }
    enforced(&agent, "after the restart");
    eventually("the new pod is denied", || !curl_ok(&late, &url, &[]));
    let after = endpoint_ids(&bpf_root);
    for p in [&fluentbit, &webapp] {
        let ip = p.ipv4.to_string();
        assert_eq!(after.get(&ip), ids.get(&ip), "{ip} changed its endpoint ID");
    }
    assert!(
        !after.contains_key(&Ipv4Addr::new(10, k, 6, 2).to_string()),
        "the deleted pod's endpoint stayed: {after:?}"
    );

    // An endpoints file that cannot be a whole document keeps the endpoints in force.
    let bad: [(&str, &[u8]); 4] = [
        ("empty", b""),
        ("binary", b"\x7fELF\x00\x01\x02\xff\xfe"),
        ("unparsable", b"endpoints: [ {name: fluentbit,"),
        ("no endpoints list", b"namespaces: {}\n"),
    ];
    for (n, (case, bytes)) in bad.iter().enumerate() {
        let tmp = endpoints.with_extension("tmp");
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, &endpoints).expect("rename");
        eventually(&format!("the {case} file is reported"), || {
            agent
                .logged()
                .matches("the endpoints in force stay")
                .count()
                > n
        });
        enforced(&agent, case);
    }

    // An in-place rewrite, held open half-way: the half that is there is a valid document
    // without webapp, which must never be read.
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&endpoints)
            .expect("open for rewrite");
        let (head, tail) =
            without_batch.split_at(without_batch.find("  - {name: webapp").unwrap_or(0));
        f.write_all(head.as_bytes()).expect("write head");
        f.flush().expect("flush");
        // Several reload intervals pass with the file half-written.
        for _ in 0..5 {
            assert!(
                !curl_ok(&webapp, &url, &[]),
                "a half-written file opened webapp"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        f.write_all(tail.as_bytes()).expect("write tail");
    }
    eventually("the rewritten file is read", || {
        agent.logged().matches("endpoints: 3 pod(s)").count() >= 2
    });
    enforced(&agent, "after the in-place rewrite");
    drop(agent);
    drop(bpf);
}

/// A policy-routing rule of the test's own (`from <pod> lookup <table>`), removed on drop.
struct SourceRule(String, String);

impl SourceRule {
    fn add(from: Ipv4Addr, table: &str) -> SourceRule {
        let from = format!("{from}/32");
        imdsguard_netns::run(
            "ip",
            &["rule", "add", "pref", "120", "from", &from, "lookup", table],
        )
        .expect("ip rule add");
        SourceRule(from, table.to_owned())
    }
}

impl Drop for SourceRule {
    fn drop(&mut self) {
        let _ = imdsguard_netns::run(
            "ip",
            &[
                "rule", "del", "pref", "120", "from", &self.0, "lookup", &self.1,
            ],
        );
    }
}

#[test]
fn a_veth_no_endpoint_names_is_guarded_in_standalone_mode() {
    let Some((_serial, _routing, k)) = agent_test() else {
        return;
    };
    // The metadata address lives in a namespace of the test's own, reached only through a
    // routing table that only the two pods' sources select (as the lab does).
    let table = (3100 + u32::from(k)).to_string();
    let imds = Ipv4Addr::new(169, 254, 169, 254);
    let s = Pod::create_routed(
        &unique_name("hgs"),
        imds,
        None,
        Some(table.parse().expect("table")),
    )
    .expect("imds namespace");
    let known = Pod::create(&unique_name("hgk"), Ipv4Addr::new(10, k, 5, 2), None).expect("pod");
    let unknown = Pod::create(&unique_name("hgu"), Ipv4Addr::new(10, k, 5, 3), None).expect("pod");
    let _rules = [
        SourceRule::add(known.ipv4, &table),
        SourceRule::add(unknown.ipv4, &table),
    ];
    for pod in [&known, &unknown] {
        let out = imdsguard_netns::run(
            "ip",
            &[
                "route",
                "get",
                &imds.to_string(),
                "from",
                &pod.ipv4.to_string(),
                "iif",
                &pod.host_if,
            ],
        )
        .expect("route get");
        assert_eq!(
            imdsguard_netns::route_dev(&out).as_deref(),
            Some(s.host_if.as_str()),
            "{out}"
        );
    }
    let _http =
        s.ns.spawn("python3", &["-m", "http.server", "80", "--bind", "0.0.0.0"])
            .expect("server");
    let url = format!("http://{imds}/");
    eventually("the stand-in answers", || {
        curl_ok(&known, &url, &[]) && curl_ok(&unknown, &url, &[])
    });

    let dir = TempDir(std::env::temp_dir().join(unique_name("hgdir")));
    let policy_dir = dir.0.join("policies");
    std::fs::create_dir_all(&policy_dir).expect("mkdir");
    let endpoints = dir.0.join("endpoints.yaml");
    write(
        &endpoints,
        &format!("endpoints:\n{}", endpoint_line("known", &known)),
    );
    let bpf = BpfRoot(dir.0.join("bpf"));
    let bpf_root = bpf.0.to_string_lossy().into_owned();
    let mut args = agent_args(
        &policy_dir.to_string_lossy(),
        &endpoints.to_string_lossy(),
        &bpf_root,
    );
    args.extend(["--unknown-veths".to_owned(), "guard".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&args);
    agent.wait_log(&format!("attached to {}", known.host_if));
    agent.wait_log(&format!("attached to {}", unknown.host_if));
    // No policy selects the known pod: it may reach the metadata address. The veth no endpoint
    // names may not, whatever source it uses.
    assert!(
        curl_ok(&known, &url, &[]),
        "the known pod lost the metadata address"
    );
    for _ in 0..3 {
        assert!(
            !curl_ok(&unknown, &url, &[]),
            "a veth no endpoint names reached the metadata address"
        );
    }
    assert!(counter(&bpf_root, "not_ready") >= 1);
    drop(agent);
    drop(bpf);
}
