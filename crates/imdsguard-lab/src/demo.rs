//! The seed's story, end to end, with real traffic on this machine (`imdsguard demo`): a lab with
//! the seed's pods, the agent enforcing the seed's own policies, and the flows printed as
//! `hubble observe` prints them. The agent and `observe` are the imdsguard binary itself, run as
//! child processes, so the story shows what a user would see.

use crate::lab::{self, IMDS_ADDRESS, LAB_MARK, LabError, LabState, UpOptions};
use crate::topology::LoadError;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WEBAPP: &str = "go-webapp-847857f68-2qlnd";
const FLUENT_BIT: &str = "fluent-bit-qg7vq";
const TOKEN: &str = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fapi.kusto.windows.net";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Topology(#[from] LoadError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("agent stderr")]
    AgentStderr,
    #[error("the agent never logged {needle:?}; its log:\n{log}")]
    AgentSilent { needle: String, log: String },
    #[error("interrupted; cleaning up")]
    Interrupted,
}

type Result<T> = std::result::Result<T, DemoError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Leave the lab and the agent running at the end.
    pub keep: bool,
    /// The directory of the seed's policies.
    pub policies: PathBuf,
    pub topology: PathBuf,
    /// The imdsguard binary: the demo runs its `agent`, `observe` and `imds-emulator`.
    pub binary: PathBuf,
    /// Set (by a signal handler) to stop between steps; everything made is then undone.
    pub interrupted: Arc<AtomicBool>,
}

/// Where the story goes.
pub struct Output<'a> {
    /// Prints one line of the story (the text, then a newline).
    pub line: &'a dyn Fn(&str),
    /// Prints one line about what could not be cleaned up.
    pub problem: &'a dyn Fn(&str),
    /// Whether headings may be bold (the output is a terminal).
    pub styled: bool,
}

/// Everything the demo started, undone on drop (unless --keep).
struct Stage<'a> {
    lab: Option<LabState>,
    agent: Option<Child>,
    agent_log: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
    routing_added: bool,
    keep: bool,
    problem: &'a dyn Fn(&str),
}

impl Drop for Stage<'_> {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        if let Some(state) = self.lab.take() {
            for p in lab::down(&state) {
                (self.problem)(&format!("cleanup: {p}"));
            }
        }
        let bpf = self.dir.join("bpf");
        let _ = std::fs::remove_dir_all(bpf.join("imdsguard"));
        let _ = Command::new("umount").arg(&bpf).status();
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.routing_added {
            imdsguard_proxy::routing::uninstall(
                imdsguard_proxy::routing::MARK,
                imdsguard_proxy::routing::TABLE,
            );
        }
    }
}

impl Stage<'_> {
    /// Waits for a line containing `needle` among the agent's lines from index `from` on.
    fn wait_log(&self, from: usize, needle: &str, within: Duration) -> Result<String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(l) = self.agent_log.lock().ok().and_then(|l| {
                l.iter()
                    .skip(from)
                    .rev()
                    .find(|l| l.contains(needle))
                    .cloned()
            }) {
                return Ok(l);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = self
            .agent_log
            .lock()
            .map(|l| l.join("\n"))
            .unwrap_or_default();
        Err(DemoError::AgentSilent {
            needle: needle.to_owned(),
            log,
        })
    }

    fn agent_lines(&self) -> usize {
        self.agent_log.lock().map(|l| l.len()).unwrap_or(0)
    }
}

impl Output<'_> {
    fn heading(&self, text: &str) {
        if self.styled {
            (self.line)(&format!("\n\x1b[1m== {text}\x1b[0m"));
        } else {
            (self.line)(&format!("\n== {text}"));
        }
    }

    /// The flows of `flows` that name one of `pods`, indented.
    fn show(&self, flows: &str, pods: &[&str]) {
        for line in flows.lines().filter(|l| pods.iter().any(|p| l.contains(p))) {
            (self.line)(&format!("  {line}"));
        }
    }
}

/// The process the sidecar's calls come from, and Fluent Bit's (the topology's aliases of curl).
const SIDECAR: (&str, &str) = ("istio-proxy", "pilot-agent");
const FLUENT_BIT_PROCESS: (&str, &str) = ("fluent-bit", "fluent-bit");

/// Runs an HTTP client (curl, or an alias of it) in a container of a lab pod; returns the HTTP
/// status (0 when it timed out: dropped).
fn curl(
    state: &LabState,
    pod: &str,
    (container, program): (&str, &str),
    args: &[&str],
) -> Result<u16> {
    let mut argv: Vec<String> = [
        program,
        "-s",
        "-o",
        "/dev/null",
        "--max-time",
        "2",
        "-w",
        "%{http_code}",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    // A topology of the user's own may lack the container or the alias: the pod's first, curl.
    let container = state
        .processes
        .iter()
        .any(|p| p.pod == pod && p.container == container)
        .then_some(container);
    if !state.bin_dir().join(program).exists() {
        argv[0] = "curl".into();
    }
    let out = lab::exec_in(state, pod, container, &argv)?
        .output()
        .map_err(io("curl"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0))
}

/// The calls the Istio sidecar's platform detection makes
/// (docs/metadata-services.md#what-clients-send).
fn sidecar_calls(state: &LabState) -> Result<Vec<u16>> {
    let base = format!("http://{IMDS_ADDRESS}");
    Ok(vec![
        curl(state, WEBAPP, SIDECAR, &[&format!("{base}/")])?,
        curl(
            state,
            WEBAPP,
            SIDECAR,
            &[
                "-X",
                "PUT",
                "-H",
                "X-aws-ec2-metadata-token-ttl-seconds: 60",
                &format!("{base}/latest/api/token"),
            ],
        )?,
        curl(
            state,
            WEBAPP,
            SIDECAR,
            &[
                "-H",
                "Metadata: True",
                &format!("{base}/metadata/instance?api-version=2025-04-07"),
            ],
        )?,
    ])
}

fn token_call(state: &LabState, method: &str, path: &str) -> Result<u16> {
    curl(
        state,
        FLUENT_BIT,
        FLUENT_BIT_PROCESS,
        &[
            "-X",
            method,
            "-H",
            "Metadata: true",
            &format!("http://{IMDS_ADDRESS}{path}"),
        ],
    )
}

/// The flows to the metadata address since `since`, as `imdsguard observe` prints them, with
/// `extra` arguments (`--print-process`, `-o json`).
fn observe(binary: &Path, addr: &str, since: &str, extra: &[&str]) -> Result<String> {
    let out = Command::new(binary)
        .args([
            "observe",
            "--server",
            addr,
            "--since",
            since,
            "--ip",
            &IMDS_ADDRESS.to_string(),
            "--last",
            "200",
        ])
        .args(extra)
        .output()
        .map_err(io("observe"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Who sent the flows of `observe -o json` output: `pod [container: process] → destination`, one
/// line per sender, in order of first appearance, with how many connections (source ports) each
/// opened.
fn callers(json_lines: &str) -> Vec<(String, usize)> {
    use imdsguard_flow::flow::layer4::Protocol;
    use imdsguard_flow::observer::get_flows_response::ResponseTypes;
    let mut out: Vec<(String, Vec<u32>)> = Vec::new();
    let mut decoder = imdsguard_flow::jsonline::LineDecoder::new();
    for line in json_lines.lines() {
        let Ok(resp) = decoder.decode(line) else {
            continue;
        };
        let Some(ResponseTypes::Flow(flow)) = &resp.response_types else {
            continue;
        };
        let Some(src) = flow.source.as_ref().filter(|s| !s.pod_name.is_empty()) else {
            continue;
        };
        let Some(p) = imdsguard_hubble_proto::process::get(flow)
            .filter(|p| !p.container.is_empty() && !p.process.is_empty())
        else {
            continue;
        };
        let (sport, port) = match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
            Some(Protocol::Tcp(t)) => (t.source_port, t.destination_port),
            Some(Protocol::Udp(u)) => (u.source_port, u.destination_port),
            _ => (0, 0),
        };
        let dst = flow.ip.as_ref().map_or("?", |i| i.destination.as_str());
        let who = format!(
            "{}/{} [{}: {}] → {dst}:{port}",
            src.namespace, src.pod_name, p.container, p.process
        );
        match out.iter_mut().find(|(w, _)| *w == who) {
            Some((_, ports)) if !ports.contains(&sport) => ports.push(sport),
            Some(_) => {}
            None => out.push((who, vec![sport])),
        }
    }
    out.into_iter().map(|(w, ports)| (w, ports.len())).collect()
}

/// A policy manifest with the audit-mode annotation added, as a user would roll a deny out:
/// into its `annotations:`, or a new one under `metadata:`; `None` when it has no `metadata:`.
fn audit_policy(manifest: &str) -> Option<String> {
    let key = imdsguard_policy::api::AUDIT_ANNOTATION;
    let entry = format!("    {key}: \"true\"\n");
    if let Some(at) = manifest.find("\n  annotations:\n") {
        let at = at + "\n  annotations:\n".len();
        return Some(format!("{}{entry}{}", &manifest[..at], &manifest[at..]));
    }
    let at = manifest.find("\nmetadata:\n")? + "\nmetadata:\n".len();
    Some(format!(
        "{}  annotations:\n{entry}{}",
        &manifest[..at],
        &manifest[at..]
    ))
}

/// Replaces a policy file in one rename, so the agent never reads half of it.
fn write_policy(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("replacing {}", path.display())))
}

fn now_rfc3339() -> String {
    imdsguard_hubble_proto::wkt::Timestamp::now().to_string()
}

/// Tells the story. Ok(true) when it came out as the seed says: in audit mode the webapp's calls
/// pass as AUDIT and whatif names them; enforced, the webapp's calls denied, the fluent-bit
/// requests forwarded through the proxy, its token granted, and no denial after the fix.
pub fn run(opts: &DemoOptions, out: &Output<'_>) -> Result<bool> {
    let started = Instant::now();
    let check = || -> Result<()> {
        if opts.interrupted.load(Ordering::Relaxed) {
            return Err(DemoError::Interrupted);
        }
        Ok(())
    };
    let topology = crate::topology::load(&opts.topology)?;
    let dir = std::env::temp_dir().join(format!("imdsguard-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("policies")).map_err(io("creating the demo directory"))?;
    let routing_added = !imdsguard_proxy::routing::installed(imdsguard_proxy::routing::TABLE);
    let mut stage = Stage {
        lab: None,
        agent: None,
        agent_log: Arc::default(),
        dir: dir.clone(),
        routing_added,
        keep: opts.keep,
        problem: out.problem,
    };

    out.heading(&format!(
        "The lab: the seed's node, pods as network namespaces, IMDS emulated at {IMDS_ADDRESS}"
    ));
    let state = lab::up(
        &topology,
        &UpOptions {
            interrupted: opts.interrupted.clone(),
            name: format!("demo{}", std::process::id()),
            state_root: dir.join("lab"),
            binary: opts.binary.clone(),
            mark: LAB_MARK,
        },
        &|step| (out.line)(&format!("  {step}")),
    )?;
    stage.lab = Some(state.clone());

    let mut agent = Command::new(&opts.binary);
    agent
        .args(["agent", "--endpoints"])
        .arg(state.endpoints_file())
        .arg("--policies")
        .arg(dir.join("policies"))
        .arg("--bpf-root")
        .arg(dir.join("bpf"))
        .args([
            "--hubble-listen-address",
            "127.0.0.1:0",
            "--proxy-port",
            &(16500 + std::process::id() % 1000).to_string(),
            "--proxy-upstream-mark",
            &format!("{LAB_MARK:#x}"),
            "--node-name",
            "aks-default-13458874-vmss00001w",
        ]);
    // The hooks that tell which container and process called cover the lab's cgroups only.
    if let Some(root) = &state.cgroup_root {
        agent.arg("--cgroup-root").arg(root);
    }
    let mut agent = agent
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("starting the agent"))?;
    let stderr = agent.stderr.take().ok_or(DemoError::AgentStderr)?;
    stage.agent = Some(agent);
    let sink = stage.agent_log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr)
            .lines()
            .map_while(std::io::Result::ok)
        {
            if let Ok(mut l) = sink.lock() {
                l.push(line);
            }
        }
    });
    let addr = stage
        .wait_log(0, "hubble: serving on ", Duration::from_secs(20))?
        .split_once("hubble: serving on ")
        .map_or("", |(_, a)| a)
        .to_owned();
    stage.wait_log(
        0,
        &format!("attached to {}", state.pods[state.pods.len() - 1].netns),
        Duration::from_secs(20),
    )?;
    (out.line)(&format!(
        "  agent: enforcing on {} pod interfaces, Hubble API on {addr}",
        state.pods.len()
    ));

    check()?;
    out.heading("1. No policy: who in the webapp's pod calls IMDS?");
    let t0 = now_rfc3339();
    let before = sidecar_calls(&state)?;
    (out.line)(&format!(
        "  calls from the pod (GCP probe, AWS token, Azure instance): HTTP {before:?}"
    ));
    std::thread::sleep(Duration::from_millis(300));
    out.show(
        &observe(&opts.binary, &addr, &t0, &["--print-process"])?,
        &[WEBAPP],
    );
    // The seed's engineer had only the pod; the flows name the container and the process.
    let who = callers(&observe(&opts.binary, &addr, &t0, &["-o", "json"])?);
    for (caller, n) in who.iter().filter(|(c, _)| c.contains(WEBAPP)) {
        (out.line)(&format!("  caller: {caller} ({n} connections)"));
    }
    let culprit = format!("[{}: {}]", SIDECAR.0, SIDECAR.1);
    let named = state.cgroup_root.is_none()
        || who
            .iter()
            .any(|(c, _)| c.contains(WEBAPP) && c.contains(&culprit));
    if state.cgroup_root.is_none() {
        (out.line)("  (no cgroup v2 on this machine: the flows cannot name the container)");
    }

    check()?;
    out.heading(
        "2. Roll out in audit mode: the seed's policies, the deny annotated policy.imdsguard.io/audit-mode: \"true\"",
    );
    // The annotated deny reports what it would drop, as AUDIT, and drops nothing; every other
    // policy keeps enforcing.
    let lines = stage.agent_lines();
    let deny = opts.policies.join("azure-imds-deny.yaml");
    let plain_deny =
        std::fs::read_to_string(&deny).map_err(io(format!("reading {}", deny.display())))?;
    let audited_deny = audit_policy(&plain_deny).ok_or_else(|| DemoError::Io {
        what: format!("{}: no metadata to annotate", deny.display()),
        source: std::io::Error::other("not a Kubernetes object"),
    })?;
    for f in ["cidrgroup.yaml", "azure-imds-allow.yaml"] {
        let from = opts.policies.join(f);
        std::fs::copy(&from, dir.join("policies").join(f))
            .map_err(io(format!("copying {}", from.display())))?;
        (out.line)(&format!("  applied {}", from.display()));
    }
    write_policy(
        &dir.join("policies").join("azure-imds-deny.yaml"),
        &audited_deny,
    )?;
    (out.line)(&format!(
        "  applied {} with policy.imdsguard.io/audit-mode: \"true\"",
        deny.display()
    ));
    stage.wait_log(lines, "enforced ", Duration::from_secs(10))?;
    let ta = now_rfc3339();
    let audited_calls = sidecar_calls(&state)?;
    std::thread::sleep(Duration::from_millis(300));
    let audit_flows = observe(&opts.binary, &addr, &ta, &[])?;
    out.show(&audit_flows, &[WEBAPP]);
    let audited = audit_flows
        .lines()
        .filter(|l| l.contains(WEBAPP) && l.contains("AUDIT"))
        .count();
    (out.line)(&format!(
        "  webapp sidecar calls: HTTP {audited_calls:?}: they still reach IMDS, reported as AUDIT"
    ));

    check()?;
    out.heading(
        "3. What would enforcing break? `imdsguard policy whatif` on the agent's recent flows",
    );
    let whatif = Command::new(&opts.binary)
        .args(["policy", "whatif", "--server", &addr, "--group-by", "pod"])
        .arg(dir.join("policies"))
        .output()
        .map_err(io("running policy whatif"))?;
    let report = String::from_utf8_lossy(&whatif.stdout);
    for line in report.lines() {
        (out.line)(&format!("  {line}"));
    }
    let breaks = report.contains(WEBAPP) && report.contains("→ DENIED");

    check()?;
    out.heading("4. Enforce: the annotation goes; the seed's CiliumCIDRGroup and both CiliumClusterwideNetworkPolicies");
    let lines = stage.agent_lines();
    write_policy(
        &dir.join("policies").join("azure-imds-deny.yaml"),
        &plain_deny,
    )?;
    stage.wait_log(lines, "enforced ", Duration::from_secs(10))?;
    (out.line)("  removed the annotation from azure-imds-deny: it enforces");
    let t1 = now_rfc3339();
    let denied = sidecar_calls(&state)?;
    let token = token_call(&state, "GET", TOKEN)?;
    let post = token_call(&state, "POST", "/metadata/instance?api-version=2021-02-01")?;
    std::thread::sleep(Duration::from_millis(300));
    let flows = observe(&opts.binary, &addr, &t1, &[])?;
    out.show(&flows, &[WEBAPP, FLUENT_BIT]);
    (out.line)(&format!(
        "  webapp sidecar calls: HTTP {denied:?} (0 = dropped by the datapath, no answer)"
    ));
    (out.line)(&format!("  fluent-bit token request: HTTP {token}"));
    (out.line)(&format!(
        "  fluent-bit POST /metadata/instance (outside `GET /metadata`): forwarded by the proxy, IMDS answered HTTP {post}"
    ));
    (out.line)(
        "  Why the POST passed: azure-imds-allow sets enableDefaultDeny.egress: false, so Cilium adds a\n  \
         wildcard to the HTTP rules of that port and `GET /metadata` restricts nothing; the proxy only\n  \
         makes the requests visible. examples/azure-imds/scenario-enforced.yaml shows the enforced variant.",
    );

    check()?;
    out.heading("5. The fix from the seed: the sidecar no longer calls IMDS (CLOUD_PLATFORM=none)");
    let t2 = now_rfc3339();
    let token_after = token_call(&state, "GET", TOKEN)?;
    std::thread::sleep(Duration::from_millis(300));
    let after = observe(&opts.binary, &addr, &t2, &[])?;
    out.show(&after, &[WEBAPP, FLUENT_BIT]);
    let denied_after = after
        .lines()
        .filter(|l| l.contains("DROPPED") && l.contains(WEBAPP))
        .count();

    out.heading("Summary");
    let dropped = flows
        .lines()
        .filter(|l| l.contains(WEBAPP) && l.contains("Policy denied by denylist DROPPED"))
        .count();
    let forwarded = flows
        .lines()
        .filter(|l| l.contains(FLUENT_BIT) && l.contains("http-request FORWARDED"))
        .count();
    let sender = if state.cgroup_root.is_some() && named {
        format!(
            "the flows named their sender: container {}, process {}",
            SIDECAR.0, SIDECAR.1
        )
    } else {
        "the flows could not name their sender".to_owned()
    };
    (out.line)(&format!(
        "  without policy: {} calls reached IMDS; {sender}",
        before.iter().filter(|c| **c != 0).count(),
    ));
    (out.line)(&format!(
        "  in audit mode: {audited} webapp flows AUDIT, and whatif named what enforcing would deny"
    ));
    (out.line)(&format!(
        "  with the seed's policies: {dropped} webapp packets denied by azure-imds-deny (denylist), {forwarded} fluent-bit requests forwarded through the L7 proxy"
    ));
    (out.line)(&format!(
        "  after the fix: {denied_after} denied flows; fluent-bit still gets its token (HTTP {token_after})"
    ));
    (out.line)(&format!("  took {:.1} s", started.elapsed().as_secs_f64()));
    if opts.keep {
        let pid = stage.agent.as_ref().map_or(0, Child::id);
        (out.line)(&format!(
            "\n  kept: the agent (pid {pid}, Hubble API on {addr}) and lab {name:?}.\n  \
             look:  imdsguard observe --server {addr} -f\n         \
             imdsguard lab exec --name {name} --state-dir {lab} <pod> -- curl …\n  \
             stop:  kill {pid}; imdsguard lab down --name {name} --state-dir {lab}; umount {bpf}",
            name = state.name,
            lab = dir.join("lab").display(),
            bpf = dir.join("bpf").display(),
        ));
    }
    Ok(named
        && audited > 0
        && audited_calls.iter().all(|c| *c != 0)
        && breaks
        && dropped > 0
        && forwarded > 0
        && token == 200
        && denied_after == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rollout_step_annotates_the_seeds_deny_for_audit() {
        let decode = |text: &str| {
            let d = imdsguard_policy::decode_source(
                &imdsguard_manifest::Source::new("deny.yaml", text),
                &imdsguard_policy::DecodeOptions::default(),
            );
            assert!(d.errors.is_empty(), "{:?}", d.errors);
            d.policies.into_iter().map(|p| p.audit).collect::<Vec<_>>()
        };
        let seed = include_str!("../../../examples/azure-imds/azure-imds-deny.yaml");
        assert_eq!(decode(seed), [false]);
        let audited = audit_policy(seed).expect("the seed's deny has metadata");
        assert_eq!(decode(&audited), [true]);
        // A policy without annotations gets them.
        let bare = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: d\nspec:\n  endpointSelector: {}\n  egressDeny: [{toCIDR: [169.254.169.254/32]}]\n";
        assert_eq!(decode(&audit_policy(bare).expect("metadata")), [true]);
        assert!(audit_policy("kind: x\n").is_none());
    }

    /// The demo's caller line comes from `observe -o json` through the project's reader: one
    /// line per pod, container, process and destination, counting connections by source port.
    #[test]
    fn callers_name_the_pod_container_and_process_and_count_connections() {
        let line = |sport: u16, container: &str| {
            format!(
                r#"{{"flow":{{"verdict":"FORWARDED","IP":{{"source":"10.0.0.5","destination":"169.254.169.254","ipVersion":"IPv4"}},"l4":{{"TCP":{{"source_port":{sport},"destination_port":80}}}},"source":{{"namespace":"go-webapp","pod_name":"web-1"}},"extensions":{{"@type":"type.googleapis.com/google.protobuf.Struct","value":{{"container":"{container}","pid":4242,"process":"pilot-agent","uid":1337}}}}}},"node_name":"n"}}"#
            )
        };
        let text = [
            line(40000, "istio-proxy"),
            line(40000, "istio-proxy"),
            line(40001, "istio-proxy"),
            line(40002, "app"),
            "not json".to_owned(),
            r#"{"flow":{"verdict":"FORWARDED","source":{"namespace":"a","pod_name":"b"}}}"#
                .to_owned(),
        ]
        .join("\n");
        assert_eq!(
            callers(&text),
            [
                (
                    "go-webapp/web-1 [istio-proxy: pilot-agent] → 169.254.169.254:80".to_owned(),
                    2
                ),
                (
                    "go-webapp/web-1 [app: pilot-agent] → 169.254.169.254:80".to_owned(),
                    1
                ),
            ]
        );
    }
}
