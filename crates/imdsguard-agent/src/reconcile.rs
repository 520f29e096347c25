//! Reconciliation: the loop that keeps the datapath equal to the inputs. It refreshes the inputs,
//! resolves the repository, writes the datapath's tables, attaches to pod interfaces, checks the
//! proxy's routing and publishes the node view and the status. Errors that stop enforcement from
//! starting are returned; later ones (a bad file, an interface that vanished) are reported and
//! the last good state stays in force.

use crate::api::{self as status, AgentApi};
use crate::containers::{CgroupIndex, Containers};
use crate::inputs::watch::{newest_change, watch};
use crate::inputs::{Inputs, Interfaces};
use crate::node_view::{NodeView, SharedView};
use crate::proxy::ProxyListeners;
use crate::sockets::Sockets;
use crate::{AgentError, EnforceConfig, HostNetworkPods};
use imdsguard_cgroup::host::Host;
use imdsguard_datapath::DenyResponse;
use imdsguard_datapath::loader::{Datapath, Options as DatapathOptions, ifindex};
use imdsguard_datapath::sync::{SyncOptions, TableSync};
use imdsguard_hubble_server::server::Hub;
use imdsguard_policy::{EngineOptions, Repository};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// What the loop shares with the rest of the agent.
pub struct Shared {
    pub hub: Arc<Hub>,
    pub node: String,
    pub view: Arc<SharedView>,
    pub sockets: Arc<Sockets>,
    pub api: Arc<AgentApi>,
    pub stop: Arc<AtomicBool>,
}

/// Opens (or takes over) the pinned datapath, starts the event drain, and runs the loop until
/// `shared.stop` is set.
pub fn run(
    cfg: EnforceConfig,
    mut inputs: Box<dyn Inputs>,
    listeners: ProxyListeners,
    shared: Shared,
) -> Result<(), AgentError> {
    let Shared {
        hub,
        node,
        view,
        sockets,
        api,
        stop,
    } = shared;
    let interval = cfg.reload_interval.max(Duration::from_millis(10));
    let mut dp = Datapath::open(&DatapathOptions {
        bpf_root: cfg.bpf_root.clone(),
        cgroup_root: cfg.cgroup_root.clone(),
        deny_response: cfg.deny_response,
        ..Default::default()
    })
    .map_err(AgentError::datapath(format!(
        "loading the datapath (pins under {}; needs root, or CAP_BPF and CAP_NET_ADMIN)",
        cfg.bpf_root.display()
    )))?;
    log_cgroup_hooks(&cfg, &dp);
    if cfg.cgroup_root.is_some() {
        // The proxy takes hostNetwork pods' redirected connections from it, without the lock.
        match imdsguard_datapath::hostnet::RedirectTable::open(&cfg.bpf_root) {
            Ok(table) => view.set_redirects(table),
            Err(e) => {
                warn!(error = %e, "proxy: hostNetwork pods' HTTP rules will refuse their connections")
            }
        }
    }
    let mut cgroups = CgroupIndex::new(Arc::new(Host), walk_root(&cfg));
    let enforce_host_network = cfg.host_network_pods == HostNetworkPods::Enforce;
    dp.set_proxy_listeners(
        listeners.v4.as_ref().map(|f| f.as_fd()),
        listeners.v6.as_ref().map(|f| f.as_fd()),
    )
    .map_err(AgentError::datapath(
        "handing the proxy's listeners to the datapath",
    ))?;
    let events = dp.take_events().ok_or_else(|| {
        AgentError::Config("the datapath's event ring buffer is already taken".into())
    })?;
    let drain = crate::events::spawn_drain(
        events,
        view.clone(),
        sockets,
        hub.clone(),
        node.clone(),
        stop.clone(),
    )
    .map_err(AgentError::io("starting the datapath event thread"))?;
    let mut repo = Repository::new(EngineOptions::default());
    let mut sync = TableSync::new(SyncOptions {
        audit: cfg.policy_audit_mode,
        proxy_port: cfg.proxy_port,
        ..Default::default()
    });
    let mut attached: HashMap<String, u32> = HashMap::new();
    let mut interfaces = Interfaces::default();
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
        // Pods changed, or flows named cgroups no known container has (one started since).
        let mut rewalked = false;
        let mut host_network_changed = false;
        if ready && (changed || !synced) {
            host_network_changed = cgroups.refresh(&inputs.pod_cgroups());
            rewalked = true;
        } else if ready && let Some(c) = cgroups.rescan_if_asked(|| inputs.pod_cgroups()) {
            host_network_changed = c;
            rewalked = true;
        }
        if !ready && !waiting_logged {
            info!(
                "waiting for the first complete view of the cluster; the pinned state stays in force"
            );
            waiting_logged = true;
        }
        if ready && (changed || !synced || (host_network_changed && enforce_host_network)) {
            let started = Instant::now();
            repo.resolve();
            let resolved = started.elapsed();
            // The engine (live traces) and the datapath both hear which pods are in audit mode.
            let audited = inputs.audit_endpoints();
            repo.set_audit_endpoints(audited.iter().cloned());
            sync.set_audit_endpoints(audited);
            // Only in enforce mode are hostNetwork pods endpoints to judge; as Cilium, ignore
            // leaves them out (their flows still name pod and container).
            sync.set_cgroup_endpoints(cgroup_endpoints(
                cfg.host_network_pods,
                &cgroups.current(),
                &repo,
            ));
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
            if found != interfaces || changed || !synced || rewalked {
                interfaces = found;
                attach_interfaces(&mut dp, &interfaces, &mut attached);
                write_interfaces(&mut dp, &repo, &sync, &interfaces, &attached);
                if !synced {
                    for old in imdsguard_datapath::loader::remove_older_layouts(&cfg.bpf_root) {
                        info!(
                            "datapath: removed the older layout at {} (its programs are replaced)",
                            old.display()
                        );
                    }
                }
                view.replace(NodeView::build(&repo, &sync, &attached).with_cgroups(
                    cgroups.current(),
                    cgroups.tree(),
                    cgroups.misses(),
                ));
            }
            synced = true;
        } else if rewalked && synced {
            publish = true;
            view.replace(NodeView::build(&repo, &sync, &attached).with_cgroups(
                cgroups.current(),
                cgroups.tree(),
                cgroups.misses(),
            ));
        }
        if publish {
            if let (Some(m), Ok(c)) = (hub.metrics(), dp.counters()) {
                m.set_datapath_counters(&c);
            }
            let mut st = status::build(
                &*inputs,
                cfg.policy_audit_mode,
                &node,
                &repo,
                &sync,
                &interfaces,
                &attached,
                revision,
            );
            st.cgroups = cgroup_status(&cfg, &dp, &cgroups.current(), &repo);
            api.publish(st);
        }
        api.answer(&repo, ready);
        inputs.wait(Duration::from_millis(20));
    }
    if drain.join().is_err() {
        error!("datapath: the event thread panicked");
    }
    Ok(())
}

/// Where Kubernetes pods' cgroups are looked for: the hooks' root, else the host's cgroup v2
/// mount (flows name containers even without the hooks).
fn walk_root(cfg: &EnforceConfig) -> Option<PathBuf> {
    cfg.cgroup_root
        .clone()
        .or_else(|| imdsguard_cgroup::host::host_root().ok())
}

fn log_cgroup_hooks(cfg: &EnforceConfig, dp: &Datapath) {
    match &cfg.cgroup_root {
        Some(root) => {
            let hooks: Vec<String> = dp.cgroup_hooks().into_iter().map(|(p, _)| p).collect();
            info!(
                cgroup_root = %root.display(),
                deny_response = %cfg.deny_response,
                host_network_pods = cfg.host_network_pods.as_str(),
                "cgroup hooks: {} attached at {}; denials are {}; hostNetwork pods: {}",
                hooks.join(", "),
                root.display(),
                if cfg.deny_response == DenyResponse::Reject {
                    "rejected (ECONNREFUSED, TCP RST, ICMP unreachable)"
                } else {
                    "dropped"
                },
                cfg.host_network_pods.as_str()
            );
        }
        None => {
            let why = match imdsguard_cgroup::host::host_root() {
                Ok(_) => "--cgroup-root \"\" turned them off".to_owned(),
                Err(e) => e.to_string(),
            };
            info!(
                deny_response = %cfg.deny_response,
                "cgroup hooks: off ({why}); flows name processes only where a socket met them, and denials are {}",
                if cfg.deny_response == DenyResponse::Reject {
                    "rejected at the pod interface (TCP RST, ICMP unreachable)"
                } else {
                    "dropped"
                }
            );
        }
    }
}

/// What the cgroup hooks judge: with `enforce`, the cgroups of the hostNetwork pods that are
/// endpoints of the repository; with `ignore` nothing, as Cilium leaves such pods out of policy
/// (their flows still name pod and container).
fn cgroup_endpoints(
    mode: HostNetworkPods,
    index: &Containers,
    repo: &Repository,
) -> HashMap<u64, String> {
    if mode != HostNetworkPods::Enforce {
        return HashMap::new();
    }
    let known: HashSet<String> = repo.endpoints().map(|(s, _)| s.key()).collect();
    index
        .host_network_cgroups()
        .into_iter()
        .filter(|(_, key)| known.contains(key))
        .collect()
}

fn cgroup_status(
    cfg: &EnforceConfig,
    dp: &Datapath,
    index: &Containers,
    repo: &Repository,
) -> status::CgroupStatus {
    let registered = if cfg.host_network_pods == HostNetworkPods::Enforce {
        let known: HashSet<String> = repo.endpoints().map(|(s, _)| s.key()).collect();
        index
            .host_network_pods()
            .into_iter()
            .filter(|(k, _)| known.contains(k))
            .map(|(endpoint, cgroups)| status::HostNetworkStatus { endpoint, cgroups })
            .collect()
    } else {
        Vec::new()
    };
    status::CgroupStatus {
        root: cfg.cgroup_root.as_ref().map(|r| r.display().to_string()),
        hooks: dp.cgroup_hooks().into_iter().map(|(p, _)| p).collect(),
        deny_response: cfg.deny_response.to_string(),
        host_network_pods: cfg.host_network_pods.as_str().to_owned(),
        host_network_registered: registered,
        containers: index.containers(),
        problems: index.problems().to_vec(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::{CgroupSource, PodCgroups};
    use imdsguard_cgroup::FakeTree;
    use imdsguard_datapath::abi::EP_HOST_NETWORK;
    use imdsguard_datapath::sync::fake::FakeMaps;
    use imdsguard_policy::EndpointSpec;

    #[test]
    fn host_network_pods_are_registered_with_the_hooks_only_when_enforced() {
        let mut tree = FakeTree::new();
        tree.dir("/cg/agent/agent", 21)
            .dir("/cg/agent/agent/sub", 22)
            .dir("/cg/web/app", 31);
        let pods = [
            PodCgroups {
                endpoint: "mon/agent".into(),
                host_network: true,
                source: CgroupSource::Dirs(vec![("agent".into(), "/cg/agent/agent".into())]),
            },
            PodCgroups {
                endpoint: "shop/web".into(),
                host_network: false,
                source: CgroupSource::Dirs(vec![("app".into(), "/cg/web/app".into())]),
            },
        ];
        let index = Containers::resolve(&tree, None, &pods);
        for mode in [HostNetworkPods::Ignore, HostNetworkPods::Enforce] {
            let mut repo = Repository::new(EngineOptions::default());
            repo.upsert_endpoint(EndpointSpec {
                name: "web".into(),
                namespace: "shop".into(),
                ips: vec!["10.0.0.2".parse().expect("an address")],
                ..Default::default()
            });
            // The inputs make a hostNetwork pod an endpoint only in enforce mode.
            if mode == HostNetworkPods::Enforce {
                repo.upsert_endpoint(EndpointSpec {
                    name: "agent".into(),
                    namespace: "mon".into(),
                    ..Default::default()
                });
            }
            repo.resolve();
            let mut sync = TableSync::new(SyncOptions::default());
            sync.set_cgroup_endpoints(cgroup_endpoints(mode, &index, &repo));
            let mut maps = FakeMaps::new();
            sync.sync(&repo, &mut maps).expect("sync");
            let registered: Vec<u64> = maps.cgroup_endpoints.keys().copied().collect();
            match mode {
                HostNetworkPods::Ignore => assert!(registered.is_empty(), "{registered:?}"),
                HostNetworkPods::Enforce => {
                    assert_eq!(registered, [21, 22], "the container's cgroups only");
                    let ep = sync.endpoint_id("mon/agent").expect("an endpoint ID");
                    assert!(
                        maps.cgroup_endpoints
                            .values()
                            .all(|i| i.ep_id == ep && i.flags & EP_HOST_NETWORK != 0)
                    );
                }
            }
        }
        // A hostNetwork pod the repository does not have (ignored) is never registered.
        let empty = Repository::new(EngineOptions::default());
        assert!(cgroup_endpoints(HostNetworkPods::Enforce, &index, &empty).is_empty());
    }
}
