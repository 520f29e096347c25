//! Root integration tests: real namespaces ("pods"), veths, the datapath attached to the host
//! sides, and real curl and ping from inside the pods. The "metadata" server is a namespace of the
//! test's own, marked protected in the ipcache like 169.254.169.254; nothing leaves the machine
//! and no route of the machine is touched.

mod common;

use common::{Pins, attach, drain, http_ok, pod_ips, protect, skip, subnet, wait_for_http};
use imdsguard_datapath::abi::{self, Event};
use imdsguard_datapath::loader::{Datapath, Options};
use imdsguard_datapath::sync::{SyncOptions, TableSync};
use imdsguard_manifest::Source;
use imdsguard_netns::{Pod, Process, can_create_namespaces, unique_name};
use imdsguard_policy::{DecodeOptions, EndpointSpec, Repository, decode_source};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

struct Lab {
    a: Pod,
    b: Pod,
    server: Pod,
    _http: Process,
    pins: Pins,
}

const POLICIES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-no-metadata, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egressDeny:
    - toCIDR: [SERVER/32]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-to-server, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: b}}
  egress:
    - toCIDR: [SERVER/32, SERVER6/128]
      toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
    - toCIDR: [SERVER/32]
      icmps: [{fields: [{type: 8}]}]
"#;

fn lab() -> Option<Lab> {
    if !can_create_namespaces() {
        skip("creating network namespaces needs root");
        return None;
    }
    let (k, n) = subnet(200, 50);
    let v6 = |h: u16| Ipv6Addr::new(0xfd00, 0x1e, u16::from(k), u16::from(n), 0, 0, 0, h);
    let a =
        Pod::create(&unique_name("iga"), Ipv4Addr::new(10, k, n, 2), Some(v6(2))).expect("pod a");
    let b =
        Pod::create(&unique_name("igb"), Ipv4Addr::new(10, k, n, 3), Some(v6(3))).expect("pod b");
    let server =
        Pod::create(&unique_name("igs"), Ipv4Addr::new(10, k, n, 4), Some(v6(4))).expect("server");
    let http = server
        .ns
        .spawn("python3", &["-m", "http.server", "8080", "--bind", "::"])
        .expect("python3 http.server");
    let pins = Pins::new("igbpf");
    let lab = Lab {
        a,
        b,
        server,
        _http: http,
        pins,
    };
    // Every packet the test sends must stay on the test's own veths.
    for pod in [&lab.a, &lab.b] {
        assert_eq!(
            pod.ns.route_dev(lab.server.ipv4.into()).expect("route"),
            "eth0"
        );
    }
    wait_for_http(&lab.b, &lab.server);
    Some(lab)
}

fn ping(from: &Pod, to: IpAddr) -> bool {
    from.ns
        .exec("ping", &["-c", "1", "-W", "1", &to.to_string()])
        .expect("ping")
        .status
        .success()
}

fn repository(lab: &Lab) -> Repository {
    repository_with(lab, POLICIES)
}

fn repository_with(lab: &Lab, policies: &str) -> Repository {
    let endpoints = [("a", pod_ips(&lab.a)), ("b", pod_ips(&lab.b))];
    common::repository(&lab.server, policies, &endpoints)
}

fn sync_options(lab: &Lab) -> SyncOptions {
    protect(&lab.server)
}

fn open(lab: &Lab) -> Datapath {
    Datapath::open(&Options {
        bpf_root: lab.pins.0.clone(),
        ..Default::default()
    })
    .expect("load the datapath")
}

fn from(events: &[Event], ip: Ipv4Addr) -> Vec<Event> {
    let addr = abi::Addr::from(ip);
    events.iter().filter(|e| e.saddr == addr).copied().collect()
}

#[test]
fn enforces_egress_policy_with_verdicts_and_survives_a_restart() {
    let Some(lab) = lab() else { return };
    let repo = repository(&lab);
    let mut dp = open(&lab);
    let mut sync = TableSync::new(sync_options(&lab));
    sync.sync(&repo, &mut dp).expect("sync");
    for pod in [&lab.a, &lab.b] {
        let att = attach(&mut dp, pod).expect("attach");
        assert!(
            att.iter()
                .all(|a| a.position == Some(0) && a.chain_len == 1),
            "{att:?}"
        );
    }
    let mut events = dp.take_events().expect("events");
    let server = IpAddr::V4(lab.server.ipv4);

    // a: the deny policy (drop reason 181, "denied by denylist"); b: allowed on 8080, L3-L4.
    assert!(!http_ok(&lab.a, server), "a reached the protected server");
    assert!(http_ok(&lab.b, server), "b could not reach the server");
    // b: IPv6 too, and ICMP echo (the reply passes by connection tracking).
    assert!(http_ok(&lab.b, IpAddr::V6(lab.server.ipv6.expect("v6"))));
    assert!(ping(&lab.b, server), "b's ping was not allowed");
    // a's ping is denied too: the deny names no ports, so it covers every protocol.
    assert!(!ping(&lab.a, server), "a's ping reached the denied CIDR");

    let evs = drain(&mut events);
    let a_events = from(&evs, lab.a.ipv4);
    let verdict = a_events
        .iter()
        .find(|e| e.kind == abi::EV_POLICY_VERDICT)
        .expect("a policy verdict for a");
    assert_eq!(
        (verdict.verdict, verdict.match_type, verdict.dir),
        (2, 1, abi::DIR_EGRESS)
    );
    assert_eq!(
        sync.rule_ids
            .policy(verdict.rule_id)
            .map(|p| p.name.to_string()),
        Some("a-no-metadata".to_owned())
    );
    let dropped = a_events
        .iter()
        .find(|e| e.kind == abi::EV_DROP)
        .expect("a drop event for a");
    assert_eq!(
        (dropped.sub_type, dropped.dport, dropped.tcp_flags & 0x02),
        (181, 8080, 0x02)
    );
    let b_events = from(&evs, lab.b.ipv4);
    let allowed = b_events
        .iter()
        .find(|e| e.kind == abi::EV_POLICY_VERDICT && e.proto == 6)
        .expect("a policy verdict for b");
    assert_eq!((allowed.verdict, allowed.match_type), (1, 2));
    assert_eq!(
        sync.rule_ids
            .policy(allowed.rule_id)
            .map(|p| p.name.to_string()),
        Some("b-to-server".to_owned())
    );
    // The reply direction is traced as a reply, once per connection start.
    assert!(
        evs.iter().any(|e| e.kind == abi::EV_TRACE && e.is_reply),
        "no reply trace: {evs:?}"
    );
    let counters: std::collections::HashMap<_, _> =
        dp.counters().expect("counters").into_iter().collect();
    assert!(
        counters["denied"] >= 2 && counters["allowed"] >= 3,
        "{counters:?}"
    );

    // The agent goes away (SIGKILL drops the same way): the pinned links keep enforcing.
    drop(events);
    drop(dp);
    assert!(
        !http_ok(&lab.a, server),
        "a reached the server with no agent running"
    );
    assert!(
        http_ok(&lab.b, server),
        "b lost access with no agent running"
    );

    // A new agent adopts the pins: no second program in the chain, the same verdicts.
    let mut dp = open(&lab);
    let mut sync = TableSync::new(sync_options(&lab));
    sync.sync(&repo, &mut dp).expect("sync after restart");
    for pod in [&lab.a, &lab.b] {
        let att = attach(&mut dp, pod).expect("adopt");
        assert!(
            att.iter()
                .all(|a| a.position == Some(0) && a.chain_len == 1),
            "{att:?}"
        );
    }
    assert!(!http_ok(&lab.a, server));
    assert!(http_ok(&lab.b, server));
    // Detaching an adopted link really takes the programs off (the agent must not keep a
    // reference of its own beside the pin).
    dp.detach(&lab.a.host_if).expect("detach");
    let chains = dp.attachments(&lab.a.host_if).expect("chains");
    assert!(
        chains
            .iter()
            .all(|a| a.position.is_none() && a.chain_len == 0),
        "{chains:?}"
    );
    attach(&mut dp, &lab.a).expect("attach again");
    assert!(
        !http_ok(&lab.a, server),
        "a reached the server after a re-attach"
    );
}

#[test]
fn a_pod_without_policy_is_closed_for_metadata_until_its_policy_lands() {
    let Some(lab) = lab() else { return };
    let mut repo = repository(&lab);
    let mut dp = open(&lab);
    let mut sync = TableSync::new(sync_options(&lab));
    sync.sync(&repo, &mut dp).expect("sync");
    attach(&mut dp, &lab.a).expect("attach");
    // A new pod c appears on a's interface address space before the engine resolved it: simulate
    // it by registering the endpoint as pending.
    let c_ip = IpAddr::V4(lab.a.ipv4);
    dp.add_pending_endpoint(&[c_ip], 99, 12345)
        .expect("pending endpoint");
    let server = IpAddr::V4(lab.server.ipv4);
    assert!(
        !http_ok(&lab.a, server),
        "a pending pod reached a metadata address"
    );
    // Its policy lands (here: no policy selects it any more, so egress is open).
    repo.remove_endpoint("default", "a");
    repo.resolve();
    repo.upsert_endpoint(EndpointSpec {
        name: "c".to_owned(),
        namespace: "default".to_owned(),
        labels: vec![("app".to_owned(), "c".to_owned())],
        ips: vec![c_ip],
        ..Default::default()
    });
    repo.resolve();
    sync.sync(&repo, &mut dp).expect("sync");
    assert!(
        http_ok(&lab.a, server),
        "c could not reach the server once its policy was in place"
    );
}

#[test]
fn audit_mode_lets_denials_pass_and_reports_them() {
    let Some(lab) = lab() else { return };
    let repo = repository(&lab);
    let mut dp = open(&lab);
    // Per endpoint: only a is audited.
    let mut opts = sync_options(&lab);
    opts.audit_endpoints.insert("default/a".to_owned());
    let mut sync = TableSync::new(opts);
    sync.sync(&repo, &mut dp).expect("sync");
    attach(&mut dp, &lab.a).expect("attach");
    let mut events = dp.take_events().expect("events");
    let server = IpAddr::V4(lab.server.ipv4);
    let passed = http_ok(&lab.a, server);
    let evs = drain(&mut events);
    assert!(passed, "audit mode still dropped a's connection: {evs:?}");
    let verdicts: Vec<u8> = from(&evs, lab.a.ipv4)
        .iter()
        .filter(|e| e.kind == abi::EV_POLICY_VERDICT)
        .map(|e| e.verdict)
        .collect();
    assert_eq!(verdicts, [6], "{evs:?}");
    assert!(
        !from(&evs, lab.a.ipv4)
            .iter()
            .any(|e| e.kind == abi::EV_DROP)
    );
    // Audit off again: the deny is back for new connections.
    sync.set_audit_endpoints(Default::default());
    sync.sync(&repo, &mut dp).expect("sync");
    assert!(
        !http_ok(&lab.a, server),
        "the deny did not come back after audit mode"
    );
}

/// a: an enforcing deny of ICMP echo to the server and an audit-mode deny of the whole server
/// (so a's ping is denied by both); b: an audit-mode allow-only policy (its default deny is
/// audited).
const AUDIT_POLICIES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-no-ping, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: a}}
  enableDefaultDeny: {egress: false}
  egressDeny:
    - toCIDR: [SERVER/32]
      icmps: [{fields: [{type: 8}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: a-audit-server
  namespace: default
  annotations: {policy.imdsguard.io/audit-mode: "true"}
spec:
  endpointSelector: {matchLabels: {app: a}}
  enableDefaultDeny: {egress: false}
  egressDeny:
    - toCIDR: [SERVER/32, SERVER6/128]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: b-audit-allow-only
  namespace: default
  annotations: {policy.imdsguard.io/audit-mode: "true"}
spec:
  endpointSelector: {matchLabels: {app: b}}
  egress:
    - toCIDR: [SERVER/32]
      toPorts: [{ports: [{port: "9999", protocol: TCP}]}]
"#;

#[test]
fn an_audit_policy_lets_its_denials_pass_while_an_enforcing_deny_still_drops() {
    let Some(lab) = lab() else { return };
    let repo = repository_with(&lab, AUDIT_POLICIES);
    let mut dp = open(&lab);
    let mut sync = TableSync::new(sync_options(&lab));
    sync.sync(&repo, &mut dp).expect("sync");
    for pod in [&lab.a, &lab.b] {
        attach(&mut dp, pod).expect("attach");
    }
    let mut events = dp.take_events().expect("events");
    let server = IpAddr::V4(lab.server.ipv4);
    let name = |rule_id: u32| sync.rule_ids.policy(rule_id).map(|p| p.name.to_string());

    // a's HTTP: only the audit policy denies it: it passes, reported AUDIT (181) naming it.
    let passed = http_ok(&lab.a, server);
    let evs = drain(&mut events);
    assert!(passed, "an audit-mode deny dropped a's connection: {evs:?}");
    let a_verdicts: Vec<Event> = from(&evs, lab.a.ipv4)
        .into_iter()
        .filter(|e| e.kind == abi::EV_POLICY_VERDICT)
        .collect();
    assert_eq!(a_verdicts.len(), 1, "{evs:?}");
    let v = a_verdicts[0];
    assert_eq!((v.verdict, v.sub_type, v.match_type), (6, 181, 1), "{v:?}");
    assert_eq!(name(v.rule_id), Some("a-audit-server".to_owned()));
    assert!(
        !from(&evs, lab.a.ipv4)
            .iter()
            .any(|e| e.kind == abi::EV_DROP)
    );

    // a's ping: the enforcing deny drops it, although the audit policy denies it too.
    assert!(!ping(&lab.a, server), "a's ping passed an enforcing deny");
    let evs = drain(&mut events);
    let drop = from(&evs, lab.a.ipv4)
        .into_iter()
        .find(|e| e.kind == abi::EV_POLICY_VERDICT)
        .expect("a verdict for a's ping");
    assert_eq!((drop.verdict, drop.proto), (2, 1), "{drop:?}");
    assert_eq!(name(drop.rule_id), Some("a-no-ping".to_owned()));
    assert!(
        from(&evs, lab.a.ipv4)
            .iter()
            .any(|e| e.kind == abi::EV_DROP && e.sub_type == 181)
    );

    // b: only an audit allow-only policy selects it; its default deny is audited (133).
    let passed = http_ok(&lab.b, server);
    let evs = drain(&mut events);
    assert!(passed, "an audit policy's default deny dropped b: {evs:?}");
    let v = from(&evs, lab.b.ipv4)
        .into_iter()
        .find(|e| e.kind == abi::EV_POLICY_VERDICT)
        .expect("an AUDIT verdict for b");
    assert_eq!((v.verdict, v.sub_type, v.match_type), (6, 133, 0), "{v:?}");
    assert_eq!(name(v.rule_id), Some("b-audit-allow-only".to_owned()));
    let counters: std::collections::HashMap<_, _> =
        dp.counters().expect("counters").into_iter().collect();
    assert!(
        counters["audited"] >= 2 && counters["denied"] >= 1,
        "{counters:?}"
    );
}

const INGRESS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server-ingress, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: a}}]
      toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  egress:
    - toCIDR: [192.0.2.1/32]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-http-only, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
    - toEndpoints: [{matchLabels: {app: b}}]
    - toCIDR: [SERVER/32]
      toPorts:
        - ports: [{port: "8080", protocol: TCP}]
          rules: {http: [{method: GET}]}
"#;

#[test]
fn ingress_policy_replies_and_a_missing_proxy() {
    let Some(lab) = lab() else { return };
    // b serves too, so that a can be its client.
    let _b_http = lab
        .b
        .ns
        .spawn("python3", &["-m", "http.server", "8080", "--bind", "::"])
        .expect("b's server");
    let repo = repository_with(&lab, INGRESS);
    let mut dp = open(&lab);
    let mut sync = TableSync::new(sync_options(&lab));
    sync.sync(&repo, &mut dp).expect("sync");
    for pod in [&lab.a, &lab.b] {
        attach(&mut dp, pod).expect("attach");
    }
    let mut events = dp.take_events().expect("events");
    let b = IpAddr::V4(lab.b.ipv4);
    // a -> b:8080 is allowed by b's ingress, and b's replies pass its egress default deny.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_ok(&lab.a, b) {
        assert!(Instant::now() < deadline, "a never reached b");
    }
    // The server has no ingress allow for b's peers other than a: b -> a is b's egress, denied.
    assert!(
        !http_ok(&lab.b, IpAddr::V4(lab.a.ipv4)),
        "b's egress default deny let it out"
    );
    let evs = drain(&mut events);
    let ingress_allowed = evs.iter().any(|e| {
        e.kind == abi::EV_POLICY_VERDICT
            && e.dir == abi::DIR_INGRESS
            && e.verdict == 1
            && e.daddr == abi::Addr::from(lab.b.ipv4)
    });
    assert!(ingress_allowed, "no ingress verdict for a -> b: {evs:?}");
    assert!(
        evs.iter().any(|e| e.kind == abi::EV_TRACE
            && e.is_reply
            && e.saddr == abi::Addr::from(lab.b.ipv4)),
        "b's reply was not traced as a reply"
    );
    // a -> server:8080 has HTTP rules: redirected to the proxy, which is not running. The
    // connection is dropped (socket lookup failed), never passed.
    assert!(
        !http_ok(&lab.a, IpAddr::V4(lab.server.ipv4)),
        "passed without the proxy"
    );
    let evs = drain(&mut events);
    let verdict = from(&evs, lab.a.ipv4)
        .into_iter()
        .find(|e| e.kind == abi::EV_POLICY_VERDICT)
        .expect("a verdict for the redirect");
    assert_eq!((verdict.verdict, verdict.proxy_port), (5, 15001));
    assert!(
        from(&evs, lab.a.ipv4)
            .iter()
            .any(|e| e.kind == abi::EV_DROP && e.sub_type == 178),
        "no 'Socket lookup failed' drop: {evs:?}"
    );
    let counters: std::collections::HashMap<_, _> =
        dp.counters().expect("counters").into_iter().collect();
    assert!(counters["proxy_down"] >= 1, "{counters:?}");
}

const ECHO_SERVER: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9090))
s.listen(8)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    try:
        while (d := c.recv(64)):
            c.sendall(d)
    except OSError:
        pass
    c.close()
"#;

const ECHO_CLIENT: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], 9090), timeout=2)
s.sendall(b"first\n")
print(s.recv(64).decode().strip(), flush=True)
sys.stdin.readline()
try:
    s.sendall(b"second\n")
    print(s.recv(64).decode().strip() or "closed", flush=True)
except OSError as e:
    print("failed:", e, flush=True)
"#;

const B_ECHO: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-echo, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: b}}
  egress:
    - toCIDR: [SERVER/32]
      toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
"#;

const B_DENY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-deny, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: b}}
  egressDeny:
    - toCIDR: [SERVER/32]
"#;

#[test]
fn a_new_deny_cuts_an_established_connection() {
    use std::io::{BufRead, BufReader, Write};
    let Some(lab) = lab() else { return };
    let _echo = lab
        .server
        .ns
        .spawn("python3", &["-c", ECHO_SERVER])
        .expect("echo server");
    let mut repo = repository_with(&lab, B_ECHO);
    let mut dp = open(&lab);
    let mut sync = TableSync::new(sync_options(&lab));
    sync.sync(&repo, &mut dp).expect("sync");
    attach(&mut dp, &lab.b).expect("attach");
    std::thread::sleep(Duration::from_millis(300));
    let mut client = imdsguard_netns::Process(
        lab.b
            .ns
            .command("python3")
            .args(["-c", ECHO_CLIENT, &lab.server.ipv4.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("echo client"),
    );
    let mut out = BufReader::new(client.0.stdout.take().expect("stdout")).lines();
    assert_eq!(out.next().and_then(Result::ok).as_deref(), Some("first"));
    // The policy changes under the open connection.
    let deny = B_DENY.replace("SERVER", &lab.server.ipv4.to_string());
    let decoded = decode_source(&Source::new("deny.yaml", deny), &DecodeOptions::default());
    repo.load(&decoded);
    repo.resolve();
    sync.sync(&repo, &mut dp).expect("sync");
    let mut stdin = client.0.stdin.take().expect("stdin");
    writeln!(stdin).expect("go on");
    let second = out.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        second.starts_with("failed"),
        "the connection survived the deny: {second:?}"
    );
}

/// Hand-built frames, as a hostile pod (or a forged reply) puts them on an interface.
const PACKETS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/hostile/packets.py"
);

#[test]
fn a_packet_from_a_protected_address_never_makes_the_pods_connection_a_reply() {
    let Some(lab) = lab() else { return };
    let repo = repository(&lab);
    let mut dp = open(&lab);
    let mut sync = TableSync::new(sync_options(&lab));
    sync.sync(&repo, &mut dp).expect("sync");
    attach(&mut dp, &lab.a).expect("attach");
    let server = IpAddr::V4(lab.server.ipv4);
    assert!(!http_ok(&lab.a, server), "a reached the protected server");
    // A SYN-ACK from the protected address's port 8080 to a port of a's own arrives at a (the
    // server needs no spoofing: it is the metadata address). a then connects from that port.
    let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", lab.server.host_if))
        .expect("mac");
    let out = lab
        .server
        .ns
        .exec(
            "python3",
            &[
                PACKETS,
                mac.trim(),
                "synack",
                &format!("src={}", lab.server.ipv4),
                &format!("dst={}", lab.a.ipv4),
                "sport=8080",
                "dport=43211",
            ],
        )
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let connected = lab
        .a
        .ns
        .exec(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "2",
                "--local-port",
                "43211",
                &format!("http://{server}:8080/"),
            ],
        )
        .expect("curl")
        .status
        .success();
    assert!(
        !connected,
        "a packet from the metadata address turned a's denied connection into a reply"
    );
}
