//! Bringing a lab up and down. Every step is recorded in the state file before the next one
//! starts, so a lab whose `up` failed or was interrupted is taken down by `down` all the same.

use crate::topology::Topology;
use imdsguard_netns::{Pod, delete_link, delete_netns, run};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{0}")]
    Netns(#[from] imdsguard_netns::NetnsError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("lab {0:?} is already up: take it down first with `imdsguard lab down --name {0}`")]
    AlreadyUp(String),
    #[error("no lab {0:?} is up (no state under /run/imdsguard/lab)")]
    NotUp(String),
    #[error("{0}")]
    Unsafe(String),
    #[error("{0}")]
    Step(String),
}

type Result<T> = std::result::Result<T, LabError>;

/// Where the lab's emulator listens, in a namespace of its own: the metadata address the pods'
/// clients call.
pub const IMDS_ADDRESS: Ipv4Addr = imdsguard_metadata::IMDS_V4;

/// The mark the lab routes to its IMDS: give it to the agent as --proxy-upstream-mark.
pub const LAB_MARK: u32 = 0xa00;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodRecord {
    /// The pod's name and namespace as the agent knows them.
    pub name: String,
    pub namespace: String,
    /// The network namespace, which is also the host-side interface's name.
    pub netns: String,
    pub ipv4: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessRecord {
    pub pod: String,
    pub container: String,
    pub pid: u32,
    pub cgroup: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LabState {
    pub name: String,
    pub dir: PathBuf,
    /// The routing table that leads to the lab's IMDS, and the priority of the rules into it.
    pub table: u32,
    pub priority: u32,
    /// Traffic with this mark (the agent's proxy upstream, `--proxy-upstream-mark`) also goes to
    /// the lab's IMDS.
    pub mark: u32,
    pub rules: Vec<String>,
    pub imds: Option<PodRecord>,
    pub pods: Vec<PodRecord>,
    pub processes: Vec<ProcessRecord>,
    pub cgroup_root: Option<PathBuf>,
}

impl LabState {
    pub fn endpoints_file(&self) -> PathBuf {
        self.dir.join("endpoints.yaml")
    }

    pub fn imds_log(&self) -> PathBuf {
        self.dir.join("imds-requests.log")
    }

    fn save(&self) -> Result<()> {
        let path = self.dir.join("state.json");
        let text = serde_json::to_string_pretty(self).map_err(|e| LabError::Step(e.to_string()))?;
        std::fs::write(&path, text).map_err(|source| LabError::Io { path, source })
    }

    pub fn pod(&self, name: &str) -> Option<&PodRecord> {
        self.pods.iter().find(|p| p.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Set (by a SIGINT handler) to stop `up` between steps; it then takes down what it made.
    pub interrupted: Arc<AtomicBool>,
    pub name: String,
    /// Where lab state lives (`/run/imdsguard/lab`).
    pub state_root: PathBuf,
    /// The imdsguard binary, to run the emulator.
    pub binary: PathBuf,
    pub mark: u32,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads the state of a lab that is up.
pub fn load(state_root: &Path, name: &str) -> Result<LabState> {
    let path = state_root.join(name).join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|_| LabError::NotUp(name.to_owned()))?;
    serde_json::from_str(&text).map_err(|e| LabError::Step(format!("{}: {e}", path.display())))
}

/// Short names: interface names have 15 bytes at most.
fn short_id(name: &str) -> String {
    let h = name.bytes().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x01000193)
    });
    format!("{:04x}", (h ^ std::process::id()) & 0xffff)
}

/// Brings the lab up. On any failure everything made so far is taken down again.
pub fn up(t: &Topology, opts: &UpOptions, progress: &dyn Fn(&str)) -> Result<LabState> {
    let dir = opts.state_root.join(&opts.name);
    if dir.join("state.json").exists() {
        return Err(LabError::AlreadyUp(opts.name.clone()));
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let id = short_id(&opts.name);
    let mut state = LabState {
        name: opts.name.clone(),
        dir,
        table: 20_000 + u32::from_str_radix(&id, 16).unwrap_or(0) % 10_000,
        priority: 90,
        mark: opts.mark,
        ..Default::default()
    };
    state.save()?;
    match build(t, opts, &id, &mut state, progress) {
        Ok(()) => Ok(state),
        Err(e) => {
            progress(&format!("lab up failed ({e}); taking down what was made"));
            for problem in down(&state) {
                progress(&format!("cleanup: {problem}"));
            }
            Err(e)
        }
    }
}

fn check(opts: &UpOptions) -> Result<()> {
    if opts.interrupted.load(Ordering::Relaxed) {
        return Err(LabError::Step("interrupted".into()));
    }
    Ok(())
}

fn add_rule(state: &mut LabState, selector: &[&str]) -> Result<()> {
    let table = state.table.to_string();
    let priority = state.priority.to_string();
    let mut args = vec!["rule", "add"];
    args.extend_from_slice(selector);
    args.extend(["lookup", &table, "pref", &priority]);
    run("ip", &args)?;
    state.rules.push(selector.join(" "));
    state.save()
}

fn build(
    t: &Topology,
    opts: &UpOptions,
    id: &str,
    state: &mut LabState,
    progress: &dyn Fn(&str),
) -> Result<()> {
    // The emulator's namespace at the metadata address, routed only through the lab's table.
    let imds_ns = format!("lb{id}md");
    progress(&format!(
        "creating the IMDS namespace {imds_ns} at {IMDS_ADDRESS}"
    ));
    state.imds = Some(PodRecord {
        name: "imds".into(),
        namespace: String::new(),
        netns: imds_ns.clone(),
        ipv4: IMDS_ADDRESS,
    });
    state.save()?;
    Pod::create_routed(&imds_ns, IMDS_ADDRESS, None, Some(state.table))?.keep();
    for (i, p) in t.pods.iter().enumerate() {
        check(opts)?;
        let netns = format!("lb{id}p{i}");
        progress(&format!(
            "creating pod {}/{} ({netns}, {})",
            p.endpoint.spec.namespace, p.endpoint.handle, p.ipv4
        ));
        state.pods.push(PodRecord {
            name: p.endpoint.handle.clone(),
            namespace: p.endpoint.spec.namespace.clone(),
            netns: netns.clone(),
            ipv4: p.ipv4,
        });
        state.save()?;
        Pod::create(&netns, p.ipv4, None)?.keep();
        add_rule(state, &["iif", &netns])?;
    }
    check(opts)?;
    let mark = format!("{:#x}/0xf00", state.mark);
    add_rule(state, &["fwmark", &mark])?;
    check_routes(state)?;

    // The emulator, logging every request it receives.
    let log = state.imds_log();
    let out = std::fs::File::create(state.dir.join("imds-emulator.out")).map_err(io(&state.dir))?;
    let err = out.try_clone().map_err(io(&state.dir))?;
    let child = Command::new("ip")
        .args(["netns", "exec", &imds_ns])
        .arg(&opts.binary)
        .args([
            "imds-emulator",
            "--listen",
            &format!("{IMDS_ADDRESS}:80"),
            "--flavor",
            &t.imds_flavor,
        ])
        .arg("--log-file")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| LabError::Step(format!("starting the IMDS emulator: {e}")))?;
    state.processes.push(ProcessRecord {
        pod: "imds".into(),
        container: "imds-emulator".into(),
        pid: child.id(),
        cgroup: None,
    });
    state.save()?;
    wait_for(
        &state.dir.join("imds-emulator.out"),
        "imds-emulator: serving",
    )?;
    progress(&format!(
        "IMDS emulator ({}) serving at {IMDS_ADDRESS}:80",
        t.imds_flavor
    ));

    // Containers, each in its pod's namespace and a cgroup of its own.
    let cgroup_base = Path::new("/sys/fs/cgroup/unified");
    let cgroup_root = cgroup_base
        .exists()
        .then(|| cgroup_base.join(format!("imdsguard-lab-{}", state.name)));
    if let Some(root) = &cgroup_root {
        std::fs::create_dir_all(root).map_err(io(root))?;
        state.cgroup_root = Some(root.clone());
        state.save()?;
    }
    for (p, rec) in t.pods.iter().zip(state.pods.clone()) {
        for c in &p.containers {
            check(opts)?;
            let cgroup = cgroup_root
                .as_ref()
                .map(|r| r.join(format!("{}-{}", rec.netns, c.name)));
            if let Some(cg) = &cgroup {
                std::fs::create_dir_all(cg).map_err(io(cg))?;
            }
            let logf = state
                .dir
                .join(format!("{}.{}.log", p.endpoint.handle, c.name));
            let out = std::fs::File::create(&logf).map_err(io(&logf))?;
            let err = out.try_clone().map_err(io(&logf))?;
            // Join the cgroup first: `ip netns exec` remounts /sys.
            let script = match &cgroup {
                Some(cg) => format!(
                    "echo $$ > {}/cgroup.procs && exec ip netns exec {} \"$@\"",
                    cg.display(),
                    rec.netns
                ),
                None => format!("exec ip netns exec {} \"$@\"", rec.netns),
            };
            let child = Command::new("sh")
                .args(["-c", &script, "sh"])
                .args(&c.command)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| {
                    LabError::Step(format!("starting {}/{}: {e}", p.endpoint.handle, c.name))
                })?;
            progress(&format!(
                "started container {} in {}",
                c.name, p.endpoint.handle
            ));
            state.processes.push(ProcessRecord {
                pod: p.endpoint.handle.clone(),
                container: c.name.clone(),
                pid: child.id(),
                cgroup,
            });
            state.save()?;
        }
    }
    let interfaces: Vec<(String, String)> = state
        .pods
        .iter()
        .map(|p| (p.name.clone(), p.netns.clone()))
        .collect();
    let path = state.endpoints_file();
    std::fs::write(&path, crate::topology::endpoints_file(t, &interfaces)).map_err(io(&path))?;
    Ok(())
}

/// Before any traffic: the metadata address leads to the lab's namespace from every pod and for
/// the marked traffic, and nowhere else changed.
fn check_routes(state: &LabState) -> Result<()> {
    let imds = state
        .imds
        .as_ref()
        .map(|p| p.netns.clone())
        .unwrap_or_default();
    let dev_of = |out: String| imdsguard_netns::route_dev(&out).unwrap_or_default();
    let imds_address = IMDS_ADDRESS.to_string();
    for p in &state.pods {
        let got = dev_of(run(
            "ip",
            &[
                "route",
                "get",
                &imds_address,
                "from",
                &p.ipv4.to_string(),
                "iif",
                &p.netns,
            ],
        )?);
        if got != imds {
            return Err(LabError::Unsafe(format!(
                "from pod {} {IMDS_ADDRESS} routes via {got:?}, not the lab's {imds:?}: refusing to go on",
                p.name
            )));
        }
    }
    let mark = format!("{:#x}", state.mark);
    let got = dev_of(run("ip", &["route", "get", &imds_address, "mark", &mark])?);
    if got != imds {
        return Err(LabError::Unsafe(format!(
            "marked traffic to {IMDS_ADDRESS} routes via {got:?}, not the lab's {imds:?}"
        )));
    }
    Ok(())
}

fn wait_for(file: &Path, needle: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::fs::read_to_string(file).is_ok_and(|t| t.contains(needle)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(file).unwrap_or_default();
    Err(LabError::Step(format!(
        "waited 10 s for {needle:?} in {}: {text}",
        file.display()
    )))
}

/// Whether `pid` is still the process the lab started (its command line names what it ran).
fn ours(pid: u32, what: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(what))
        .unwrap_or(false)
}

/// Takes the lab down; returns what could not be removed (empty when everything went).
pub fn down(state: &LabState) -> Vec<String> {
    let mut problems = Vec::new();
    for p in &state.processes {
        let marker = if p.container == "imds-emulator" {
            "imds-emulator"
        } else {
            "netns"
        };
        if ours(p.pid, marker) {
            // SAFETY: kill(2) on a pid this lab started and whose command line still matches.
            unsafe {
                libc::kill(p.pid as i32, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    for p in &state.processes {
        while Path::new(&format!("/proc/{}", p.pid)).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if ours(p.pid, "netns") || ours(p.pid, "imds-emulator") {
            // SAFETY: as above.
            unsafe {
                libc::kill(p.pid as i32, libc::SIGKILL);
            }
        }
    }
    for p in &state.processes {
        if let Some(cg) = &p.cgroup {
            // Processes the container started (its children) stay in its cgroup: end them too.
            if let Ok(pids) = std::fs::read_to_string(cg.join("cgroup.procs")) {
                for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: these pids are in a cgroup this lab created for its own process.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
            if let Err(e) = std::fs::remove_dir(cg)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                problems.push(format!("removing {}: {e}", cg.display()));
            }
        }
    }
    if let Some(root) = &state.cgroup_root {
        let _ = std::fs::remove_dir(root);
    }
    let table = state.table.to_string();
    let priority = state.priority.to_string();
    for rule in &state.rules {
        let mut args = vec!["rule", "del"];
        args.extend(rule.split(' '));
        args.extend(["lookup", table.as_str(), "pref", priority.as_str()]);
        if let Err(e) = run("ip", &args) {
            problems.push(e.to_string());
        }
    }
    let _ = run("ip", &["route", "flush", "table", &table]);
    for p in state.pods.iter().chain(state.imds.iter()) {
        let _ = delete_link(&p.netns);
        if let Err(e) = delete_netns(&p.netns)
            && !e.to_string().contains("No such file")
        {
            problems.push(e.to_string());
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&state.dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        problems.push(format!("removing {}: {e}", state.dir.display()));
    }
    problems
}

/// What `lab status` shows, one line per entry: the pods and the emulator with their addresses
/// and namespaces (`(gone)` when the namespace no longer exists), the processes (running or
/// exited), and the endpoints file.
pub fn status_report(state: &LabState) -> Vec<String> {
    let mut out = vec![
        format!("lab {:?} (state in {})", state.name, state.dir.display()),
        format!("  {:<34} {:<16} {:<16} INTERFACE", "POD", "NAMESPACE", "IP"),
    ];
    for p in state.pods.iter().chain(state.imds.iter()) {
        let present = Path::new("/run/netns").join(&p.netns).exists();
        out.push(format!(
            "  {:<34} {:<16} {:<16} {}{}",
            p.name,
            p.namespace,
            p.ipv4,
            p.netns,
            if present { "" } else { " (gone)" }
        ));
    }
    for p in &state.processes {
        let alive = Path::new(&format!("/proc/{}", p.pid)).exists();
        out.push(format!(
            "  process {}/{} pid {} {}",
            p.pod,
            p.container,
            p.pid,
            if alive { "running" } else { "exited" }
        ));
    }
    out.push(format!(
        "  endpoints file: {}",
        state.endpoints_file().display()
    ));
    out
}

/// A command that runs inside a lab pod's network namespace.
pub fn exec(state: &LabState, pod: &str, argv: &[String]) -> Result<Command> {
    let p = state
        .pod(pod)
        .or_else(|| (pod == "imds").then_some(state.imds.as_ref()).flatten())
        .ok_or_else(|| {
            LabError::Step(format!(
                "no pod {pod:?} in lab {:?}; pods: {}",
                state.name,
                state
                    .pods
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &p.netns]).args(argv);
    Ok(c)
}
