//! Root lab tests of issue 18: which container and which process sent a flow, hostNetwork pods
//! under policy, and denied connects that fail at once. Real processes in the lab's cgroups
//! (`imdsguard lab`), real clients in the pods' namespaces, the agent's cgroup hooks attached at
//! the lab's cgroup subtree only (`--cgroup-root`), and the flows read back with
//! `imdsguard observe -o json`. Everything is removed on drop, also when a test fails.

mod common;

use common::agent::{Agent, BpfRoot, Seen, TempDir, agent_test, eventually, flows, show, write};
use common::lab::Lab;
use imdsguard_lab::lab::{self, LabState};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A command in a container of a lab pod (`lab exec POD -c CONTAINER`).
fn in_container(state: &LabState, pod: &str, container: Option<&str>, argv: &[&str]) -> Command {
    let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
    lab::exec_in(state, pod, container, &argv).expect("lab exec")
}

/// An HTTP GET with curl (or an alias of it) in a container; its exit code, stdout and how
/// long it took, and its pid.
fn get(
    state: &LabState,
    pod: &str,
    container: Option<&str>,
    program: &str,
    url: &str,
) -> (i32, String, Duration, u32) {
    let started = Instant::now();
    let child = in_container(
        state,
        pod,
        container,
        &[
            program,
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--connect-timeout",
            "2",
            "--max-time",
            "4",
            "-H",
            "Metadata: true",
            url,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("curl");
    // `ip netns exec` executes the client in place: the pid is the client's.
    let pid = child.id();
    let out: Output = child.wait_with_output().expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        started.elapsed(),
        pid,
    )
}

/// `get`, again while the emulator answers 429: it allows 5 requests a second, as Azure's IMDS
/// does, and hostNetwork pods and the node all call from the node's address.
fn get_admitted(
    state: &LabState,
    pod: &str,
    container: Option<&str>,
    program: &str,
    url: &str,
) -> (i32, String, Duration, u32) {
    for _ in 0..10 {
        let got = get(state, pod, container, program, url);
        if got.1 != "429" {
            return got;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    get(state, pod, container, program, url)
}

/// Waits up to 10 s for flows that `want` accepts; returns them all.
fn wait_flows(agent: &Agent, what: &str, want: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
    let mut last = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        last = flows(agent);
        if want(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "no flows {what}; the flows:\n{}\nthe agent:\n{}",
        show(&last),
        agent.logged()
    );
}

/// The agent's arguments for a lab: its endpoints file, the policies, a private bpffs, its
/// cgroup hooks at the lab's subtree, and `extra`.
fn agent_args(state: &LabState, dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--endpoints".into(),
        state.endpoints_file().to_string_lossy().into_owned(),
        "--policies".into(),
        dir.join("policies").to_string_lossy().into_owned(),
        "--bpf-root".into(),
        dir.join("bpf").to_string_lossy().into_owned(),
        "--cgroup-root".into(),
        state
            .cgroup_root
            .as_ref()
            .expect("the lab has cgroups")
            .to_string_lossy()
            .into_owned(),
        "--hubble-listen-address".into(),
        "127.0.0.1:0".into(),
        "--node-name".into(),
        "lab-node".into(),
        "--reload-interval".into(),
        "100ms".into(),
        "--proxy-upstream-mark".into(),
        format!("{:#x}", lab::LAB_MARK),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn start_agent(args: &[String], state: &LabState) -> Agent {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&args);
    for p in state.pods.iter().filter(|p| !p.host_network) {
        agent.wait_log(&format!("attached to {}", p.netns));
    }
    agent
}

/// The proxy routing removed on drop, and the machine-wide lock agent tests share. A tuple drops
/// its fields in order: the routing goes before the lock is released, or the next test would find
/// the rule in place, take it for another's, and leave it behind.
type Serial = (
    common::agent::ProxyRouting,
    std::sync::MutexGuard<'static, ()>,
);

/// Root, the routing lock, cgroup v2, and a directory for the test; None (skipped) otherwise.
fn setup(tag: &str) -> Option<(Serial, u8, TempDir)> {
    let (serial, routing, k) = agent_test()?;
    if imdsguard_lab::cgroups::v2_root().is_none() {
        common::skip("no cgroup v2 hierarchy for the lab's containers");
        return None;
    }
    let dir = TempDir(std::env::temp_dir().join(imdsguard_netns::unique_name(tag)));
    std::fs::create_dir_all(dir.0.join("policies")).expect("mkdir");
    Some(((routing, serial), k, dir))
}

const IMDS: &str = "169.254.169.254";
const INSTANCE: &str = "http://169.254.169.254/metadata/instance?api-version=2021-02-01";

#[test]
fn two_containers_in_a_pod_and_the_flows_name_the_sidecar_that_called_imds() {
    let Some((guard, k, dir)) = setup("atc") else {
        return;
    };
    let lab = Lab::up(
        &dir.0,
        "at",
        &format!(
            r#"
podCIDR: 10.{k}.31.0/24
namespaces: {{shop: {{}}}}
aliases: {{envoy: curl}}
endpoints:
  - {{name: webapp, namespace: shop, labels: {{app: webapp}}}}
  - {{name: backend, namespace: shop, labels: {{app: backend}}}}
containers:
  webapp:
    - {{name: app, command: [sleep, "600"]}}
    - {{name: istio-proxy, command: [sleep, "600"]}}
  backend:
    - {{name: server, command: [python3, -m, http.server, "8080", --bind, 0.0.0.0]}}
"#
        ),
    );
    let state = lab.state().clone();
    let backend = state.pod("backend").expect("backend").ipv4;
    // A decision on both destinations, so that both are reported.
    write(
        &dir.0.join("policies/webapp.yaml"),
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: webapp-egress, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: webapp}}
  egress:
    - toCIDR: [169.254.169.254/32]
      toPorts: [{ports: [{port: "80", protocol: TCP}]}]
    - toEndpoints: [{matchLabels: {app: backend}}]
      toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#,
    );
    let bpf = BpfRoot(dir.0.join("bpf"));
    let agent = start_agent(&agent_args(&state, &dir.0, &[]), &state);

    let backend_url = format!("http://{backend}:8080/");
    eventually("the app container reaches the backend", || {
        get(&state, "webapp", Some("app"), "curl", &backend_url).1 == "200"
    });
    let (code, status, _, sidecar_pid) =
        get(&state, "webapp", Some("istio-proxy"), "envoy", INSTANCE);
    assert_eq!((code, status.as_str()), (0, "200"));

    let to_imds = format!("{IMDS}:80");
    let to_backend = format!("{backend}:8080");
    let all = wait_flows(&agent, "from both containers", |f| {
        f.iter()
            .any(|s| s.dst == to_imds && !s.container.is_empty())
            && f.iter()
                .any(|s| s.dst == to_backend && !s.container.is_empty())
    });
    // The flows seen where the pod's packets leave it carry its socket; those delivered to the
    // backend's side do not (no socket of the pod there) and name no one.
    let from_webapp: Vec<&Seen> = all
        .iter()
        .filter(|s| s.src == "shop/webapp" && !s.container.is_empty())
        .collect();
    let imds: Vec<&&Seen> = from_webapp.iter().filter(|s| s.dst == to_imds).collect();
    assert!(!imds.is_empty(), "{}", show(&all));
    for s in &imds {
        // Only the sidecar called IMDS: every flow there names it, its process and its pid.
        assert_eq!(
            (s.container.as_str(), s.process.as_str(), s.pid),
            ("istio-proxy", "envoy", u64::from(sidecar_pid)),
            "{}",
            s.json
        );
    }
    let app: Vec<&&Seen> = from_webapp.iter().filter(|s| s.dst == to_backend).collect();
    assert!(!app.is_empty(), "{}", show(&all));
    for s in &app {
        assert_eq!(s.container, "app", "{}", s.json);
    }
    eprintln!(
        "flows: {} to IMDS named istio-proxy/envoy[{sidecar_pid}], {} to the backend named app",
        imds.len(),
        app.len()
    );
    drop(agent);
    drop(bpf);
    lab.down_and_check();
    drop(guard);
}

#[test]
fn host_network_pods_are_judged_by_their_cgroups_and_the_node_is_left_alone() {
    let Some((guard, k, dir)) = setup("ath") else {
        return;
    };
    let lab = Lab::up(
        &dir.0,
        "at",
        &format!(
            r#"
podCIDR: 10.{k}.32.0/24
namespaces: {{blocked: {{}}, trusted: {{}}}}
aliases: {{collector: curl}}
endpoints:
  - {{name: hn-denied, namespace: blocked, labels: {{app: collector}}, hostNetwork: true}}
  - {{name: hn-allowed, namespace: trusted, labels: {{app: collector}}, hostNetwork: true}}
containers:
  hn-denied:
    - {{name: collector, command: [sleep, "600"]}}
  hn-allowed:
    - {{name: collector, command: [sleep, "600"]}}
"#
        ),
    );
    let state = lab.state().clone();
    // The seed's shape: every namespace but the trusted one is denied the metadata address.
    write(
        &dir.0.join("policies/deny.yaml"),
        r#"apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: imds-deny}
spec:
  endpointSelector:
    matchExpressions:
      - {key: k8s:io.kubernetes.pod.namespace, operator: NotIn, values: [trusted, kube-system]}
  enableDefaultDeny: {egress: false, ingress: false}
  egressDeny:
    - toCIDR: [169.254.169.254/32]
"#,
    );
    let bpf = BpfRoot(dir.0.join("bpf"));
    let agent = start_agent(
        &agent_args(&state, &dir.0, &["--host-network-pods", "enforce"]),
        &state,
    );
    let url = |who: &str| format!("{INSTANCE}&who={who}");
    // hostNetwork pods pass until their policy is in place (the node keeps its metadata).
    // Refused at connect(): curl cannot connect (exit 7), and no request reaches the emulator.
    let mut pids = Vec::new();
    eventually("the denied hostNetwork pod is refused", || {
        let (code, _, _, pid) = get(&state, "hn-denied", None, "collector", &url("refused"));
        pids.push(pid);
        code == 7
    });
    let (code, status, took, pid) = get(&state, "hn-denied", None, "collector", &url("denied"));
    pids.push(pid);
    assert_eq!((code, status.as_str()), (7, "000"));
    eprintln!("denied hostNetwork connect (drop mode): curl exit {code} after {took:?}");
    let (_, allowed, _, _) = get_admitted(&state, "hn-allowed", None, "collector", &url("allowed"));
    assert_eq!(allowed, "200", "the trusted namespace's hostNetwork pod");
    // A process of the node, in a cgroup of no pod, in the same namespace: untouched.
    let (_, node, _, _) = get_admitted(&state, "node", None, "curl", &url("node"));
    assert_eq!(node, "200", "the node's own process");

    let log = std::fs::read_to_string(state.imds_log()).expect("emulator log");
    assert!(
        log.contains("who=allowed") && log.contains("who=node"),
        "{log}"
    );
    assert!(!log.contains("who=denied"), "{log}");
    let node_ip = state.node.as_ref().expect("node").ipv4.to_string();
    assert!(log.contains(&format!("{node_ip}:")), "{log}");

    let all = wait_flows(&agent, "from the denied hostNetwork pod", |f| {
        f.iter()
            .any(|s| s.src == "blocked/hn-denied" && s.verdict == "DROPPED")
    });
    let denied: Vec<&Seen> = all
        .iter()
        .filter(|s| s.src == "blocked/hn-denied" && s.verdict == "DROPPED")
        .collect();
    assert!(
        // Drops are reported once per interval for the same flow: one of the refused clients.
        denied.iter().any(|s| s.container == "collector"
            && s.process == "collector"
            && pids.iter().any(|p| u64::from(*p) == s.pid)),
        "{}",
        show(&all)
    );
    assert!(
        denied.iter().all(|s| s.dst == format!("{IMDS}:80")),
        "{}",
        show(&all)
    );
    // Nothing of the trusted pod or of the node is dropped.
    assert!(
        !all.iter()
            .any(|s| s.verdict == "DROPPED" && s.src != "blocked/hn-denied"),
        "{}",
        show(&all)
    );
    drop(agent);
    drop(bpf);
    lab.down_and_check();
    drop(guard);
}

#[test]
fn host_network_pods_http_rules_are_judged_by_the_proxy() {
    let Some((guard, k, dir)) = setup("atp") else {
        return;
    };
    let lab = Lab::up(
        &dir.0,
        "at",
        &format!(
            r#"
podCIDR: 10.{k}.33.0/24
namespaces: {{monitoring: {{}}}}
aliases: {{collector: curl}}
endpoints:
  - {{name: hn-http, namespace: monitoring, labels: {{app: collector}}, hostNetwork: true}}
containers:
  hn-http:
    - {{name: collector, command: [sleep, "600"]}}
"#
        ),
    );
    let state = lab.state().clone();
    write(
        &dir.0.join("policies/http.yaml"),
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: collector-instance-only, namespace: monitoring}
spec:
  endpointSelector: {matchLabels: {app: collector}}
  egress:
    - toCIDR: [169.254.169.254/32]
      toPorts:
        - ports: [{port: "80", protocol: TCP}]
          rules:
            http: [{method: GET, path: "/metadata/instance.*"}]
"#,
    );
    let bpf = BpfRoot(dir.0.join("bpf"));
    // A hostNetwork pod shares the node's network namespace with the agent, whose proxy its
    // connect() is sent to on loopback: here the lab's node namespace. Only the network
    // namespace is entered, so the agent sees the host's cgroup and BPF filesystems.
    let node = state.node.as_ref().expect("the lab's node");
    let mut args = agent_args(&state, &dir.0, &["--host-network-pods", "enforce"]);
    if let Some(i) = args.iter().position(|a| a == "--hubble-listen-address") {
        args[i + 1] = format!("{}:0", node.ipv4);
    }
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", node.netns))
        .arg(env!("CARGO_BIN_EXE_imdsguard"))
        .arg("agent")
        .args(&args);
    let agent = Agent::start_with(cmd);
    const TOKEN: &str =
        "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01";
    // Until its policy is in place the pod passes (to the emulator, which answers the token
    // request): wait for the proxy's answer.
    eventually("the proxy refuses the token request", || {
        get(&state, "hn-http", None, "collector", TOKEN).1 == "403"
    });
    let (_, token, _, token_pid) = get(&state, "hn-http", None, "collector", TOKEN);
    assert_eq!(token, "403", "the token path is not in the HTTP rules");
    let url = format!("{INSTANCE}&who=hn-http");
    let (_, instance, _, instance_pid) = get_admitted(&state, "hn-http", None, "collector", &url);
    assert_eq!(instance, "200", "through the proxy to the emulator");
    let log = std::fs::read_to_string(state.imds_log()).expect("emulator log");
    assert!(log.contains("who=hn-http"), "{log}");

    let request = |s: &Seen| s.json.contains("REQUEST") && s.src == "monitoring/hn-http";
    let all = wait_flows(&agent, "of the proxy for the hostNetwork pod", |f| {
        f.iter()
            .any(|s| request(s) && s.verdict == "FORWARDED" && s.json.contains("who=hn-http"))
            && f.iter()
                .any(|s| request(s) && s.verdict == "DROPPED" && u64::from(token_pid) == s.pid)
    });
    let forwarded = all
        .iter()
        .find(|s| request(s) && s.verdict == "FORWARDED" && s.json.contains("who=hn-http"))
        .expect("the forwarded request");
    assert_eq!(
        (
            forwarded.container.as_str(),
            forwarded.process.as_str(),
            forwarded.pid
        ),
        ("collector", "collector", u64::from(instance_pid)),
        "{}",
        show(&all)
    );
    assert_eq!(
        forwarded.dst,
        format!("{IMDS}:80"),
        "the original destination"
    );
    let dropped = all
        .iter()
        .find(|s| request(s) && s.verdict == "DROPPED" && u64::from(token_pid) == s.pid)
        .expect("the refused request");
    assert!(
        dropped.json.contains("/metadata/identity/oauth2/token"),
        "{}",
        show(&all)
    );
    assert_eq!(
        (dropped.container.as_str(), dropped.process.as_str()),
        ("collector", "collector")
    );
    drop(agent);
    drop(bpf);
    lab.down_and_check();
    drop(guard);
}

/// curl's own time until it gave up on (or got) IMDS from the `web` pod, in seconds.
fn time_total(state: &LabState) -> String {
    let out = in_container(
        state,
        "web",
        None,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{time_total}",
            "--connect-timeout",
            "2",
            INSTANCE,
        ],
    )
    .output()
    .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn reject_refuses_a_denied_connect_at_once_and_drop_lets_it_time_out() {
    let Some((guard, k, dir)) = setup("atr") else {
        return;
    };
    let lab = Lab::up(
        &dir.0,
        "at",
        &format!(
            r#"
podCIDR: 10.{k}.33.0/24
namespaces: {{apps: {{}}}}
endpoints:
  - {{name: web, namespace: apps, labels: {{app: web}}}}
containers:
  web:
    - {{name: app, command: [sleep, "600"]}}
"#
        ),
    );
    let state = lab.state().clone();
    write(
        &dir.0.join("policies/deny.yaml"),
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-no-imds, namespace: apps}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egressDeny:
    - toCIDR: [169.254.169.254/32]
"#,
    );
    let bpf = BpfRoot(dir.0.join("bpf"));
    let mut agent = start_agent(
        &agent_args(&state, &dir.0, &["--deny-response", "reject"]),
        &state,
    );
    // curl's exit 7: could not connect (refused); 28: timed out.
    eventually("the denied connect is refused", || {
        get(&state, "web", None, "curl", INSTANCE).0 == 7
    });
    let mut rejected = Vec::new();
    for _ in 0..5 {
        let (code, _, took, _) = get(&state, "web", None, "curl", INSTANCE);
        assert_eq!(code, 7, "reject: connection refused");
        rejected.push(took);
    }
    eprintln!("curl's own time_total, reject: {} s", time_total(&state));
    let all = wait_flows(&agent, "of the rejected connects", |f| {
        f.iter()
            .any(|s| s.src == "apps/web" && s.dst == format!("{IMDS}:80"))
    });
    let web: Vec<&Seen> = all.iter().filter(|s| s.src == "apps/web").collect();
    // Hubble has no REJECTED verdict: a rejected deny is DROPPED, with its reason.
    assert!(web.iter().all(|s| s.verdict == "DROPPED"), "{}", show(&all));
    assert!(
        web.iter()
            .any(|s| s.container == "app" && s.process == "curl"),
        "{}",
        show(&all)
    );

    // The same pins, drop: the SYN is dropped and the client waits out its connect timeout.
    agent.kill();
    drop(agent);
    let agent = start_agent(
        &agent_args(&state, &dir.0, &["--deny-response", "drop"]),
        &state,
    );
    eventually("the denied connect times out", || {
        get(&state, "web", None, "curl", INSTANCE).0 == 28
    });
    let (code, _, dropped, _) = get(&state, "web", None, "curl", INSTANCE);
    assert_eq!(code, 28, "drop: the connect timed out");
    eprintln!("curl's own time_total, drop: {} s", time_total(&state));
    rejected.sort();
    eprintln!(
        "time until a denied connect failed: reject (curl exit 7) median {:?} of {:?}; drop (curl exit 28, --connect-timeout 2) {dropped:?}",
        rejected[rejected.len() / 2],
        rejected
    );
    drop(agent);
    drop(bpf);
    lab.down_and_check();
    drop(guard);
}

/// A client that keeps one HTTP/1.1 connection to IMDS: a request, then another on the same
/// connection after a line on stdin. Prints `<status> <local port>` after each.
const KEEPALIVE: &str = r#"
import http.client, sys
c = http.client.HTTPConnection("169.254.169.254", 80, timeout=10)
for _ in range(2):
    c.request("GET", "/metadata/instance?api-version=2021-02-01", headers={"Metadata": "true"})
    r = c.getresponse()
    r.read()
    print(r.status, c.sock.getsockname()[1], flush=True)
    sys.stdin.readline()
c.close()
"#;

#[test]
fn a_connection_from_before_an_agent_restart_is_still_named_after_it() {
    let Some((guard, k, dir)) = setup("atk") else {
        return;
    };
    let lab = Lab::up(
        &dir.0,
        "at",
        &format!(
            r#"
podCIDR: 10.{k}.34.0/24
namespaces: {{shop: {{}}}}
aliases: {{envoy: /usr/bin/python3}}
endpoints:
  - {{name: webapp, namespace: shop, labels: {{app: webapp}}}}
containers:
  webapp:
    - {{name: app, command: [sleep, "600"]}}
    - {{name: istio-proxy, command: [sleep, "600"]}}
"#
        ),
    );
    let state = lab.state().clone();
    write(
        &dir.0.join("policies/allow.yaml"),
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: webapp-imds, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: webapp}}
  egress:
    - toCIDR: [169.254.169.254/32]
      toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#,
    );
    let bpf = BpfRoot(dir.0.join("bpf"));
    let args = agent_args(&state, &dir.0, &[]);
    let mut first = start_agent(&args, &state);
    eventually("the policy is in force", || {
        get(&state, "webapp", Some("app"), "curl", INSTANCE).1 == "200"
    });

    let mut client = imdsguard_netns::Process(
        in_container(
            &state,
            "webapp",
            Some("istio-proxy"),
            &["envoy", "-c", KEEPALIVE],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.0.join("client.err")).expect("client log"),
        ))
        .spawn()
        .expect("client"),
    );
    let pid = client.0.id();
    let mut stdin = client.0.stdin.take().expect("stdin");
    let mut lines = BufReader::new(client.0.stdout.take().expect("stdout")).lines();
    let before = lines.next().and_then(Result::ok).unwrap_or_default();
    let client_err = || std::fs::read_to_string(dir.0.join("client.err")).unwrap_or_default();
    assert!(before.starts_with("200 "), "{before:?} {}", client_err());

    // SIGKILL the agent this test started, then start it again on the same pins.
    first.kill();
    drop(first);
    let second = start_agent(&args, &state);
    writeln!(stdin, "again").expect("stdin");
    let after = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(
        after,
        before,
        "the second request used the same connection: {}",
        client_err()
    );
    writeln!(stdin, "done").expect("stdin");
    drop(stdin);
    let _ = client.0.wait();

    // The new agent never saw the connect: its flows of the connection (its end) still name
    // the container and the process, from the socket's storage in the kernel.
    let all = wait_flows(&second, "of the connection after the restart", |f| {
        f.iter()
            .any(|s| s.src == "shop/webapp" && s.dst == format!("{IMDS}:80"))
    });
    let named: Vec<&Seen> = all
        .iter()
        .filter(|s| s.src == "shop/webapp" && s.dst == format!("{IMDS}:80"))
        .collect();
    assert!(
        !named.is_empty()
            && named.iter().all(|s| s.container == "istio-proxy"
                && s.process == "envoy"
                && s.pid == u64::from(pid)),
        "{}",
        show(&all)
    );
    eprintln!(
        "after the restart, {} flows of the connection opened before it, each naming istio-proxy/envoy[{pid}]: {:?}",
        named.len(),
        named
            .iter()
            .map(|s| s
                .json
                .split("\"Summary\":")
                .nth(1)
                .unwrap_or("")
                .split(',')
                .next()
                .unwrap_or(""))
            .collect::<Vec<_>>()
    );
    drop(second);
    drop(bpf);
    lab.down_and_check();
    drop(guard);
}
