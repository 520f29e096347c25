//! Bringing a lab up and down. Every step is recorded in the state file before the next one
//! starts, so a lab whose `up` failed or was interrupted is taken down by `down` all the same.
//!
//! Besides the pods' namespaces the lab has a node: a namespace of its own (`lb<id>nd`, routed to
//! the emulator like a pod) that hostNetwork pods share, so that their traffic never leaves from
//! the machine's own namespace. Each container runs in a cgroup of its own (see `cgroups`).

use crate::cgroups;
use crate::topology::{Placement, Topology};
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
    /// The network namespace, which is also the host-side interface's name; a hostNetwork pod
    /// has the lab node's.
    pub netns: String,
    pub ipv4: Ipv4Addr,
    #[serde(default)]
    pub host_network: bool,
    /// The pod's cgroup, its containers' parent (None without cgroup v2).
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessRecord {
    pub pod: String,
    pub container: String,
    pub pid: u32,
    pub cgroup: Option<PathBuf>,
    /// The process's start time (`cgroups::start_time`): down signals the pid only while it
    /// still names this process.
    #[serde(default)]
    pub start_time: Option<u64>,
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
    /// The lab's node: the namespace hostNetwork pods and `lab exec node` share.
    #[serde(default)]
    pub node: Option<PodRecord>,
    pub pods: Vec<PodRecord>,
    pub processes: Vec<ProcessRecord>,
    /// The lab's cgroup subtree: give it to the agent as `--cgroup-root`.
    pub cgroup_root: Option<PathBuf>,
}

impl LabState {
    pub fn endpoints_file(&self) -> PathBuf {
        self.dir.join("endpoints.yaml")
    }

    pub fn imds_log(&self) -> PathBuf {
        self.dir.join("imds-requests.log")
    }

    /// The topology's aliases, put first on the PATH of the lab's processes.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// Whether the topology has hostNetwork pods (the agent needs `--host-network-pods enforce`
    /// to judge them).
    pub fn has_host_network_pods(&self) -> bool {
        self.pods.iter().any(|p| p.host_network)
    }

    /// The cgroup of a pod's container: the one named, else its first (as `kubectl exec`), else
    /// the pod's own; None without cgroup v2.
    pub fn container_cgroup(&self, pod: &str, container: Option<&str>) -> Result<Option<PathBuf>> {
        let ours: Vec<&ProcessRecord> = self.processes.iter().filter(|p| p.pod == pod).collect();
        let found = match container {
            Some(c) => Some(ours.iter().find(|p| p.container == c).ok_or_else(|| {
                LabError::Step(format!(
                    "pod {pod:?} has no container {c:?}; its containers: {}",
                    ours.iter()
                        .map(|p| p.container.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?),
            None => ours.first(),
        };
        Ok(match found {
            Some(p) => p.cgroup.clone(),
            None => self.pod(pod).and_then(|p| p.cgroup.clone()),
        })
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

/// Takes down what `up` made unless `up` got through (also when it panics).
struct Undo<'a> {
    state: Option<LabState>,
    progress: &'a dyn Fn(&str),
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            for problem in down(&state) {
                (self.progress)(&format!("cleanup: {problem}"));
            }
        }
    }
}

/// Brings the lab up. On any failure everything made so far is taken down again.
pub fn up(t: &Topology, opts: &UpOptions, progress: &dyn Fn(&str)) -> Result<LabState> {
    let dir = opts.state_root.join(&opts.name);
    if dir.join("state.json").exists() {
        return Err(LabError::AlreadyUp(opts.name.clone()));
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let id = short_id(&opts.name);
    let state = LabState {
        name: opts.name.clone(),
        dir,
        table: 20_000 + u32::from_str_radix(&id, 16).unwrap_or(0) % 10_000,
        priority: 90,
        mark: opts.mark,
        ..Default::default()
    };
    let mut undo = Undo {
        state: Some(state),
        progress,
    };
    let built = match undo.state.as_mut() {
        Some(state) => state
            .save()
            .and_then(|()| build(t, opts, &id, state, progress)),
        None => Err(LabError::Step("no state".into())),
    };
    match built {
        Ok(()) => undo
            .state
            .take()
            .ok_or_else(|| LabError::Step("no state".into())),
        Err(e) => {
            progress(&format!("lab up failed ({e}); taking down what was made"));
            drop(undo);
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

/// `ip netns exec NETNS argv…` with the lab's aliases first on PATH, joining `cgroup` first.
fn command_in(
    state: &LabState,
    netns: &str,
    cgroup: Option<&Path>,
    argv: &[String],
) -> Result<Command> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns]).args(argv);
    let bin = state.bin_dir();
    if bin.is_dir() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![bin];
        dirs.extend(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(dirs) {
            c.env("PATH", joined);
        }
    }
    if let Some(cg) = cgroup {
        cgroups::join(&mut c, cg).map_err(io(cg))?;
    }
    Ok(c)
}

/// The topology's aliases as symlinks in the state's bin directory: a process's name is the
/// file name it was started by.
fn make_aliases(t: &Topology, state: &LabState) -> Result<()> {
    if t.aliases.is_empty() {
        return Ok(());
    }
    let bin = state.bin_dir();
    std::fs::create_dir_all(&bin).map_err(io(&bin))?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    for (name, program) in &t.aliases {
        let target = if program.contains('/') {
            Some(PathBuf::from(program))
        } else {
            std::env::split_paths(&path)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        }
        .ok_or_else(|| LabError::Step(format!("alias {name}: no program {program:?} on PATH")))?;
        let link = bin.join(name);
        std::os::unix::fs::symlink(&target, &link).map_err(io(&link))?;
    }
    Ok(())
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
        host_network: false,
        cgroup: None,
    });
    state.save()?;
    Pod::create_routed(&imds_ns, IMDS_ADDRESS, None, Some(state.table))?.keep();

    // The node, whose namespace hostNetwork pods share: routed to the emulator as the pods are.
    check(opts)?;
    let node_ns = format!("lb{id}nd");
    progress(&format!(
        "creating the node namespace {node_ns} at {}",
        t.node_ipv4
    ));
    state.node = Some(PodRecord {
        name: "node".into(),
        namespace: String::new(),
        netns: node_ns.clone(),
        ipv4: t.node_ipv4,
        host_network: true,
        cgroup: None,
    });
    state.save()?;
    Pod::create(&node_ns, t.node_ipv4, None)?.keep();
    add_rule(state, &["iif", &node_ns])?;

    for (i, p) in t.pods.iter().enumerate() {
        check(opts)?;
        let (ns, handle) = (&p.endpoint.spec.namespace, &p.endpoint.handle);
        if p.host_network() {
            progress(&format!(
                "pod {ns}/{handle} has hostNetwork: it shares the node's namespace {node_ns}"
            ));
            state.pods.push(PodRecord {
                name: handle.clone(),
                namespace: ns.clone(),
                netns: node_ns.clone(),
                ipv4: t.node_ipv4,
                host_network: true,
                cgroup: None,
            });
            state.save()?;
            continue;
        }
        let netns = format!("lb{id}p{i}");
        progress(&format!("creating pod {ns}/{handle} ({netns}, {})", p.ipv4));
        state.pods.push(PodRecord {
            name: handle.clone(),
            namespace: ns.clone(),
            netns: netns.clone(),
            ipv4: p.ipv4,
            host_network: false,
            cgroup: None,
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
        start_time: cgroups::start_time(child.id()),
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
    make_aliases(t, state)?;

    // The lab's cgroups: recorded before they are made, so that down removes them.
    let cgroup_root =
        cgroups::v2_root().map(|r| r.join(format!("imdsguard-lab-{}-{id}", state.name)));
    if let Some(root) = &cgroup_root {
        state.cgroup_root = Some(root.clone());
        state.save()?;
        let node = root.join(cgroups::NODE_DIR);
        std::fs::create_dir_all(&node).map_err(io(&node))?;
        if let Some(n) = state.node.as_mut() {
            n.cgroup = Some(node);
        }
        for rec in &mut state.pods {
            let dir = root.join(&rec.name);
            std::fs::create_dir(&dir).map_err(io(&dir))?;
            rec.cgroup = Some(dir);
        }
        state.save()?;
        progress(&format!("cgroups under {}", root.display()));
    } else {
        progress("no cgroup v2 hierarchy: containers run without cgroups of their own");
    }

    // Containers, each in its pod's namespace and a cgroup of its own.
    let mut placed = Vec::new();
    for (p, rec) in t.pods.iter().zip(state.pods.clone()) {
        let mut place = Placement {
            pod: rec.name.clone(),
            interface: (!rec.host_network).then(|| rec.netns.clone()),
            containers: Vec::new(),
        };
        for c in &p.containers {
            check(opts)?;
            let cgroup = rec.cgroup.as_ref().map(|d| d.join(&c.name));
            if let Some(cg) = &cgroup {
                std::fs::create_dir(cg).map_err(io(cg))?;
                place.containers.push((c.name.clone(), cg.clone()));
            }
            let logf = state.dir.join(format!("{}.{}.log", rec.name, c.name));
            let out = std::fs::File::create(&logf).map_err(io(&logf))?;
            let err = out.try_clone().map_err(io(&logf))?;
            let child = command_in(state, &rec.netns, cgroup.as_deref(), &c.command)?
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| LabError::Step(format!("starting {}/{}: {e}", rec.name, c.name)))?;
            progress(&format!("started container {} in {}", c.name, rec.name));
            state.processes.push(ProcessRecord {
                pod: rec.name.clone(),
                container: c.name.clone(),
                pid: child.id(),
                cgroup,
                start_time: cgroups::start_time(child.id()),
            });
            state.save()?;
        }
        placed.push(place);
    }
    let path = state.endpoints_file();
    std::fs::write(&path, crate::topology::endpoints_file(t, &placed)).map_err(io(&path))?;
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
    for p in state
        .pods
        .iter()
        .filter(|p| !p.host_network)
        .chain(&state.node)
    {
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

/// Whether `p` is still the process the lab started: the pid names the same process (its start
/// time), or, in a state written before start times were kept, its command line names what it ran.
fn ours(p: &ProcessRecord) -> bool {
    match p.start_time {
        Some(t) => cgroups::start_time(p.pid) == Some(t),
        None => {
            let what = if p.container == "imds-emulator" {
                "imds-emulator"
            } else {
                "netns"
            };
            std::fs::read(format!("/proc/{}/cmdline", p.pid))
                .map(|c| String::from_utf8_lossy(&c).contains(what))
                .unwrap_or(false)
        }
    }
}

fn signal(p: &ProcessRecord, sig: i32) {
    if ours(p) {
        // SAFETY: kill(2) on a pid this lab started that still names the same process.
        unsafe {
            libc::kill(p.pid as i32, sig);
        }
    }
}

/// Takes the lab down; returns what could not be removed (empty when everything went).
pub fn down(state: &LabState) -> Vec<String> {
    let mut problems = Vec::new();
    // Processes outside the cgroups (the emulator) get to exit cleanly; the containers end with
    // their cgroups.
    let outside: Vec<&ProcessRecord> = state
        .processes
        .iter()
        .filter(|p| p.cgroup.is_none())
        .collect();
    for p in &outside {
        signal(p, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    for p in &outside {
        while ours(p) && Instant::now() < deadline {
            // Reaps it when this process started it (the demo, tests); a no-op otherwise.
            // SAFETY: waitpid(2) with WNOHANG on one pid; it blocks nothing.
            unsafe {
                libc::waitpid(p.pid as i32, std::ptr::null_mut(), libc::WNOHANG);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(p, libc::SIGKILL);
    }
    if let Some(root) = &state.cgroup_root {
        problems.extend(cgroups::remove_tree(root));
        for p in state.processes.iter().filter(|p| p.cgroup.is_some()) {
            // SAFETY: as above; the process was killed with its cgroup.
            unsafe {
                libc::waitpid(p.pid as i32, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
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
    let namespaces = state
        .pods
        .iter()
        .filter(|p| !p.host_network)
        .chain(state.imds.iter())
        .chain(state.node.iter());
    for p in namespaces {
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

/// What `lab status` shows, one line per entry: the pods, the node and the emulator with their
/// addresses and namespaces (`(gone)` when the namespace no longer exists), the processes
/// (running or exited) with their cgroups, and the endpoints file.
pub fn status_report(state: &LabState) -> Vec<String> {
    let mut out = vec![
        format!("lab {:?} (state in {})", state.name, state.dir.display()),
        format!("  {:<34} {:<16} {:<16} INTERFACE", "POD", "NAMESPACE", "IP"),
    ];
    let rows = state
        .pods
        .iter()
        .map(|p| (p, p.host_network))
        .chain(state.node.iter().chain(&state.imds).map(|p| (p, false)));
    for (p, shares_node) in rows {
        let present = Path::new("/run/netns").join(&p.netns).exists();
        let interface = if shares_node {
            format!("hostNetwork ({})", p.netns)
        } else {
            p.netns.clone()
        };
        out.push(format!(
            "  {:<34} {:<16} {:<16} {interface}{}",
            p.name,
            p.namespace,
            p.ipv4,
            if present { "" } else { " (gone)" }
        ));
    }
    for p in &state.processes {
        let alive = Path::new(&format!("/proc/{}", p.pid)).exists();
        out.push(format!(
            "  process {}/{} pid {} {}{}",
            p.pod,
            p.container,
            p.pid,
            if alive { "running" } else { "exited" },
            p.cgroup
                .as_ref()
                .map(|c| format!(", cgroup {}", c.display()))
                .unwrap_or_default()
        ));
    }
    if let Some(root) = &state.cgroup_root {
        out.push(format!(
            "  cgroups: {} (the agent's --cgroup-root)",
            root.display()
        ));
    }
    out.push(format!(
        "  endpoints file: {}",
        state.endpoints_file().display()
    ));
    out
}

/// A command that runs inside a lab pod's network namespace, in its first container's cgroup
/// (as `kubectl exec` picks its first container); `imds` is the emulator's namespace, `node` the
/// node's (in a cgroup of no pod).
pub fn exec(state: &LabState, pod: &str, argv: &[String]) -> Result<Command> {
    exec_in(state, pod, None, argv)
}

/// `exec` in the pod's container `container` (`kubectl exec -c`): the command joins that
/// container's cgroup before it enters the pod's network namespace.
pub fn exec_in(
    state: &LabState,
    pod: &str,
    container: Option<&str>,
    argv: &[String],
) -> Result<Command> {
    if state.pod(pod).is_none() {
        let special = match pod {
            "imds" => state.imds.as_ref().map(|p| (p, None)),
            "node" => state.node.as_ref().map(|p| (p, p.cgroup.clone())),
            _ => None,
        };
        if let Some((p, cgroup)) = special {
            if let Some(c) = container {
                return Err(LabError::Step(format!(
                    "{pod} has no containers (asked for {c:?})"
                )));
            }
            return command_in(state, &p.netns, cgroup.as_deref(), argv);
        }
        return Err(LabError::Step(format!(
            "no pod {pod:?} in lab {:?}; pods: {}",
            state.name,
            state
                .pods
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let p = state
        .pod(pod)
        .ok_or_else(|| LabError::Step(format!("no pod {pod:?}")))?;
    let cgroup = state.container_cgroup(pod, container)?;
    command_in(state, &p.netns, cgroup.as_deref(), argv)
}
