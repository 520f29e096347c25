//! `imdsguard demo`: the seed's story, end to end, with real traffic on this machine. A lab with
//! the seed's pods, the agent enforcing the seed's own policies, and the flows printed as
//! `hubble observe` prints them.

use super::lab::LAB_MARK;
use anyhow::{Context, Result, bail};
use clap::Args;
use imdsguard_lab::lab::{self, LabState, UpOptions};
use imdsguard_manifest::Source;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Leave the lab and the agent running at the end, for `imdsguard observe` and curl by hand.
    #[arg(long)]
    keep: bool,
    /// The seed's policies.
    #[arg(long, default_value = "examples/azure-imds")]
    policies: PathBuf,
    #[arg(long, default_value = "examples/azure-imds/lab.yaml")]
    topology: PathBuf,
}

const WEBAPP: &str = "go-webapp-847857f68-2qlnd";
const FLUENT_BIT: &str = "fluent-bit-qg7vq";
const TOKEN: &str = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fapi.kusto.windows.net";

/// Everything the demo started, undone on drop (unless --keep).
struct Stage {
    lab: Option<LabState>,
    agent: Option<Child>,
    agent_log: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
    routing_added: bool,
    keep: bool,
}

impl Drop for Stage {
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
                eprintln!("cleanup: {p}");
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

impl Stage {
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
        bail!("the agent never logged {needle:?}; its log:\n{log}")
    }

    fn agent_lines(&self) -> usize {
        self.agent_log.lock().map(|l| l.len()).unwrap_or(0)
    }
}

fn heading(text: &str) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1m== {text}\x1b[0m");
    } else {
        println!("\n== {text}");
    }
}

/// Runs curl in a lab pod; returns the HTTP status (0 when it timed out: dropped).
fn curl(state: &LabState, pod: &str, args: &[&str]) -> Result<u16> {
    let mut argv: Vec<String> = [
        "curl",
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
    let out = lab::exec(state, pod, &argv)?.output().context("curl")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0))
}

/// The calls the Istio sidecar's platform detection makes
/// (docs/metadata-services.md#what-clients-send).
fn sidecar_calls(state: &LabState) -> Result<Vec<u16>> {
    let base = "http://169.254.169.254";
    Ok(vec![
        curl(state, WEBAPP, &[&format!("{base}/")])?,
        curl(
            state,
            WEBAPP,
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
        &[
            "-X",
            method,
            "-H",
            "Metadata: true",
            &format!("http://169.254.169.254{path}"),
        ],
    )
}

fn observe(addr: &str, since: &str) -> Result<String> {
    let out = Command::new(std::env::current_exe()?)
        .args([
            "observe",
            "--server",
            addr,
            "--since",
            since,
            "--ip",
            "169.254.169.254",
            "--last",
            "200",
        ])
        .output()
        .context("observe")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn show(flows: &str, pods: &[&str]) {
    for line in flows.lines().filter(|l| pods.iter().any(|p| l.contains(p))) {
        println!("  {line}");
    }
}

fn now_rfc3339() -> String {
    imdsguard_hubble_proto::wkt::Timestamp::now().to_string()
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    // Ctrl-C stops the demo between steps; dropping the stage then cleans up.
    let interrupted = crate::interrupt::flag();
    let check = || -> Result<()> {
        if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            bail!("interrupted; cleaning up");
        }
        Ok(())
    };
    let text = std::fs::read_to_string(&args.topology)
        .with_context(|| format!("reading {}", args.topology.display()))?;
    let topology =
        imdsguard_lab::topology::parse(&Source::new(args.topology.display().to_string(), text))?;
    let dir = std::env::temp_dir().join(format!("imdsguard-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("policies")).context("creating the demo directory")?;
    let routing_added = !imdsguard_proxy::routing::installed(imdsguard_proxy::routing::TABLE);
    let mut stage = Stage {
        lab: None,
        agent: None,
        agent_log: Arc::default(),
        dir: dir.clone(),
        routing_added,
        keep: args.keep,
    };

    heading(
        "The lab: the seed's node, pods as network namespaces, IMDS emulated at 169.254.169.254",
    );
    let state = lab::up(
        &topology,
        &UpOptions {
            interrupted: interrupted.clone(),
            name: format!("demo{}", std::process::id()),
            state_root: dir.join("lab"),
            binary: std::env::current_exe()?,
            mark: LAB_MARK,
        },
        &|step| println!("  {step}"),
    )?;
    stage.lab = Some(state.clone());

    let exe = std::env::current_exe()?;
    let mut agent = Command::new(&exe)
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
        ])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the agent")?;
    let stderr = agent.stderr.take().context("agent stderr")?;
    stage.agent = Some(agent);
    let sink = stage.agent_log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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
    println!(
        "  agent: enforcing on {} pod interfaces, Hubble API on {addr}",
        state.pods.len()
    );

    check()?;
    heading("1. No policy: the webapp's Istio sidecar reaches IMDS");
    let t0 = now_rfc3339();
    let before = sidecar_calls(&state)?;
    println!("  sidecar calls (GCP probe, AWS token, Azure instance): HTTP {before:?}");
    std::thread::sleep(Duration::from_millis(300));
    show(&observe(&addr, &t0)?, &[WEBAPP]);

    check()?;
    heading("2. The seed's CiliumCIDRGroup and both CiliumClusterwideNetworkPolicies");
    let lines = stage.agent_lines();
    for f in [
        "cidrgroup.yaml",
        "azure-imds-deny.yaml",
        "azure-imds-allow.yaml",
    ] {
        let from = args.policies.join(f);
        std::fs::copy(&from, dir.join("policies").join(f))
            .with_context(|| format!("copying {}", from.display()))?;
        println!("  applied {}", from.display());
    }
    stage.wait_log(lines, "enforced ", Duration::from_secs(10))?;
    let t1 = now_rfc3339();
    let denied = sidecar_calls(&state)?;
    let token = token_call(&state, "GET", TOKEN)?;
    let post = token_call(&state, "POST", "/metadata/instance?api-version=2021-02-01")?;
    std::thread::sleep(Duration::from_millis(300));
    let flows = observe(&addr, &t1)?;
    show(&flows, &[WEBAPP, FLUENT_BIT]);
    println!("  webapp sidecar calls: HTTP {denied:?} (0 = dropped by the datapath, no answer)");
    println!("  fluent-bit token request: HTTP {token}");
    println!(
        "  fluent-bit POST /metadata/instance (outside `GET /metadata`): forwarded by the proxy, IMDS answered HTTP {post}"
    );
    println!(
        "  Why the POST passed: azure-imds-allow sets enableDefaultDeny.egress: false, so Cilium adds a\n  \
         wildcard to the HTTP rules of that port and `GET /metadata` restricts nothing; the proxy only\n  \
         makes the requests visible. examples/azure-imds/scenario-enforced.yaml shows the enforced variant."
    );

    check()?;
    heading("3. The fix from the seed: the sidecar no longer calls IMDS (CLOUD_PLATFORM=none)");
    let t2 = now_rfc3339();
    let token_after = token_call(&state, "GET", TOKEN)?;
    std::thread::sleep(Duration::from_millis(300));
    let after = observe(&addr, &t2)?;
    show(&after, &[WEBAPP, FLUENT_BIT]);
    let denied_after = after
        .lines()
        .filter(|l| l.contains("DROPPED") && l.contains(WEBAPP))
        .count();

    heading("Summary");
    let dropped = flows
        .lines()
        .filter(|l| l.contains(WEBAPP) && l.contains("Policy denied by denylist DROPPED"))
        .count();
    let forwarded = flows
        .lines()
        .filter(|l| l.contains(FLUENT_BIT) && l.contains("http-request FORWARDED"))
        .count();
    println!(
        "  without policy: the sidecar's {} calls reached IMDS",
        before.iter().filter(|c| **c != 0).count()
    );
    println!(
        "  with the seed's policies: {dropped} webapp packets denied by azure-imds-deny (denylist), {forwarded} fluent-bit requests forwarded through the L7 proxy"
    );
    println!(
        "  after the fix: {denied_after} denied flows; fluent-bit still gets its token (HTTP {token_after})"
    );
    println!("  took {:.1} s", started.elapsed().as_secs_f64());
    if args.keep {
        let pid = stage.agent.as_ref().map_or(0, Child::id);
        println!(
            "\n  kept: the agent (pid {pid}, Hubble API on {addr}) and lab {name:?}.\n  \
             look:  imdsguard observe --server {addr} -f\n         \
             imdsguard lab exec --name {name} --state-dir {lab} <pod> -- curl …\n  \
             stop:  kill {pid}; imdsguard lab down --name {name} --state-dir {lab}; umount {bpf}",
            name = state.name,
            lab = dir.join("lab").display(),
            bpf = dir.join("bpf").display(),
        );
    }
    Ok(
        if dropped > 0 && forwarded > 0 && token == 200 && denied_after == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}
