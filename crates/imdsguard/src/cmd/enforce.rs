//! The agent's standalone enforcement: policies from a directory and endpoints from a file, both
//! watched, resolved by the engine, written to the datapath; datapath events become flows.

use super::agent_api::{self as status, AgentApi};
use super::inputs::{Inputs, Interfaces};
use anyhow::{Context, Result};
use clap::Args;
use imdsguard_datapath::flows::{Directory, to_flow};
use imdsguard_datapath::loader::{Datapath, Options as DatapathOptions, ifindex};
use imdsguard_datapath::sync::{SyncOptions, TableSync};
use imdsguard_hubble_proto::flow;
use imdsguard_hubble_server::server::Hub;
use imdsguard_policy::{EngineOptions, Identity, Repository};
use imdsguard_proxy::server::{Authority, Client, FlowSink};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

#[derive(Args, Debug, Clone)]
pub struct EnforceArgs {
    /// Policies to enforce: a directory (or file) of CiliumNetworkPolicy,
    /// CiliumClusterwideNetworkPolicy and CiliumCIDRGroup manifests, watched for changes.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// The pods of this node (`namespaces:` and `endpoints:`, each endpoint with its
    /// `interface:`), watched for changes. Enables the datapath.
    #[arg(long, value_name = "FILE")]
    pub endpoints: Option<PathBuf>,
    /// Learn pods, namespaces and policies from this cluster (Cilium's --k8s-kubeconfig-path).
    /// In a pod, the service account is used when neither this nor --endpoints is given.
    #[arg(long, alias = "k8s-kubeconfig-path", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The agent's local API (status, endpoints, policy trace), as Cilium's --socket-path.
    #[arg(long, default_value = "/var/run/imdsguard/imdsguard.sock")]
    pub socket_path: PathBuf,
    /// `guard` attaches to veths no known pod has, so a pod the agent has not heard of yet cannot
    /// reach a metadata address; `ignore` leaves them alone. Default: guard with a cluster;
    /// ignore with --endpoints, whose file names every pod's interface.
    #[arg(long, value_enum)]
    pub unknown_veths: Option<UnknownVeths>,
    /// Report denied flows as AUDIT and let them pass (Cilium's --policy-audit-mode).
    #[arg(long)]
    pub policy_audit_mode: bool,
    /// The BPF filesystem (Cilium's --bpf-root); pins live under <bpf-root>/imdsguard/.
    #[arg(long, default_value = "/sys/fs/bpf")]
    pub bpf_root: PathBuf,
    /// The L7 proxy's port, for policies with HTTP rules.
    #[arg(long, default_value_t = 15001)]
    pub proxy_port: u16,
    /// Mark the proxy's upstream connections (SO_MARK) so policy routing can steer them: the lab
    /// routes this mark to its IMDS emulator (`imdsguard lab up` prints the value).
    #[arg(long, value_parser = parse_mark)]
    pub proxy_upstream_mark: Option<u32>,
    /// How often the policy directory and the endpoints file are checked for changes besides
    /// inotify, which reloads at once (the check catches what inotify cannot see).
    #[arg(long, default_value = "1s")]
    pub reload_interval: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownVeths {
    Guard,
    Ignore,
}

impl EnforceArgs {
    /// Whether to guard veths no known pod has (see --unknown-veths).
    pub fn guard_unknown_veths(&self) -> bool {
        let default = if self.endpoints.is_some() {
            UnknownVeths::Ignore
        } else {
            UnknownVeths::Guard
        };
        self.unknown_veths.unwrap_or(default) == UnknownVeths::Guard
    }
}

fn parse_mark(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("{s:?} is not a mark (a number such as 0xa00)"))
}

/// Runs until `stop` is set. Errors that stop enforcement from starting are returned; later
/// errors (a bad file, an interface that vanished) are reported and the last good state stays.
pub fn run(
    args: EnforceArgs,
    mut inputs: Box<dyn Inputs>,
    hub: Arc<Hub>,
    node: String,
    proxy: Arc<ProxyShared>,
    api: Arc<AgentApi>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let interval = imdsguard_flow::timespec::parse_duration(&args.reload_interval)
        .with_context(|| format!("invalid --reload-interval {:?}", args.reload_interval))?;
    let interval = Duration::from_nanos(interval.max(10_000_000) as u64);
    let mut dp = Datapath::open(&DatapathOptions {
        bpf_root: args.bpf_root.clone(),
        ..Default::default()
    })
    .with_context(|| {
        format!(
            "loading the datapath (pins under {}; needs root, or CAP_BPF and CAP_NET_ADMIN)",
            args.bpf_root.display()
        )
    })?;
    if let Ok(l) = proxy.listeners.lock() {
        dp.set_proxy_listeners(
            l.0.as_ref().map(|f| f.as_fd()),
            l.1.as_ref().map(|f| f.as_fd()),
        )
        .context("handing the proxy's listeners to the datapath")?;
    }
    let mut events = dp
        .take_events()
        .context("the datapath's event ring buffer is already taken")?;
    let mut repo = Repository::new(EngineOptions::default());
    let mut sync = TableSync::new(SyncOptions {
        audit: args.policy_audit_mode,
        proxy_port: args.proxy_port,
        ..Default::default()
    });
    let mut attached: HashMap<String, u32> = HashMap::new();
    let mut interfaces = Interfaces::default();
    let mut directory = AgentDirectory::default();
    let offset = wall_offset_ns();
    let touched = Arc::new(AtomicBool::new(false));
    let watched = inputs.paths();
    let _watcher =
        (!watched.is_empty()).then(|| watch(&watched, touched.clone(), inputs.writing()));
    let mut next_reload = Instant::now();
    let mut synced = false;
    let mut revision = 0u64;
    let mut waiting_logged = false;
    let mut routing_ok: Option<bool> = None;
    while !stop.load(Ordering::Relaxed) {
        let due = touched.swap(false, Ordering::Relaxed) || Instant::now() >= next_reload;
        if due {
            next_reload = Instant::now() + interval;
        }
        let read = Instant::now();
        let changed = (due || inputs.poll_every_tick()) && inputs.refresh(&mut repo, due);
        let read = read.elapsed();
        for input in inputs.take_rejected() {
            if let Some(m) = hub.metrics() {
                m.input_error(input);
            }
        }
        let ready = inputs.ready();
        if !ready && !waiting_logged {
            info!(
                "waiting for the first complete view of the cluster; the pinned state stays in force"
            );
            waiting_logged = true;
        }
        if ready && (changed || !synced) {
            let started = Instant::now();
            repo.resolve();
            let resolved = started.elapsed();
            sync.set_audit_endpoints(inputs.audit_endpoints());
            match sync.sync(&repo, &mut dp) {
                Ok(stats) => {
                    revision += 1;
                    if stats.policies_applied + stats.endpoints_removed > 0 || !synced {
                        info!(
                            "datapath: {} endpoint policies written, {} pending, {} removed, {} ipcache entries in {:.1} ms (resolve {:.1} ms; inputs read in {:.1} ms)",
                            stats.policies_applied,
                            stats.endpoints_pending,
                            stats.endpoints_removed,
                            stats.ipcache_written,
                            started.elapsed().as_secs_f64() * 1e3,
                            resolved.as_secs_f64() * 1e3,
                            read.as_secs_f64() * 1e3
                        );
                    }
                }
                Err(e) => error!(error = %e, "datapath: writing the tables failed"),
            }
            if synced
                && inputs.mode() == "files"
                && let Some(age) = newest_change(&watched)
            {
                info!(
                    "enforced {:.1} ms after the last file change",
                    age.as_secs_f64() * 1e3
                );
            }
        }
        if ready && (due || !synced || inputs.links_changed()) {
            check_proxy_routing(&mut dp, &repo, hub.metrics().map(|m| &**m), &mut routing_ok);
        }
        let mut publish = changed || due;
        if ready && (changed || !synced || due || inputs.links_changed()) {
            publish = true;
            let found = inputs.interfaces(&repo, due);
            if found != interfaces || changed || !synced {
                interfaces = found;
                attach_interfaces(&mut dp, &interfaces, &mut attached);
                write_interfaces(&mut dp, &repo, &sync, &interfaces, &attached);
                if !synced {
                    for old in imdsguard_datapath::loader::remove_older_layouts(&args.bpf_root) {
                        info!(
                            "datapath: removed the older layout at {} (its programs are replaced)",
                            old.display()
                        );
                    }
                }
                directory.rebuild(&repo, &sync, &attached);
                proxy.update(ProxyView::build(&repo, &directory));
            }
            synced = true;
        }
        if publish {
            if let (Some(m), Ok(c)) = (hub.metrics(), dp.counters()) {
                m.set_datapath_counters(&c);
            }
            api.publish(status::build(
                &*inputs,
                &node,
                &repo,
                &sync,
                &interfaces,
                &attached,
                revision,
            ));
        }
        api.answer(&repo, ready);
        events.drain(|e| hub.ingest(to_flow(&e, &directory, &node, offset)));
        // The ring buffer has no wake-ups (they cost per event): it is read every turn.
        inputs.wait(Duration::from_millis(20));
    }
    Ok(())
}

/// Checks that redirected packets still reach the proxy: our routing rule is in place and no
/// rule ahead of it can catch a pod's redirected packet (a CNI's policy routing, a stale rule of
/// ours at another priority). Where one can, redirects fail closed in the datapath, and the log,
/// `imdsguard status` and `imdsguard_proxy_route_shadowed` say why.
fn check_proxy_routing(
    dp: &mut Datapath,
    repo: &Repository,
    metrics: Option<&imdsguard_hubble_server::metrics::FlowMetrics>,
    last: &mut Option<bool>,
) {
    use imdsguard_proxy::routing;
    let status = match routing::status(routing::MARK, routing::TABLE) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "proxy routing: cannot read the routing rules");
            return;
        }
    };
    let caught: Vec<String> = repo
        .endpoints()
        .filter(|(s, _)| s.ips.iter().any(|ip| !status.reaches_proxy(*ip)))
        .map(|(s, _)| s.key())
        .collect();
    let ok = caught.is_empty();
    if let Err(e) = dp.set_proxy_route_shadowed(!ok) {
        error!(error = %e, "proxy routing: cannot mark the datapath");
        return;
    }
    if let Some(m) = metrics {
        m.set_proxy_route_shadowed(!ok);
    }
    if *last == Some(ok) {
        return;
    }
    if ok {
        if last.is_some() {
            info!("proxy routing: intact again ({status}); redirects to the proxy resume");
        }
    } else {
        warn!(
            "proxy routing: {}; redirects to the proxy fail closed (dropped: FIB lookup failed) for {} pod(s) ({}) until no rule comes before priority {} (see `ip rule show`)",
            status.problems().join("; "),
            caught.len(),
            caught.join(", "),
            routing::PREF
        );
    }
    *last = Some(ok);
}

/// Where Cilium runs this node's datapath, how that shows: its host interface, or its pinned
/// maps. `None` when it does not.
pub fn cilium_datapath() -> Option<&'static str> {
    if std::path::Path::new("/sys/class/net/cilium_host").exists() {
        return Some("the cilium_host interface exists");
    }
    if std::path::Path::new("/sys/fs/bpf/tc/globals/cilium_lxc").exists() {
        return Some("/sys/fs/bpf/tc/globals/cilium_lxc is pinned");
    }
    None
}

/// Sets `touched` whenever a file under `paths` is completely written: closed after writing,
/// renamed into place, created or removed (a file's directory is watched: editors and config
/// management replace files by renaming). A file modified and not yet closed is recorded in
/// `writing`, so no reader takes it half-way through an in-place rewrite.
fn watch(
    paths: &[PathBuf],
    touched: Arc<AtomicBool>,
    writing: Option<super::inputs::Writing>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
    let mut w = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else {
            touched.store(true, Ordering::Relaxed);
            return;
        };
        let open = match ev.kind {
            EventKind::Modify(ModifyKind::Data(_)) | EventKind::Modify(ModifyKind::Any) => true,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Create(_)
            | EventKind::Remove(_) => false,
            _ => return,
        };
        if let Some(w) = &writing {
            for p in &ev.paths {
                w.mark(p, open);
            }
        }
        if !open {
            touched.store(true, Ordering::Relaxed);
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            warn!(
                error = %e,
                "watching files: falling back to the --reload-interval check"
            );
            return None;
        }
    };
    for p in paths {
        let target = if p.is_dir() {
            p.as_path()
        } else {
            p.parent().unwrap_or(p.as_path())
        };
        if let Err(e) = w.watch(target, notify::RecursiveMode::Recursive) {
            warn!(
                error = %e,
                "watching {}: falling back to the --reload-interval check",
                target.display()
            );
        }
    }
    Some(w)
}

/// The time since the newest modification among `paths` (files, and files in directories).
fn newest_change(paths: &[PathBuf]) -> Option<Duration> {
    let mut newest = None;
    for p in paths {
        let mut files = vec![p.clone()];
        if p.is_dir() {
            files = std::fs::read_dir(p)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
        }
        for f in files {
            if let Ok(m) = std::fs::metadata(&f).and_then(|m| m.modified()) {
                newest = newest.max(Some(m));
            }
        }
    }
    newest?.elapsed().ok()
}

/// Attaches to every endpoint's interface and detaches from interfaces no endpoint has.
fn attach_interfaces(
    dp: &mut Datapath,
    interfaces: &Interfaces,
    attached: &mut HashMap<String, u32>,
) {
    let want: BTreeSet<&str> = interfaces.all();
    // The pod behind each interface, for the log; guarded veths have none.
    let pods: HashMap<&str, (&str, &str)> = interfaces
        .endpoints
        .iter()
        .map(|(key, ifname)| {
            let (namespace, pod) = key.split_once('/').unwrap_or(("", key.as_str()));
            (ifname.as_str(), (namespace, pod))
        })
        .collect();
    for ifname in &want {
        // A veth of the same name may be a new one (a pod restarted): its index tells.
        if attached
            .get(*ifname)
            .is_some_and(|i| Some(*i) == ifindex(ifname))
        {
            continue;
        }
        match dp.attach(ifname) {
            Ok(_) => {
                let index = ifindex(ifname).unwrap_or(0);
                let (namespace, pod) = pods.get(ifname).copied().unzip();
                info!(
                    interface = %ifname,
                    pod,
                    namespace,
                    guarded = pod.is_none(),
                    "datapath: attached to {ifname}"
                );
                attached.insert((*ifname).to_owned(), index);
            }
            Err(e) => {
                let (namespace, pod) = pods.get(ifname).copied().unzip();
                error!(
                    interface = %ifname,
                    pod,
                    namespace,
                    error = %e,
                    "datapath: cannot attach to {ifname}"
                );
            }
        }
    }
    let stale: Vec<String> = match dp.pinned_interfaces() {
        Ok(pinned) => pinned
            .into_iter()
            .filter(|p| !want.contains(p.as_str()))
            .collect(),
        Err(e) => {
            warn!(error = %e, "datapath: cannot list the pinned links");
            Vec::new()
        }
    };
    for ifname in stale {
        if let Err(e) = dp.detach(&ifname) {
            warn!(interface = %ifname, error = %e, "datapath: cannot detach from {ifname}");
        }
        attached.remove(&ifname);
    }
}

/// Tells the datapath which pod is behind each attached interface, so it knows a pod by the
/// interface its packets come from and drops any source address that is not the pod's. Guarded
/// veths (no known pod) get no entry: nothing from them reaches a metadata address.
fn write_interfaces(
    dp: &mut Datapath,
    repo: &Repository,
    sync: &TableSync,
    interfaces: &Interfaces,
    attached: &HashMap<String, u32>,
) {
    let specs: HashMap<String, (Vec<IpAddr>, u32)> = repo
        .endpoints()
        .map(|(s, id)| (s.key(), (s.ips.clone(), id.0)))
        .collect();
    let mut keep = Vec::new();
    for (key, ifname) in &interfaces.endpoints {
        let (Some(ifindex), Some((ips, identity)), Some(ep_id)) = (
            attached.get(ifname).copied().filter(|i| *i != 0),
            specs.get(key),
            sync.endpoint_id(key),
        ) else {
            continue;
        };
        let info = imdsguard_datapath::abi::IfaceInfo::new(ips, ep_id, *identity);
        match dp.set_interface(ifindex, info) {
            Ok(()) => keep.push(ifindex),
            Err(e) => {
                let (namespace, pod) = key.split_once('/').unwrap_or(("", key.as_str()));
                error!(
                    interface = %ifname,
                    pod,
                    namespace,
                    identity,
                    error = %e,
                    "datapath: cannot tell the datapath which pod is behind {ifname}"
                );
            }
        }
    }
    dp.retain_interfaces(&keep);
}

/// Wall time minus CLOCK_MONOTONIC, in nanoseconds: datapath events carry monotonic time.
// time_t is not i64 on every target.
#[allow(clippy::useless_conversion)]
fn wall_offset_ns() -> i64 {
    let mono = |clock| {
        // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i64::from(ts.tv_sec) * 1_000_000_000 + i64::from(ts.tv_nsec)
    };
    mono(libc::CLOCK_REALTIME) - mono(libc::CLOCK_MONOTONIC)
}

/// What flows are named with, rebuilt after every change.
#[derive(Default)]
struct AgentDirectory {
    endpoints: HashMap<IpAddr, flow::Endpoint>,
    identity_labels: HashMap<u32, Vec<String>>,
    policies: HashMap<u32, flow::Policy>,
    interfaces: HashMap<u32, String>,
}

impl AgentDirectory {
    fn rebuild(&mut self, repo: &Repository, sync: &TableSync, attached: &HashMap<String, u32>) {
        self.identity_labels = repo
            .identities()
            .iter()
            .map(|(id, labels)| (id.0, labels.iter().map(|l| l.to_string()).collect()))
            .collect();
        self.endpoints.clear();
        for (spec, identity) in repo.endpoints() {
            let ep = flow::Endpoint {
                id: sync.endpoint_id(&spec.key()).unwrap_or(0),
                identity: identity.0,
                namespace: spec.namespace.clone(),
                labels: self.labels(identity.0),
                pod_name: spec.name.clone(),
                ..Default::default()
            };
            for ip in &spec.ips {
                self.endpoints.insert(*ip, ep.clone());
            }
        }
        self.policies = (1..)
            .map_while(|id| sync.rule_ids.policy(id).map(|p| (id, p)))
            .map(|(id, p)| {
                (
                    id,
                    flow::Policy {
                        name: p.name.to_string(),
                        namespace: p.namespace.to_string(),
                        kind: p.kind.as_str().to_owned(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        self.interfaces = attached.iter().map(|(n, i)| (*i, n.clone())).collect();
    }

    fn labels(&self, identity: u32) -> Vec<String> {
        if let Some(l) = self.identity_labels.get(&identity) {
            return l.clone();
        }
        Identity(identity)
            .reserved_labels()
            .map(|l| l.iter().map(|l| l.to_string()).collect())
            .unwrap_or_default()
    }
}

impl Directory for AgentDirectory {
    fn endpoint(&self, ip: IpAddr) -> Option<flow::Endpoint> {
        self.endpoints.get(&ip).cloned()
    }
    fn identity_labels(&self, identity: u32) -> Vec<String> {
        self.labels(identity)
    }
    fn policy(&self, rule_id: u32) -> Option<flow::Policy> {
        self.policies.get(&rule_id).cloned()
    }
    fn interface_name(&self, ifindex: u32) -> Option<String> {
        self.interfaces.get(&ifindex).cloned()
    }
}

/// What the L7 proxy needs from the agent: the client pods with their policies, and names for
/// destinations. Rebuilt after every change and swapped in whole.
#[derive(Default)]
pub struct ProxyView {
    clients: HashMap<IpAddr, Client>,
    pods: HashMap<IpAddr, u32>,
    ipcache: imdsguard_policy::ipcache::IpCache,
    labels: HashMap<u32, Vec<String>>,
}

impl ProxyView {
    fn build(repo: &Repository, directory: &AgentDirectory) -> ProxyView {
        let mut clients = HashMap::new();
        let mut pods = HashMap::new();
        for (spec, identity) in repo.endpoints() {
            let Some(policy) = repo.endpoint_policy(&spec.key()) else {
                continue;
            };
            for ip in &spec.ips {
                pods.insert(*ip, identity.0);
                if let Some(endpoint) = directory.endpoints.get(ip) {
                    clients.insert(
                        *ip,
                        Client {
                            endpoint: endpoint.clone(),
                            policy: policy.clone(),
                        },
                    );
                }
            }
        }
        ProxyView {
            clients,
            pods,
            ipcache: repo.ipcache().clone(),
            labels: directory.identity_labels.clone(),
        }
    }
}

/// The proxy's view of the agent, shared between the reload loop and the proxy's tasks.
#[derive(Default)]
pub struct ProxyShared {
    view: std::sync::RwLock<Arc<ProxyView>>,
    /// The proxy's listeners (IPv4, IPv6), for the datapath's TIME_WAIT hand-off.
    listeners: std::sync::Mutex<(Option<OwnedFd>, Option<OwnedFd>)>,
}

impl ProxyShared {
    fn update(&self, view: ProxyView) {
        if let Ok(mut v) = self.view.write() {
            *v = Arc::new(view);
        }
    }

    fn view(&self) -> Arc<ProxyView> {
        self.view.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// Records a listener the proxy serves (a duplicate of its descriptor).
    pub fn add_listener(&self, ipv6: bool, fd: OwnedFd) {
        if let Ok(mut l) = self.listeners.lock() {
            if ipv6 {
                l.1 = Some(fd);
            } else {
                l.0 = Some(fd);
            }
        }
    }
}

impl Authority for ProxyShared {
    fn client(&self, ip: IpAddr) -> Option<Client> {
        self.view().clients.get(&ip).cloned()
    }

    fn destination(&self, ip: IpAddr) -> flow::Endpoint {
        let v = self.view();
        let identity = v
            .pods
            .get(&ip)
            .copied()
            .or_else(|| v.ipcache.lookup(ip).map(|(_, id)| id.0))
            .unwrap_or(Identity::WORLD.0);
        flow::Endpoint {
            identity,
            labels: v.labels.get(&identity).cloned().unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// Proxy flows go into the agent's Hubble ring buffer.
pub struct HubSink(pub Arc<Hub>);

impl FlowSink for HubSink {
    fn flow(&self, f: flow::Flow) {
        self.0.ingest(f);
    }
}
