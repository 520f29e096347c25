//! The standalone agent as root tests run it: the process and its log, a private bpffs, a
//! temporary directory, and the lock around the machine-wide proxy routing.

use imdsguard_netns::can_create_namespaces;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The agent process and everything it printed.
pub struct Agent {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
    pub addr: String,
}

impl Agent {
    pub fn start(args: &[&str]) -> Agent {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imdsguard"));
        cmd.arg("agent").args(args);
        Agent::start_with(cmd)
    }

    /// `start` with a command of the caller's making (another environment, a wrapper such as
    /// `strace -D` that leaves the agent the direct child): it must run `imdsguard agent` with a
    /// Hubble address, and its stderr is taken here.
    pub fn start_with(mut cmd: Command) -> Agent {
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("start the agent");
        let log = super::stderr_lines(&mut child);
        let mut agent = Agent {
            child,
            log,
            addr: String::new(),
        };
        let line = agent.wait_log("hubble: serving on ");
        // `<time> INFO hubble: serving on ADDR`: the address ends the line.
        agent.addr = line
            .split_once("hubble: serving on ")
            .map_or("", |(_, a)| a)
            .to_owned();
        agent
    }

    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(l) = self
                .log
                .lock()
                .ok()
                .and_then(|l| l.iter().find(|l| l.contains(needle)).cloned())
            {
                return l;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the agent never logged {needle:?}; it logged:\n{}",
            self.logged()
        );
    }

    pub fn logged(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        // SIGKILL, like a crashed agent: nothing gets to clean up.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn observe(&self) -> String {
        let o = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
            .args(["observe", "--server", &self.addr, "--last", "1000"])
            .output()
            .expect("observe");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `imdsguard status -o json` of the agent with this bpffs and API socket; Null until it answers.
pub fn status(bpf_root: &Path, socket: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(["status", "-o", "json", "--bpf-root"])
        .arg(bpf_root)
        .arg("--socket-path")
        .arg(socket)
        .output()
        .expect("status");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The test's private bpffs and pins, removed whatever happens.
pub struct BpfRoot(pub PathBuf);

impl Drop for BpfRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.join("imdsguard"));
        let _ = imdsguard_netns::run("umount", &[&self.0.to_string_lossy()]);
        let _ = std::fs::remove_dir(&self.0);
    }
}

pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn write(path: &Path, text: &str) {
    // Write then rename, as editors and config management do: the agent never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

pub fn eventually(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting until {what}");
}

/// Agent tests install the proxy's policy routing (a machine-wide ip rule): one at a time, and
/// each removes what it added.
pub static ROUTING: Mutex<()> = Mutex::new(());

pub struct ProxyRouting {
    added: bool,
}

impl ProxyRouting {
    pub fn take() -> ProxyRouting {
        ProxyRouting {
            added: !imdsguard_proxy::routing::installed(imdsguard_proxy::routing::TABLE),
        }
    }
}

impl Drop for ProxyRouting {
    fn drop(&mut self) {
        if self.added {
            imdsguard_proxy::routing::uninstall(
                imdsguard_proxy::routing::MARK,
                imdsguard_proxy::routing::TABLE,
            );
        }
    }
}

/// What every agent test starts with: root (else it is skipped), the routing lock, and the
/// second octet of its pods' subnet.
pub fn agent_test() -> Option<(MutexGuard<'static, ()>, ProxyRouting, u8)> {
    if !can_create_namespaces() {
        super::skip("needs root to create network namespaces");
        return None;
    }
    let serial = ROUTING.lock().unwrap_or_else(|e| e.into_inner());
    Some((
        serial,
        ProxyRouting::take(),
        150 + (std::process::id() % 50) as u8,
    ))
}

/// A stand-in for IMDS on port 80: answers every GET and POST with what it saw, and prints each
/// request line. Its first argument is the address to bind (default 0.0.0.0).
pub const UPSTREAM: &str = r#"
import http.server, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        body = ("upstream saw %s %s" % (self.command, self.path)).encode()
        print(self.command, self.path, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = answer
    do_POST = answer
    def log_message(self, *a):
        pass
bind = sys.argv[1] if len(sys.argv) > 1 else "0.0.0.0"
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET
S((bind, 80), H).serve_forever()
"#;

/// Runs `UPSTREAM` in `server`'s namespace, bound to `bind` (None: 0.0.0.0), its request lines
/// going to `log` (None: nowhere). Killed on drop.
pub fn upstream(
    server: &imdsguard_netns::Pod,
    bind: Option<&str>,
    log: Option<&Path>,
) -> imdsguard_netns::Process {
    let stdout = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).expect("upstream log")),
        None => Stdio::null(),
    };
    let mut cmd = server.ns.command("python3");
    cmd.args(["-c", UPSTREAM]).args(bind);
    imdsguard_netns::Process(
        cmd.stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .expect("upstream"),
    )
}

/// Whether `from` gets an answer from `to`:8080 within 2 s.
pub fn curl(from: &imdsguard_netns::Pod, to: std::net::Ipv4Addr) -> bool {
    from.ns
        .exec(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "2",
                &format!("http://{to}:8080/"),
            ],
        )
        .expect("curl")
        .status
        .success()
}

/// One flow as `observe -o json` gives it, with what the tests look at: source pod, destination,
/// verdict, and imdsguard's process extension (container, process, pid).
#[derive(Debug, Clone)]
pub struct Seen {
    pub src: String,
    pub dst: String,
    pub verdict: String,
    pub container: String,
    pub process: String,
    pub pid: u64,
    pub json: String,
}

/// One line of `observe -o json`, read with the project's own reader (which takes the extension
/// in protojson's form and in pbjson's).
pub fn seen(line: &str) -> Option<Seen> {
    use imdsguard_flow::flow::layer4::Protocol;
    use imdsguard_flow::observer::get_flows_response::ResponseTypes;
    let Some(ResponseTypes::Flow(f)) = imdsguard_flow::jsonline::decode_reference(line)
        .ok()?
        .response_types
    else {
        return None;
    };
    let info = imdsguard_hubble_proto::process::get(&f).unwrap_or_default();
    let src = f.source.clone().unwrap_or_default();
    let port = match f.l4.as_ref().and_then(|l| l.protocol.clone()) {
        Some(Protocol::Tcp(t)) => t.destination_port,
        Some(Protocol::Udp(u)) => u.destination_port,
        _ => 0,
    };
    Some(Seen {
        src: format!("{}/{}", src.namespace, src.pod_name),
        dst: format!(
            "{}:{port}",
            f.ip.as_ref()
                .map(|i| i.destination.as_str())
                .unwrap_or_default()
        ),
        verdict: f.verdict().as_str_name().to_owned(),
        container: info.container,
        process: info.process,
        pid: u64::from(info.pid),
        json: line.to_owned(),
    })
}

/// The agent's last 1,000 flows, through `imdsguard observe -o json`.
pub fn flows(agent: &Agent) -> Vec<Seen> {
    let out = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(["observe", "--server", &agent.addr, "--last", "1000"])
        .args(["-o", "json"])
        .output()
        .expect("observe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(seen)
        .collect()
}

/// Flows one per line, for assertion messages.
pub fn show(flows: &[Seen]) -> String {
    flows
        .iter()
        .map(|f| {
            format!(
                "{} -> {} {} {}/{}[{}]\n    {}",
                f.src, f.dst, f.verdict, f.container, f.process, f.pid, f.json
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
