//! Root end-to-end test of the standalone agent: pods as network namespaces, policies and
//! endpoints as files, real curl from inside the pods, flows read back with `observe --server`.
//! The protected "metadata" server is a namespace of the test's own; no machine route changes.

mod common;

use common::agent::{Agent, BpfRoot, TempDir, agent_test, curl, eventually, upstream, write};
use imdsguard_netns::{Pod, unique_name};
use std::net::Ipv4Addr;
use std::process::Command;

fn deny_and_allow(server: Ipv4Addr) -> String {
    format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: a-no-metadata, namespace: default}}
spec:
  endpointSelector: {{matchLabels: {{app: a}}}}
  egressDeny:
    - toCIDR: [{server}/32]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: b-to-server, namespace: default}}
spec:
  endpointSelector: {{matchLabels: {{app: b}}}}
  egress:
    - toCIDR: [{server}/32]
      toPorts: [{{ports: [{{port: "8080", protocol: TCP}}]}}]
"#
    )
}

#[test]
fn the_agent_enforces_watched_files_reports_flows_and_survives_sigkill() {
    let Some((_serial, _routing, k)) = agent_test() else {
        return;
    };
    let a = Pod::create(&unique_name("eta"), Ipv4Addr::new(10, k, 9, 2), None).expect("pod a");
    let b = Pod::create(&unique_name("etb"), Ipv4Addr::new(10, k, 9, 3), None).expect("pod b");
    let s = Pod::create(&unique_name("ets"), Ipv4Addr::new(10, k, 9, 4), None).expect("server");
    let _http =
        s.ns.spawn(
            "python3",
            &["-m", "http.server", "8080", "--bind", "0.0.0.0"],
        )
        .expect("server");
    for pod in [&a, &b] {
        assert_eq!(pod.ns.route_dev(s.ipv4.into()).expect("route"), "eth0");
    }
    eventually("the test server answers", || curl(&b, s.ipv4));

    let dir = TempDir(std::env::temp_dir().join(unique_name("etdir")));
    let policies = dir.0.join("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    let policy = policies.join("policy.yaml");
    write(&policy, &deny_and_allow(s.ipv4));
    let endpoints = dir.0.join("endpoints.yaml");
    write(
        &endpoints,
        &format!(
            "endpoints:\n  - {{name: a, labels: {{app: a}}, ip: {}, interface: {}}}\n  - {{name: b, labels: {{app: b}}, ip: {}, interface: {}}}\n",
            a.ipv4, a.host_if, b.ipv4, b.host_if
        ),
    );
    let bpf = BpfRoot(dir.0.join("bpf"));
    let bpf_root = bpf.0.to_string_lossy().into_owned();
    let args = [
        "--policies",
        &policies.to_string_lossy(),
        "--endpoints",
        &endpoints.to_string_lossy(),
        "--bpf-root",
        &bpf_root,
        "--hubble-listen-address",
        "127.0.0.1:0",
        "--node-name",
        "lab-node",
        "--reload-interval",
        "100ms",
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Agent::start(&args);
    agent.wait_log(&format!("attached to {}", a.host_if));
    agent.wait_log(&format!("attached to {}", b.host_if));

    assert!(!curl(&a, s.ipv4), "a reached the protected server");
    assert!(curl(&b, s.ipv4), "b could not reach the server");
    eventually("the flows are served", || {
        let flows = agent.observe();
        flows.contains("default/a:") && flows.contains("default/b:")
    });
    let flows = agent.observe();
    for want in [
        "policy-verdict:L3-Only EGRESS DENIED",
        "Policy denied by denylist DROPPED (TCP Flags: SYN)",
        "policy-verdict:L3-L4 EGRESS ALLOWED",
        "to-network FORWARDED",
    ] {
        assert!(flows.contains(want), "no {want:?} in:\n{flows}");
    }
    let json = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args([
            "observe",
            "--server",
            &agent.addr,
            "--last",
            "1000",
            "-o",
            "json",
            "--verdict",
            "DROPPED",
        ])
        .output()
        .expect("observe json");
    let json = String::from_utf8_lossy(&json.stdout);
    assert!(
        json.contains(r#""egress_denied_by":[{"name":"a-no-metadata","namespace":"default","kind":"CiliumNetworkPolicy"}]"#)
            || json.contains("a-no-metadata"),
        "{json}"
    );

    // An invalid edit is reported with file, line and field; the last good version stays.
    write(
        &policy,
        &deny_and_allow(s.ipv4).replace(&format!("{}/32]", s.ipv4), "not-a-cidr]"),
    );
    let err = agent.wait_log("policy error:");
    assert!(
        err.contains("policy.yaml:7:") && err.contains("toCIDR"),
        "{err}"
    );
    agent.wait_log("its last good version stays in force");
    assert!(!curl(&a, s.ipv4), "an invalid edit opened the deny");

    // Removing the deny opens a's access, within the reload interval and a resolve.
    write(
        &policy,
        deny_and_allow(s.ipv4)
            .split("---")
            .nth(1)
            .unwrap_or_default(),
    );
    let took = eventually("a can reach the server", || curl(&a, s.ipv4));
    eprintln!("policy file change to enforcement, seen from a pod: {took:?}");

    // Deny again, then kill the agent: a stays denied the whole time, with no gap.
    write(&policy, &deny_and_allow(s.ipv4));
    eventually("a is denied again", || !curl(&a, s.ipv4));
    agent.kill();
    for _ in 0..5 {
        assert!(!curl(&a, s.ipv4), "a reached the server while no agent ran");
    }
    assert!(curl(&b, s.ipv4), "b lost access while no agent ran");

    // A restarted agent adopts the pins and enforces the same.
    let agent = Agent::start(&args);
    agent.wait_log(&format!("attached to {}", a.host_if));
    assert!(!curl(&a, s.ipv4));
    assert!(curl(&b, s.ipv4));

    // status reads the pins: both programs first (and alone) in each chain, no duplicates
    // after the restart, both endpoints with their policy in place, the counters.
    let status = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(["status", "--bpf-root", &bpf_root])
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    for pod in [&a, &b] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&pod.host_if))
            .unwrap_or_else(|| panic!("no line for {} in:\n{text}", pod.host_if));
        assert!(line.contains("from_pod 1 of 1, to_pod 1 of 1"), "{line}");
    }
    assert!(text.contains("Endpoints:    2"), "{text}");
    assert!(
        text.contains("169.254.169.254/32"),
        "IMDS is not closed by default:\n{text}"
    );
    let json = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(["status", "--bpf-root", &bpf_root, "-o", "json"])
        .output()
        .expect("status json");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status -o json");
    assert!(v["counters"]["denied"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert_eq!(v["endpoints"].as_array().map(Vec::len), Some(2));
    drop(agent);
    drop(bpf);
}

fn http(from: &Pod, method: &str, url: &str) -> (u16, String) {
    let out = from
        .ns
        .exec(
            "curl",
            &[
                "-s",
                "-g",
                "--max-time",
                "3",
                "-X",
                method,
                "-H",
                "Metadata: true",
                "-w",
                "\n%{http_code}",
                url,
            ],
        )
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Three requests in a row from one client port, each with `Connection: close`.
fn requests_from_one_port(pod: &Pod, url: &str, port: u16) {
    // The proxy closes first, as a server does, so the TIME_WAIT is its own, and a client may
    // reuse its port at once: three requests in a row from one port each get their answer
    // (a SYN meeting the proxy's TIME_WAIT used to be dropped until it expired), and the pod
    // is left with no TIME_WAIT of its own.
    let syn_retransmits = || {
        let out = pod
            .ns
            .exec("nstat", &["-az", "TcpExtTCPSynRetrans"])
            .expect("nstat");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("TcpExtTCPSynRetrans"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .expect("TcpExtTCPSynRetrans")
    };
    let before = syn_retransmits();
    for i in 0..3 {
        let out = pod
            .ns
            .exec(
                "curl",
                &[
                    "-s",
                    "--max-time",
                    "3",
                    "-g",
                    "--local-port",
                    &port.to_string(),
                    "-H",
                    "Connection: close",
                    "-w",
                    "\n%{http_code}",
                    url,
                ],
            )
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.ends_with("\n200"),
            "request {i} from port {port}: {text:?}; curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(syn_retransmits(), before, "a SYN was lost on the way");
    let waiting = pod
        .ns
        .exec("ss", &["-Htan", "state", "time-wait"])
        .expect("ss");
    let waiting = String::from_utf8_lossy(&waiting.stdout);
    assert!(
        !waiting.contains(&format!(":{port} ")),
        "the pod keeps a TIME_WAIT on port {port}:\n{waiting}"
    );
}

#[test]
fn the_proxy_enforces_http_rules_on_redirected_connections() {
    let Some((_serial, _routing, k)) = agent_test() else {
        return;
    };
    let c = Pod::create(&unique_name("epc"), Ipv4Addr::new(10, k, 11, 2), None).expect("pod c");
    let d = Pod::create(&unique_name("epd"), Ipv4Addr::new(10, k, 11, 3), None).expect("pod d");
    let f = Pod::create(&unique_name("epf"), Ipv4Addr::new(10, k, 11, 4), None).expect("pod f");
    let s = Pod::create(&unique_name("eps"), Ipv4Addr::new(10, k, 11, 5), None).expect("imds");
    let dir = TempDir(std::env::temp_dir().join(unique_name("epdir")));
    std::fs::create_dir_all(dir.0.join("policies")).expect("mkdir");
    let upstream_log = dir.0.join("upstream.log");
    let _upstream = upstream(&s, None, Some(&upstream_log));
    let imds = s.ipv4;
    for pod in [&c, &d, &f] {
        assert_eq!(pod.ns.route_dev(imds.into()).expect("route"), "eth0");
    }
    eventually("the upstream answers", || {
        http(&c, "GET", &format!("http://{imds}/x")).0 == 200
    });
    // The readiness probe's lines; the server keeps its file offset, so count rather than truncate.
    let probes = std::fs::read_to_string(&upstream_log)
        .expect("log")
        .lines()
        .count();

    // c: GET /metadata/.*; d: path "/metadata", a full match. f: the seed's own policies (its
    // CIDR group pointed at the stand-in), as a Fluent Bit pod in namespace logging.
    let rule = |name: &str, app: &str, path: &str| {
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  endpointSelector: {{matchLabels: {{app: {app}}}}}\n  egress:\n    - toCIDR: [{imds}/32]\n      \
             toPorts: [{{ports: [{{port: \"80\", protocol: TCP}}], rules: {{http: [{{method: GET, path: \"{path}\"}}]}}}}]\n"
        )
    };
    let policies = dir.0.join("policies");
    std::fs::write(
        policies.join("c.yaml"),
        rule("c-metadata", "c", "/metadata/.*"),
    )
    .expect("c");
    std::fs::write(
        policies.join("d.yaml"),
        rule("d-metadata", "d", "/metadata"),
    )
    .expect("d");
    let endpoints = dir.0.join("endpoints.yaml");
    std::fs::write(
        &endpoints,
        format!(
            "namespaces: {{logging: {{}}}}\nendpoints:\n\
             - {{name: c, labels: {{app: c}}, ip: {}, interface: {}}}\n\
             - {{name: d, labels: {{app: d}}, ip: {}, interface: {}}}\n\
             - {{name: fluent-bit-qg7vq, namespace: logging, labels: {{app.kubernetes.io/name: fluent-bit}}, ip: {}, interface: {}}}\n",
            c.ipv4, c.host_if, d.ipv4, d.host_if, f.ipv4, f.host_if
        ),
    )
    .expect("endpoints");
    let bpf = BpfRoot(dir.0.join("bpf"));
    let proxy_port = (16000 + std::process::id() % 1000).to_string();
    let args = [
        "--policies",
        &policies.to_string_lossy(),
        "--endpoints",
        &endpoints.to_string_lossy(),
        "--bpf-root",
        &bpf.0.to_string_lossy(),
        "--hubble-listen-address",
        "127.0.0.1:0",
        "--proxy-port",
        &proxy_port,
        "--node-name",
        "lab-node",
    ]
    .map(|s| s.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&args);
    for pod in [&c, &d, &f] {
        agent.wait_log(&format!("attached to {}", pod.host_if));
    }

    let token = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://api.kusto.windows.net";
    let instance = "/metadata/instance?api-version=2021-02-01";
    let (code, body) = http(&c, "GET", &format!("http://{imds}{instance}"));
    assert_eq!(
        (code, body.as_str()),
        (200, format!("upstream saw GET {instance}").as_str()),
        "agent log:\n{}\nflows:\n{}",
        agent.logged(),
        agent.observe()
    );
    assert_eq!(
        http(&c, "POST", &format!("http://{imds}{instance}")),
        (403, "Access denied\r\n".to_owned())
    );
    assert_eq!(http(&c, "GET", &format!("http://{imds}/other")).0, 403);
    // `path: /metadata` is a full match: it does not allow /metadata/instance?….
    assert_eq!(http(&d, "GET", &format!("http://{imds}{instance}")).0, 403);
    // Now the seed's own policies, alone (its deny would also select c and d).
    // Only the allowed request reached the upstream: not the POST, /other, or d's request.
    let seen: Vec<String> = std::fs::read_to_string(&upstream_log)
        .expect("log")
        .lines()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(seen[probes..], [format!("GET {instance}")]);
    requests_from_one_port(
        &c,
        &format!("http://{imds}{instance}"),
        20000 + (std::process::id() % 10000) as u16,
    );
    std::fs::remove_file(policies.join("c.yaml")).expect("rm");
    std::fs::remove_file(policies.join("d.yaml")).expect("rm");
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/azure-imds");
    for file in [
        "azure-imds-allow.yaml",
        "azure-imds-deny.yaml",
        "cidrgroup.yaml",
    ] {
        let text = std::fs::read_to_string(seed.join(file))
            .expect("seed policy")
            .replace("169.254.169.254/32", &format!("{imds}/32"));
        write(&policies.join(file), &text);
    }
    eventually("the seed's deny is in force for c", || {
        http(&c, "GET", &format!("http://{imds}{instance}")).0 == 0
    });
    // The seed's allow policy sets enableDefaultDeny.egress: false. Cilium then adds a wildcard
    // to the HTTP rules of that port, so `GET /metadata` restricts nothing: the Fluent Bit pod's
    // token request is forwarded (and seen: every request on the port goes through the proxy).
    let (code, body) = http(&f, "GET", &format!("http://{imds}{token}"));
    assert_eq!((code, body), (200, format!("upstream saw GET {token}")));

    let seen: Vec<String> = std::fs::read_to_string(&upstream_log)
        .expect("log")
        .lines()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(seen.last(), Some(&format!("GET {token}")));
    eventually("the L7 flows are served", || {
        let flows = agent.observe();
        flows.contains("http-request DROPPED (HTTP/1.1 POST")
            && flows.contains(&format!(
                "http-request FORWARDED (HTTP/1.1 GET http://{imds}:80{instance})"
            ))
            && flows.contains("http-response FORWARDED (HTTP/1.1 200")
    });
}

/// The TIME_WAIT hand-off (docs/proxy.md) for IPv6: the listener on ::1 and the second SOCKMAP
/// entry.
#[test]
fn an_ipv6_client_reusing_its_port_reaches_the_proxy() {
    let Some((_serial, _routing, k)) = agent_test() else {
        return;
    };
    let v6 = |host: u16| std::net::Ipv6Addr::new(0xfd00, u16::from(k), 0, 0, 0, 0, 0x12, host);
    let c = Pod::create(
        &unique_name("e6c"),
        Ipv4Addr::new(10, k, 12, 2),
        Some(v6(2)),
    )
    .expect("pod c");
    let s = Pod::create(
        &unique_name("e6s"),
        Ipv4Addr::new(10, k, 12, 5),
        Some(v6(5)),
    )
    .expect("imds");
    let imds = v6(5);
    assert_eq!(c.ns.route_dev(imds.into()).expect("route"), "eth0");
    let _upstream = upstream(&s, Some("::"), None);
    let dir = TempDir(std::env::temp_dir().join(unique_name("e6dir")));
    std::fs::create_dir_all(dir.0.join("policies")).expect("mkdir");
    std::fs::write(
        dir.0.join("policies/c.yaml"),
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: c6, namespace: default}}\n\
             spec:\n  endpointSelector: {{matchLabels: {{app: c}}}}\n  egress:\n    - toCIDR: [\"{imds}/128\"]\n      \
             toPorts: [{{ports: [{{port: \"80\", protocol: TCP}}], rules: {{http: [{{method: GET, path: \"/metadata/.*\"}}]}}}}]\n"
        ),
    )
    .expect("policy");
    let endpoints = dir.0.join("endpoints.yaml");
    std::fs::write(
        &endpoints,
        format!(
            "endpoints:\n- {{name: c, labels: {{app: c}}, ips: [{}, \"{}\"], interface: {}}}\n",
            c.ipv4,
            v6(2),
            c.host_if
        ),
    )
    .expect("endpoints");
    let bpf = BpfRoot(dir.0.join("bpf"));
    let args = [
        "--policies".to_owned(),
        dir.0.join("policies").to_string_lossy().into_owned(),
        "--endpoints".to_owned(),
        endpoints.to_string_lossy().into_owned(),
        "--bpf-root".to_owned(),
        bpf.0.to_string_lossy().into_owned(),
        "--hubble-listen-address".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--proxy-port".to_owned(),
        (17000 + std::process::id() % 1000).to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&args);
    agent.wait_log(&format!("attached to {}", c.host_if));
    let url = format!("http://[{imds}]/metadata/instance");
    eventually("the upstream answers through the proxy", || {
        http(&c, "GET", &format!("http://[{imds}]/metadata/x")).0 == 200
    });
    requests_from_one_port(&c, &url, 21000 + (std::process::id() % 10000) as u16);
    // And the proxy judged them: a path outside the rule is refused.
    assert_eq!(http(&c, "GET", &format!("http://[{imds}]/other")).0, 403);
    drop(agent);
}

/// An `ip rule` of the test's own, removed on drop (with its table's routes).
struct Rule {
    args: Vec<String>,
    table: Option<String>,
}

impl Rule {
    fn add(args: &[&str], table: Option<&str>) -> Rule {
        let mut add = vec!["rule", "add"];
        add.extend(args);
        imdsguard_netns::run("ip", &add).expect("ip rule add");
        Rule {
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            table: table.map(str::to_owned),
        }
    }
}

impl Drop for Rule {
    fn drop(&mut self) {
        let mut del = vec!["rule", "del"];
        del.extend(self.args.iter().map(String::as_str));
        let _ = imdsguard_netns::run("ip", &del);
        if let Some(t) = &self.table {
            let _ = imdsguard_netns::run("ip", &["route", "flush", "table", t]);
        }
    }
}

#[test]
fn a_rule_ahead_of_the_proxys_makes_redirects_fail_closed() {
    let Some((_serial, _routing, k)) = agent_test() else {
        return;
    };
    let c = Pod::create(&unique_name("erc"), Ipv4Addr::new(10, k, 12, 2), None).expect("pod c");
    let s = Pod::create(&unique_name("ers"), Ipv4Addr::new(10, k, 12, 5), None).expect("imds");
    let dir = TempDir(std::env::temp_dir().join(unique_name("erdir")));
    let policies = dir.0.join("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    let upstream_log = dir.0.join("upstream.log");
    let _upstream = upstream(&s, None, Some(&upstream_log));
    let imds = s.ipv4;
    assert_eq!(c.ns.route_dev(imds.into()).expect("route"), "eth0");
    eventually("the upstream answers", || {
        http(&c, "GET", &format!("http://{imds}/x")).0 == 200
    });
    write(
        &policies.join("c.yaml"),
        &format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: c-metadata, namespace: default}}\n\
             spec:\n  endpointSelector: {{matchLabels: {{app: c}}}}\n  egress:\n    - toCIDR: [{imds}/32]\n      \
             toPorts: [{{ports: [{{port: \"80\", protocol: TCP}}], rules: {{http: [{{method: GET, path: \"/metadata/.*\"}}]}}}}]\n"
        ),
    );
    let endpoints = dir.0.join("endpoints.yaml");
    write(
        &endpoints,
        &format!(
            "endpoints:\n - {{name: c, labels: {{app: c}}, ip: {}, interface: {}}}\n",
            c.ipv4, c.host_if
        ),
    );
    // A stale rule of ours from an earlier run, at the priority the kernel used to pick.
    let mark = format!("{:#x}/0xf00", imdsguard_proxy::routing::MARK);
    let table = imdsguard_proxy::routing::TABLE.to_string();
    let _stale = Rule::add(&["pref", "32765", "fwmark", &mark, "lookup", &table], None);
    let bpf = BpfRoot(dir.0.join("bpf"));
    let bpf_root = bpf.0.to_string_lossy().into_owned();
    let proxy_port = (17000 + std::process::id() % 1000).to_string();
    let args = [
        "--policies",
        &policies.to_string_lossy(),
        "--endpoints",
        &endpoints.to_string_lossy(),
        "--bpf-root",
        &bpf_root,
        "--hubble-listen-address",
        "127.0.0.1:0",
        "--proxy-port",
        &proxy_port,
        "--node-name",
        "lab-node",
        "--reload-interval",
        "200ms",
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&args);
    agent.wait_log(&format!("attached to {}", c.host_if));
    // The stale rule is gone: ours is at the fixed priority, once.
    let rules = imdsguard_netns::run("ip", &["rule", "show"]).expect("rules");
    let ours: Vec<&str> = rules
        .lines()
        .filter(|l| l.contains(&format!("lookup {table}")))
        .collect();
    assert_eq!(ours.len(), 1, "{rules}");
    assert!(ours[0].starts_with("9:"), "{rules}");
    let url = format!("http://{imds}/metadata/instance");
    assert_eq!(http(&c, "GET", &url).0, 200, "{}", agent.logged());

    // A CNI-like rule ahead of ours that sends c's traffic straight to the server: redirects
    // would bypass the proxy. They fail closed instead, and the agent says why.
    let bypass = (3000 + u32::from(k)).to_string();
    imdsguard_netns::run(
        "ip",
        &[
            "route", "add", "default", "dev", &s.host_if, "table", &bypass,
        ],
    )
    .expect("route in the test's table");
    let from = format!("{}/32", c.ipv4);
    let rule = Rule::add(
        &["pref", "5", "from", &from, "lookup", &bypass],
        Some(&bypass),
    );
    agent.wait_log("redirects to the proxy fail closed");
    let before = std::fs::read_to_string(&upstream_log)
        .expect("log")
        .lines()
        .count();
    assert_eq!(http(&c, "GET", &url).0, 0, "a redirect left while shadowed");
    assert_eq!(
        std::fs::read_to_string(&upstream_log)
            .expect("log")
            .lines()
            .count(),
        before,
        "the server saw a request while the proxy's routing was shadowed"
    );
    let st = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(["status", "--bpf-root", &bpf_root, "-o", "json"])
        .output()
        .expect("status");
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).expect("status json");
    assert_eq!(v["proxy_routing"]["redirects_fail_closed"], true, "{v}");
    assert!(
        !st.status.success(),
        "status exits 0 while redirects fail closed"
    );
    eventually("the drop is reported", || {
        agent.observe().contains("FIB lookup failed DROPPED")
    });

    // The rule goes: redirects resume.
    drop(rule);
    agent.wait_log("intact again");
    eventually("c is proxied again", || http(&c, "GET", &url).0 == 200);
    drop(agent);
    drop(bpf);
}
