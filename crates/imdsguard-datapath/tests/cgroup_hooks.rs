//! Root integration tests of the cgroup hooks and of `--deny-response reject`: real cgroups under
//! the host's cgroup v2 mount (a unique sub-cgroup per test, where the hooks attach), real
//! namespaces and veths, and a Python client whose pid, comm and cgroup the events must name. The
//! "metadata" server is a namespace of the test's own, marked protected in the ipcache; nothing
//! leaves the machine, and processes outside the test's cgroup never meet its hooks.

mod common;

use common::{Pins, attach, drain, pod_ips, protect, skip, subnet, wait_for_http};
use imdsguard_datapath::DenyResponse;
use imdsguard_datapath::abi::{self, Event};
use imdsguard_datapath::loader::{Datapath, Options, inspect};
use imdsguard_datapath::sync::{SyncOptions, TableSync};
use imdsguard_netns::{Pod, Process, can_create_namespaces, unique_name};
use imdsguard_policy::Repository;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A cgroup the test made; on drop, whatever still runs in it moves to the v2 root (only the
/// test's own processes can be there, and their guards kill them first) and it is removed.
struct Cgroup {
    path: PathBuf,
    root: PathBuf,
}

impl Cgroup {
    fn create(parent: &Path, name: &str, root: &Path) -> Cgroup {
        let path = parent.join(name);
        std::fs::create_dir(&path).expect("create a cgroup");
        Cgroup {
            path,
            root: root.to_owned(),
        }
    }

    fn id(&self) -> u64 {
        imdsguard_cgroup::host::cgroup_id(&self.path).expect("cgroup id")
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// The test's cgroups: `top` (where the hooks attach) and children for the clients. Dropped
/// children first.
struct Cgroups {
    children: Vec<Cgroup>,
    top: Cgroup,
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.children.clear();
    }
}

impl Cgroups {
    fn create(n: usize) -> Option<Cgroups> {
        let root = match imdsguard_cgroup::host::default_root() {
            Ok(r) => r,
            Err(e) => {
                skip(&format!("no cgroup v2 hierarchy: {e}"));
                return None;
            }
        };
        let top = Cgroup::create(&root, &unique_name("igcg"), &root);
        let children = (0..n)
            .map(|i| Cgroup::create(&top.path, &format!("c{i}"), &root))
            .collect();
        Some(Cgroups { children, top })
    }
}

/// The client: connects (TCP or UDP) and prints `<result> <pid> <ms>`; with `hold`, keeps the
/// socket and on each line of stdin sends one byte (TCP: and waits for an answer), then prints
/// again.
const CLIENT: &str = r#"
import errno, os, socket, sys, time
fam = socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
mode = sys.argv[4] if len(sys.argv) > 4 else "connect"
s = socket.socket(fam, kind)
s.settimeout(float(os.environ.get("T", "2")))
addr = (sys.argv[2], int(sys.argv[3]))
def report(f):
    t = time.monotonic()
    try:
        f()
        r = "OK"
    except socket.timeout:
        r = "TIMEOUT"
    except OSError as e:
        r = errno.errorcode.get(e.errno, str(e.errno))
    print(r, os.getpid(), int((time.monotonic() - t) * 1000), flush=True)
if mode == "sendto":
    report(lambda: s.sendto(b"x", addr))
elif mode == "udprecv":
    def f():
        s.connect(addr)
        s.send(b"x")
        s.recv(10)
    report(f)
else:
    report(lambda: s.connect(addr))
def exchange():
    s.send(b"x")
    if kind == socket.SOCK_STREAM:
        s.recv(10)
if mode == "hold":
    for _ in sys.stdin:
        report(exchange)
"#;

/// `sh -c` that joins `cgroup` first (before `ip netns exec` remounts /sys), then runs the
/// client in `ns`.
fn client_command(cgroup: &Path, ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.args([
        "-c",
        r#"echo $$ > "$1/cgroup.procs" && shift && exec ip netns exec "$@""#,
        "sh",
    ])
    .arg(cgroup)
    .args([ns, "python3", "-c", CLIENT])
    .args(args);
    c
}

/// One client run: (result, pid, milliseconds).
fn run_client(cgroup: &Path, ns: &str, args: &[&str], timeout_s: &str) -> (String, u32, u64) {
    let out = client_command(cgroup, ns, args)
        .env("T", timeout_s)
        .output()
        .expect("run the client");
    parse(&String::from_utf8_lossy(&out.stdout)).unwrap_or_else(|| {
        panic!(
            "client {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn parse(line: &str) -> Option<(String, u32, u64)> {
    let mut w = line.split_whitespace();
    Some((
        w.next()?.to_owned(),
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
    ))
}

/// A client that keeps its socket: `send` makes it send once more.
struct Held {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Held {
    fn start(cgroup: &Path, ns: &str, args: &[&str]) -> (Held, (String, u32, u64)) {
        let mut child = client_command(cgroup, ns, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the client");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut h = Held { child, out };
        let first = h.line();
        (h, first)
    }

    fn line(&mut self) -> (String, u32, u64) {
        let mut l = String::new();
        self.out.read_line(&mut l).expect("client output");
        parse(&l).unwrap_or_else(|| panic!("client said {l:?}"))
    }

    fn send(&mut self) -> (String, u32, u64) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"\n").expect("poke the client");
        stdin.flush().expect("flush");
        self.line()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Lab {
    /// A pod with the datapath on its veth.
    pod: Pod,
    /// The namespace of the "hostNetwork" processes: no datapath on its veth, so only the hooks
    /// can judge them.
    host: Pod,
    server: Pod,
    _http: Process,
    _udp: Process,
    pins: Pins,
}

fn lab() -> Option<Lab> {
    if !can_create_namespaces() {
        skip("creating network namespaces and cgroups needs root");
        return None;
    }
    // enforce.rs takes 200..250.
    let (k, n) = subnet(150, 40);
    let v6 = |h: u16| Ipv6Addr::new(0xfd00, 0x1f, u16::from(k), u16::from(n), 0, 0, 0, h);
    let pod =
        Pod::create(&unique_name("icp"), Ipv4Addr::new(10, k, n, 2), Some(v6(2))).expect("pod");
    let host = Pod::create(&unique_name("ich"), Ipv4Addr::new(10, k, n, 3), Some(v6(3)))
        .expect("host-network namespace");
    let server =
        Pod::create(&unique_name("ics"), Ipv4Addr::new(10, k, n, 4), Some(v6(4))).expect("server");
    let http = server
        .ns
        .spawn("python3", &["-m", "http.server", "8080", "--bind", "::"])
        .expect("http server");
    let udp = server
        .ns
        .spawn(
            "python3",
            &[
                "-c",
                "import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n\
                 s.bind(('::',5353))\nwhile True:\n d,a=s.recvfrom(100)\n s.sendto(d,a)",
            ],
        )
        .expect("udp echo");
    let lab = Lab {
        pod,
        host,
        server,
        _http: http,
        _udp: udp,
        pins: Pins::new("icbpf"),
    };
    for p in [&lab.pod, &lab.host] {
        assert_eq!(
            p.ns.route_dev(lab.server.ipv4.into()).expect("route"),
            "eth0"
        );
    }
    wait_for_http(&lab.pod, &lab.server);
    Some(lab)
}

/// pod: denied the server (egressDeny); host (a hostNetwork pod, no addresses): denied the
/// server too; other: allowed.
const POLICIES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: pod-no-metadata, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: pod}}
  egressDeny:
    - toCIDR: [SERVER/32, SERVER6/128]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: host-no-metadata, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: host}}
  egressDeny:
    - toCIDR: [SERVER/32, SERVER6/128]
"#;

fn repository(lab: &Lab) -> Repository {
    repository_with(lab, POLICIES)
}

fn repository_with(lab: &Lab, policies: &str) -> Repository {
    // The hostNetwork pod has no addresses of its own: it is judged by its cgroups.
    let endpoints = [("pod", pod_ips(&lab.pod)), ("host", Vec::new())];
    common::repository(&lab.server, policies, &endpoints)
}

fn sync_options(lab: &Lab) -> SyncOptions {
    protect(&lab.server)
}

fn open(lab: &Lab, cgroup_root: Option<&Path>, deny: DenyResponse) -> Datapath {
    Datapath::open(&Options {
        bpf_root: lab.pins.0.clone(),
        cgroup_root: cgroup_root.map(Path::to_owned),
        deny_response: deny,
        ..Default::default()
    })
    .expect("load the datapath")
}

#[test]
fn events_name_the_process_and_its_cgroup() {
    let Some(lab) = lab() else { return };
    let Some(cg) = Cgroups::create(1) else { return };
    let repo = repository(&lab);
    let mut dp = open(&lab, Some(&cg.top.path), DenyResponse::Drop);
    assert_eq!(dp.cgroup_hooks().len(), 5, "{:?}", dp.cgroup_hooks());
    let mut sync = TableSync::new(sync_options(&lab));
    sync.sync(&repo, &mut dp).expect("sync");
    attach(&mut dp, &lab.pod).expect("attach");
    let mut events = dp.take_events().expect("events");
    let server = lab.server.ipv4.to_string();
    let child = &cg.children[0];

    let (r, pid, _) = run_client(
        &child.path,
        &lab.pod.ns.name,
        &["tcp", &server, "8080"],
        "1",
    );
    assert_eq!(r, "TIMEOUT", "the pod's denied connect");
    let evs = drain(&mut events);
    let ours: Vec<&Event> = evs
        .iter()
        .filter(|e| e.saddr == abi::Addr::from(lab.pod.ipv4))
        .collect();
    assert!(
        ours.iter().any(|e| e.kind == abi::EV_POLICY_VERDICT),
        "{evs:?}"
    );
    for e in &ours {
        assert_eq!(
            e.proc_flags & (abi::PROC_HAS_SOCK | abi::PROC_HAS_TASK),
            abi::PROC_HAS_SOCK | abi::PROC_HAS_TASK,
            "{e:?}"
        );
        assert_eq!((e.pid, e.comm().as_str()), (pid, "python3"), "{e:?}");
        assert_eq!(e.cgroup_id, child.id(), "{e:?}");
        assert_ne!(e.sock_cookie, 0);
        assert_eq!(e.proc_flags & abi::PROC_FROM_HOOK, 0);
    }

    // A socket to an address that is not protected never meets the hooks' storage: its events
    // still carry the socket and its cgroup, not the process.
    let other = lab.host.ipv4.to_string();
    let (r, _, _) = run_client(&child.path, &lab.pod.ns.name, &["tcp", &other, "9"], "1");
    assert_ne!(r, "OK");
    let evs = drain(&mut events);
    if let Some(e) = evs
        .iter()
        .find(|e| e.daddr == abi::Addr::from(lab.host.ipv4) && e.proc_flags != 0)
    {
        assert_eq!(e.proc_flags & abi::PROC_HAS_TASK, 0, "{e:?}");
        assert_eq!(e.cgroup_id, child.id());
    }
}

#[test]
fn host_network_pods_are_refused_at_connect_and_others_untouched() {
    let Some(lab) = lab() else { return };
    let Some(cg) = Cgroups::create(2) else { return };
    let repo = repository(&lab);
    let mut dp = open(&lab, Some(&cg.top.path), DenyResponse::Drop);
    let mut sync = TableSync::new(sync_options(&lab));
    let (registered, other) = (&cg.children[0], &cg.children[1]);
    sync.set_cgroup_endpoints(HashMap::from([(
        registered.id(),
        "default/host".to_owned(),
    )]));
    sync.sync(&repo, &mut dp).expect("sync");
    let ep = dp
        .cgroup_endpoints()
        .into_iter()
        .find(|(c, _)| *c == registered.id())
        .map(|(_, e)| e)
        .expect("the hostNetwork pod's entry");
    assert_eq!(
        ep.flags & (abi::EP_HOST_NETWORK | abi::EP_READY),
        abi::EP_HOST_NETWORK | abi::EP_READY
    );
    let mut events = dp.take_events().expect("events");
    let (ns, v4, v6) = (
        lab.host.ns.name.as_str(),
        lab.server.ipv4.to_string(),
        lab.server.ipv6.expect("v6").to_string(),
    );

    for (args, want) in [
        (vec!["tcp", v4.as_str(), "8080"], "EPERM"),
        (vec!["tcp", v6.as_str(), "8080"], "EPERM"),
        (vec!["udp", v4.as_str(), "5353", "sendto"], "EPERM"),
        (vec!["udp", v6.as_str(), "5353", "sendto"], "EPERM"),
        (vec!["udp", v4.as_str(), "5353"], "EPERM"),
    ] {
        let (r, _, ms) = run_client(&registered.path, ns, &args, "2");
        assert_eq!(r, want, "{args:?}");
        assert!(ms < 500, "{args:?} took {ms} ms");
        // Outside the pod's cgroup: the node's own processes are never refused.
        let (r, _, _) = run_client(&other.path, ns, &args, "2");
        assert_eq!(r, "OK", "unregistered {args:?}");
    }
    let (_, pid, _) = run_client(&registered.path, ns, &["tcp", &v4, "8080"], "2");
    let evs = drain(&mut events);
    let hook: Vec<&Event> = evs
        .iter()
        .filter(|e| e.proc_flags & abi::PROC_FROM_HOOK != 0)
        .collect();
    let verdict = hook
        .iter()
        .find(|e| e.kind == abi::EV_POLICY_VERDICT && e.proto == 6 && e.ipver == 4)
        .expect("a hook verdict");
    assert_eq!(
        (verdict.verdict, verdict.ifindex, verdict.dir, verdict.dport),
        (2, 0, abi::DIR_EGRESS, 8080)
    );
    assert_eq!(Some(verdict.ep_id), sync.endpoint_id("default/host"));
    assert_eq!(verdict.comm(), "python3");
    assert_eq!(verdict.cgroup_id, registered.id());
    assert!(
        hook.iter()
            .any(|e| e.kind == abi::EV_DROP && e.sub_type == 181 && e.pid == pid),
        "rate-limited, but the last run's pid is a new one: {hook:?}"
    );
    let counters: HashMap<_, _> = dp.counters().expect("counters").into_iter().collect();
    assert!(counters["hook_denied"] >= 5, "{counters:?}");

    // reject: ECONNREFUSED instead of EPERM.
    dp.set_deny_response(DenyResponse::Reject).expect("reject");
    for args in [
        vec!["tcp", v4.as_str(), "8080"],
        vec!["tcp", v6.as_str(), "8080"],
        vec!["udp", v4.as_str(), "5353", "sendto"],
    ] {
        let (r, _, _) = run_client(&registered.path, ns, &args, "2");
        assert_eq!(r, "ECONNREFUSED", "{args:?}");
    }
    let evs = drain(&mut events);
    assert!(
        evs.iter()
            .any(|e| e.proc_flags & abi::PROC_REJECTED != 0 && e.kind == abi::EV_DROP),
        "{evs:?}"
    );

    // The pod leaves: its cgroup is forgotten, and its processes pass.
    sync.set_cgroup_endpoints(HashMap::new());
    sync.sync(&repo, &mut dp).expect("sync");
    assert!(dp.cgroup_endpoints().is_empty());
    let (r, _, _) = run_client(&registered.path, ns, &["tcp", &v4, "8080"], "2");
    assert_eq!(r, "OK");
}

/// host (a hostNetwork pod): HTTP rules to the server's port 8081, where nothing listens.
const HTTP_POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: host-http, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: host}}
  egress:
    - toCIDR: [SERVER/32, SERVER6/128]
      toPorts:
        - ports: [{port: "8081", protocol: TCP}]
          rules: {http: [{method: GET}]}
"#;

/// A stand-in for the proxy in the "host" namespace: listens on 127.0.0.1 and ::1 and writes
/// `<4|6> <peer port>` for every connection it accepts.
const LISTENER: &str = r#"
import select, socket, sys
out = open(sys.argv[2], "a")
ls, conns = [], []
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    s = socket.socket(fam)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(sys.argv[1])))
    s.listen(16)
    ls.append(s)
while True:
    r, _, _ = select.select(ls, [], [])
    for l in r:
        c, a = l.accept()
        out.write("%d %d\n" % (6 if l.family == socket.AF_INET6 else 4, a[1]))
        out.flush()
        conns.append(c)
"#;

#[test]
fn host_network_http_rules_send_the_connect_to_the_proxy_on_loopback() {
    let Some(lab) = lab() else { return };
    let Some(cg) = Cgroups::create(2) else { return };
    let proxy_port = 20000 + (std::process::id() % 20000) as u16;
    let accepted = std::env::temp_dir().join(unique_name("ichacc"));
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _accepted_guard = Remove(accepted.clone());
    let port_arg = proxy_port.to_string();
    let _listener = lab
        .host
        .ns
        .spawn(
            "python3",
            &["-c", LISTENER, &port_arg, &accepted.to_string_lossy()],
        )
        .expect("the stand-in proxy");
    let repo = repository_with(&lab, HTTP_POLICY);
    let mut dp = open(&lab, Some(&cg.top.path), DenyResponse::Drop);
    let mut sync = TableSync::new(SyncOptions {
        proxy_port,
        ..sync_options(&lab)
    });
    let (registered, other) = (&cg.children[0], &cg.children[1]);
    sync.set_cgroup_endpoints(HashMap::from([(
        registered.id(),
        "default/host".to_owned(),
    )]));
    sync.sync(&repo, &mut dp).expect("sync");
    let ep_id = sync.endpoint_id("default/host").expect("an endpoint ID");
    let table = imdsguard_datapath::hostnet::RedirectTable::open(&lab.pins.0).expect("the table");
    let mut events = dp.take_events().expect("events");
    let ns = lab.host.ns.name.as_str();
    let (v4, v6) = (lab.server.ipv4, lab.server.ipv6.expect("v6"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&accepted).is_err() {
        // The listener creates the file when it starts.
        assert!(
            Instant::now() < deadline,
            "the stand-in proxy did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let last_accepted = || -> (u8, u16) {
        let text = std::fs::read_to_string(&accepted).expect("accepted");
        let line = text.lines().last().expect("a connection");
        let (fam, port) = line.split_once(' ').expect("<fam> <port>");
        (fam.parse().expect("fam"), port.parse().expect("port"))
    };

    let mapped = format!("::ffff:{v4}");
    for (dst, want_fam) in [
        (v4.to_string(), 4u8),
        (v6.to_string(), 6),
        // A v4-mapped destination on an AF_INET6 socket: IPv4 to ::ffff:127.0.0.1.
        (mapped.clone(), 4),
    ] {
        // Unregistered: nothing listens on 8081 at the server.
        let (r, _, _) = run_client(&other.path, ns, &["tcp", &dst, "8081"], "2");
        assert_eq!(
            r, "ECONNREFUSED",
            "the node's own connect to {dst} is left alone"
        );
        let (r, pid, _) = run_client(&registered.path, ns, &["tcp", &dst, "8081"], "2");
        assert_eq!(
            r, "OK",
            "the hostNetwork pod's connect to {dst} reached the proxy"
        );
        let (fam, port) = last_accepted();
        assert_eq!(fam, want_fam, "{dst}");
        let entry = table
            .take(port, fam == 6)
            .unwrap_or_else(|| panic!("no entry for port {port} ({dst}): {:?}", table.entries()));
        let orig: IpAddr = if want_fam == 4 { v4.into() } else { v6.into() };
        assert_eq!(entry.destination, std::net::SocketAddr::new(orig, 8081));
        assert_eq!(
            (entry.ep_id, entry.pid, entry.comm.as_str()),
            (ep_id, pid, "python3")
        );
        assert_eq!(entry.cgroup_id, registered.id());
        assert_ne!(entry.cookie, 0);
        assert!(table.take(port, fam == 6).is_none(), "taken once");
    }
    let evs = drain(&mut events);
    let redirected: Vec<&Event> = evs
        .iter()
        .filter(|e| e.proc_flags & abi::PROC_FROM_HOOK != 0 && e.verdict == 5)
        .collect();
    assert_eq!(redirected.len(), 3, "{evs:?}");
    for e in &redirected {
        assert_eq!(
            (e.kind, e.proxy_port, e.dport, e.ep_id),
            (abi::EV_POLICY_VERDICT, proxy_port, 8081, ep_id),
            "{e:?}"
        );
    }
    let counters: HashMap<_, _> = dp.counters().expect("counters").into_iter().collect();
    assert!(counters["redirected"] >= 3, "{counters:?}");
    // UDP under the TCP rule is not redirected: it is not allowed at all.
    let (r, _, _) = run_client(
        &registered.path,
        ns,
        &["udp", &v4.to_string(), "8081", "sendto"],
        "2",
    );
    assert_eq!(r, "EPERM");
    assert!(table.entries().is_empty(), "{:?}", table.entries());
}

#[test]
fn reject_answers_a_pods_denied_packets_at_once() {
    let Some(lab) = lab() else { return };
    let Some(cg) = Cgroups::create(1) else { return };
    let (ns, v4, v6) = (
        lab.pod.ns.name.as_str(),
        lab.server.ipv4.to_string(),
        lab.server.ipv6.expect("v6").to_string(),
    );
    let c = &cg.children[0].path;
    // A connection from before the datapath: its next segment (ACK, with data) is judged as
    // new, and denied.
    let (mut established, (r, _, _)) = Held::start(c, ns, &["tcp", &v4, "8080", "hold"]);
    assert_eq!(r, "OK");
    let repo = repository(&lab);
    let mut dp = open(&lab, None, DenyResponse::Drop);
    let mut sync = TableSync::new(sync_options(&lab));
    sync.sync(&repo, &mut dp).expect("sync");
    attach(&mut dp, &lab.pod).expect("attach");
    let mut events = dp.take_events().expect("events");

    // drop: the client waits for its timeout.
    let (r, _, ms) = run_client(c, ns, &["tcp", &v4, "8080"], "1");
    assert_eq!(r, "TIMEOUT");
    eprintln!("drop: tcp connect {r} after {ms} ms");

    dp.set_deny_response(DenyResponse::Reject).expect("reject");
    let (r, _, ms) = run_client(c, ns, &["tcp", &v4, "8080"], "5");
    eprintln!("reject: tcp4 connect {r} after {ms} ms");
    assert_eq!(r, "ECONNREFUSED");
    assert!(ms < 200, "{ms} ms");
    let (r, _, ms) = run_client(c, ns, &["tcp", &v6, "8080"], "5");
    eprintln!("reject: tcp6 connect {r} after {ms} ms");
    assert_eq!(r, "ECONNREFUSED");
    assert!(ms < 200, "{ms} ms");
    let (r, _, ms) = run_client(c, ns, &["udp", &v4, "5353", "udprecv"], "5");
    eprintln!("reject: udp4 send+recv {r} after {ms} ms");
    assert_eq!(r, "EHOSTUNREACH");
    let (r, _, ms) = run_client(c, ns, &["udp", &v6, "5353", "udprecv"], "5");
    eprintln!("reject: udp6 send+recv {r} after {ms} ms");
    assert_eq!(r, "EACCES");
    let (r, _, ms) = established.send();
    eprintln!("reject: an established connection's next segment: {r} after {ms} ms");
    assert_eq!(r, "ECONNRESET");
    // Without checksum offload (the pod's tx, and the host side's rx, which would mark the
    // packet verified on its way through the veth) the pod's stack checks every checksum of the
    // answers.
    let offload_off = lab
        .pod
        .ns
        .exec("ethtool", &["-K", "eth0", "tx", "off"])
        .is_ok_and(|o| o.status.success())
        && imdsguard_netns::run("ethtool", &["-K", &lab.pod.host_if, "rx", "off"]).is_ok();
    if offload_off {
        for (args, want) in [
            (["tcp", v4.as_str(), "8080", "connect"], "ECONNREFUSED"),
            (["tcp", v6.as_str(), "8080", "connect"], "ECONNREFUSED"),
            (["udp", v4.as_str(), "5353", "udprecv"], "EHOSTUNREACH"),
            (["udp", v6.as_str(), "5353", "udprecv"], "EACCES"),
        ] {
            let (r, _, ms) = run_client(c, ns, &args, "3");
            eprintln!("reject, tx checksum offload off: {args:?} {r} after {ms} ms");
            assert_eq!(r, want, "{args:?}");
        }
    } else {
        eprintln!("no ethtool: the answers were checked with checksum offload only");
    }
    let evs = drain(&mut events);
    let rejected: Vec<&Event> = evs
        .iter()
        .filter(|e| e.proc_flags & abi::PROC_REJECTED != 0)
        .collect();
    assert!(
        rejected
            .iter()
            .any(|e| e.kind == abi::EV_DROP && e.sub_type == 181 && e.verdict == 2),
        "{evs:?}"
    );
    let counters: HashMap<_, _> = dp.counters().expect("counters").into_iter().collect();
    assert!(counters["rejected"] >= 4, "{counters:?}");

    // Back to drop: silent again.
    dp.set_deny_response(DenyResponse::Drop).expect("drop");
    let (r, _, _) = run_client(c, ns, &["tcp", &v4, "8080"], "1");
    assert_eq!(r, "TIMEOUT");
}

#[test]
fn a_restart_keeps_the_hooks_and_the_sockets_attribution() {
    let Some(lab) = lab() else { return };
    let Some(cg) = Cgroups::create(1) else { return };
    let repo = repository(&lab);
    let mut dp = open(&lab, Some(&cg.top.path), DenyResponse::Drop);
    let mut sync = TableSync::new(sync_options(&lab));
    sync.sync(&repo, &mut dp).expect("sync");
    attach(&mut dp, &lab.pod).expect("attach");
    let before = inspect(&lab.pins.0).expect("inspect").cgroup_hooks;
    assert_eq!(before.len(), 5, "{before:?}");
    assert!(before.iter().all(|h| h.cgroup_id == cg.top.id()));

    // A UDP socket connected to the protected server while the first agent runs.
    let server = lab.server.ipv4.to_string();
    let (mut held, (r, pid, _)) = Held::start(
        &cg.children[0].path,
        &lab.pod.ns.name,
        &["udp", &server, "5353", "hold"],
    );
    assert_eq!(r, "OK");
    drop(dp);

    let mut dp = open(&lab, Some(&cg.top.path), DenyResponse::Drop);
    let mut sync = TableSync::new(sync_options(&lab));
    sync.sync(&repo, &mut dp).expect("sync after restart");
    attach(&mut dp, &lab.pod).expect("attach");
    let after = inspect(&lab.pins.0).expect("inspect").cgroup_hooks;
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(
            (a.link_id, a.cgroup_id),
            (b.link_id, b.cgroup_id),
            "{a:?} {b:?}"
        );
        assert_ne!(a.program_id, b.program_id, "the link runs the new program");
    }
    let mut events = dp.take_events().expect("events");
    // The socket from before the restart: its storage survived, so TC still names the process.
    held.send();
    let evs = drain(&mut events);
    let e = evs
        .iter()
        .find(|e| e.saddr == abi::Addr::from(lab.pod.ipv4) && e.proto == 17)
        .unwrap_or_else(|| panic!("an event for the held socket: {evs:?}"));
    assert_eq!((e.pid, e.comm().as_str()), (pid, "python3"), "{e:?}");

    // Without a cgroup root the hooks go.
    drop(events);
    drop(dp);
    let dp = open(&lab, None, DenyResponse::Drop);
    assert!(dp.cgroup_hooks().is_empty());
    assert!(
        inspect(&lab.pins.0)
            .expect("inspect")
            .cgroup_hooks
            .is_empty()
    );
}

#[test]
fn a_path_that_is_not_cgroup_v2_is_refused_with_a_hint() {
    if !can_create_namespaces() {
        skip("loading BPF needs root");
        return;
    }
    let pins = Pins::new("icbpf");
    let err = Datapath::open(&Options {
        bpf_root: pins.0.clone(),
        cgroup_root: Some(std::env::temp_dir()),
        ..Default::default()
    })
    .err()
    .expect("a tmp directory is no cgroup");
    let text = err.to_string();
    assert!(
        text.contains("not a cgroup v2") && text.contains("none"),
        "{text}"
    );
}
