//! Which pod and container a cgroup id belongs to: the index that names the container behind a
//! flow (the kernel tells a socket's cgroup id, nothing more), and the cgroups of hostNetwork
//! pods, which the cgroup hooks judge. Rebuilt from the inputs and a walk of the cgroup tree
//! whenever pods change, and again when a flow names a cgroup the index does not know (a
//! container that started after its pod's last event), at most once per [`RESCAN_MIN`].
//!
//! - Endpoints file: each container's `cgroup` directory, and every cgroup below it.
//! - Kubernetes: the tree below the cgroup root, each path read by
//!   [`imdsguard_cgroup::classify`] for a pod UID and a container ID, matched against the pods'
//!   `status.containerStatuses[].containerID`. A pod's own cgroups (the pod's directory, its
//!   sandbox, a runtime's monitor) belong to the pod with no container name.

use imdsguard_cgroup::{CgroupTree, ContainerId, classify};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The most cgroups taken below one container's directory (an endpoints file's container).
const PER_CONTAINER: usize = 256;
/// The most cgroups walked below the cgroup root (Kubernetes): a node with 110 pods has about
/// a thousand.
const PER_ROOT: usize = 65_536;
/// The least time between two walks asked for by unknown cgroup ids.
pub const RESCAN_MIN: Duration = Duration::from_secs(1);
/// The most unknown cgroup ids remembered (pending or found to be no pod's).
const MISSES_MAX: usize = 4096;

/// Where one endpoint's containers are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroups {
    /// `namespace/name`.
    pub endpoint: String,
    pub host_network: bool,
    pub source: CgroupSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupSource {
    /// The endpoints file: each container's name and cgroup directory (absolute).
    Dirs(Vec<(String, PathBuf)>),
    /// Kubernetes: the pod's UID and each container's name and ID (`containerd://…`).
    Pod {
        uid: String,
        containers: Vec<(String, ContainerId)>,
    },
}

/// Who a cgroup belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `namespace/name`.
    pub endpoint: String,
    /// The container's name; None for the pod's own cgroups.
    pub container: Option<String>,
}

/// One container as the index found it, for `imdsguard status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContainerCgroups {
    pub endpoint: String,
    pub container: String,
    /// Its cgroup and the cgroups below it.
    pub cgroups: usize,
}

/// The index: cgroup id → owner, and the cgroups of hostNetwork pods.
#[derive(Debug, Default, Clone)]
pub struct Containers {
    owners: HashMap<u64, Owner>,
    dirs: HashMap<u64, PathBuf>,
    host_network: BTreeMap<u64, String>,
    problems: Vec<String>,
}

impl Containers {
    /// Resolves `pods` against `tree`. `root`: where to walk for Kubernetes pods (the cgroup v2
    /// mount, or the `--cgroup-root`); without one only the endpoints file's directories resolve.
    pub fn resolve(tree: &dyn CgroupTree, root: Option<&Path>, pods: &[PodCgroups]) -> Containers {
        let mut c = Containers::default();
        let mut by_uid: HashMap<&str, (&PodCgroups, HashMap<&str, &str>)> = HashMap::new();
        for pod in pods {
            match &pod.source {
                CgroupSource::Dirs(dirs) => {
                    for (name, dir) in dirs {
                        match tree.subtree(dir, PER_CONTAINER) {
                            Ok(sub) => {
                                for (id, path) in sub {
                                    c.add(id, path, pod, Some(name.as_str()));
                                }
                            }
                            Err(e) => c.problems.push(format!(
                                "{} container {name}: cgroup {}: {e}",
                                pod.endpoint,
                                dir.display()
                            )),
                        }
                    }
                }
                CgroupSource::Pod { uid, containers } => {
                    let ids = containers
                        .iter()
                        .map(|(name, id)| (id.id.as_str(), name.as_str()))
                        .collect();
                    by_uid.insert(uid.as_str(), (pod, ids));
                }
            }
        }
        if by_uid.is_empty() {
            return c;
        }
        let Some(root) = root else {
            c.problems.push(
                "no cgroup v2 hierarchy to walk: the containers of Kubernetes pods are not named"
                    .into(),
            );
            return c;
        };
        let all = match tree.subtree(root, PER_ROOT) {
            Ok(all) => all,
            Err(e) => {
                c.problems
                    .push(format!("walking the cgroups below {}: {e}", root.display()));
                return c;
            }
        };
        let mut found: HashSet<&str> = HashSet::new();
        for (id, path) in all {
            // Only the part below the root says anything about pods.
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let place = classify(&rel.to_string_lossy());
            let Some((pod, ids)) = place.pod_uid.as_deref().and_then(|u| by_uid.get(u)) else {
                continue;
            };
            found.insert(pod.endpoint.as_str());
            // A container the kubelet does not list (the sandbox's pause container) is the pod's.
            let name = place
                .container_id
                .as_deref()
                .and_then(|cid| ids.get(cid).copied());
            c.add(id, path, pod, name);
        }
        for (pod, _) in by_uid.values() {
            if !found.contains(pod.endpoint.as_str()) {
                c.problems.push(format!(
                    "{}: no cgroup below {} names the pod's UID (its containers are not named{})",
                    pod.endpoint,
                    root.display(),
                    if pod.host_network {
                        ", and --host-network-pods enforce cannot judge it"
                    } else {
                        ""
                    }
                ));
            }
        }
        c.problems.sort();
        c
    }

    fn add(&mut self, id: u64, path: PathBuf, pod: &PodCgroups, container: Option<&str>) {
        if pod.host_network {
            self.host_network.insert(id, pod.endpoint.clone());
        }
        self.owners.insert(
            id,
            Owner {
                endpoint: pod.endpoint.clone(),
                container: container.map(str::to_owned),
            },
        );
        self.dirs.insert(id, path);
    }

    /// Takes the hostNetwork pod that process `pid` is in out of [`Self::host_network_cgroups`]:
    /// the agent's own pod (a DaemonSet's is on the host network), whose L7 proxy connects to
    /// metadata addresses for every pod and must never be refused by the hooks. Returns the pod.
    pub fn exempt_process(&mut self, tree: &dyn CgroupTree, pid: u32) -> Option<String> {
        let pod = self.host_network.iter().find_map(|(id, ep)| {
            let dir = self.dirs.get(id)?;
            tree.procs(dir).ok()?.contains(&pid).then(|| ep.clone())
        })?;
        self.host_network.retain(|_, ep| *ep != pod);
        Some(pod)
    }

    pub fn owner(&self, cgroup_id: u64) -> Option<&Owner> {
        self.owners.get(&cgroup_id)
    }

    /// The cgroup's directory, where its processes are listed.
    pub fn dir(&self, cgroup_id: u64) -> Option<&Path> {
        self.dirs.get(&cgroup_id).map(PathBuf::as_path)
    }

    /// Every cgroup of every hostNetwork pod (its containers' and its own, with their
    /// descendants) → the pod's `namespace/name`: what `TableSync::set_cgroup_endpoints` takes.
    pub fn host_network_cgroups(&self) -> HashMap<u64, String> {
        self.host_network
            .iter()
            .map(|(id, ep)| (*id, ep.clone()))
            .collect()
    }

    /// The hostNetwork pods found, with how many cgroups each has.
    pub fn host_network_pods(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for ep in self.host_network.values() {
            *out.entry(ep.clone()).or_insert(0) += 1;
        }
        out
    }

    /// The named containers, ordered by pod and name.
    pub fn containers(&self) -> Vec<ContainerCgroups> {
        let mut count: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for o in self.owners.values() {
            if let Some(name) = &o.container {
                *count.entry((&o.endpoint, name)).or_insert(0) += 1;
            }
        }
        count
            .into_iter()
            .map(|((endpoint, container), cgroups)| ContainerCgroups {
                endpoint: endpoint.to_owned(),
                container: container.to_owned(),
                cgroups,
            })
            .collect()
    }

    /// What could not be resolved (a directory that does not exist, a pod with no cgroup).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

/// The index as the reconciliation loop keeps it: walked again when pods change, and when flows
/// name cgroups it does not know (at most once per [`RESCAN_MIN`]).
pub struct CgroupIndex {
    tree: Arc<dyn CgroupTree>,
    /// Where Kubernetes pods' cgroups are looked for.
    root: Option<PathBuf>,
    misses: Arc<Misses>,
    current: Arc<Containers>,
    last_walk: Option<Instant>,
    /// The hostNetwork pod the agent runs in, if it does.
    own_pod: Option<String>,
}

impl CgroupIndex {
    pub fn new(tree: Arc<dyn CgroupTree>, root: Option<PathBuf>) -> CgroupIndex {
        CgroupIndex {
            tree,
            root,
            misses: Arc::new(Misses::default()),
            current: Arc::new(Containers::default()),
            last_walk: None,
            own_pod: None,
        }
    }

    /// Pods changed: walks again. True when the hostNetwork pods' cgroups changed.
    pub fn refresh(&mut self, pods: &[PodCgroups]) -> bool {
        self.misses.reset();
        self.walk(pods)
    }

    /// Walks again if flows named unknown cgroups since the last walk and [`RESCAN_MIN`] has
    /// passed: Some(whether the hostNetwork pods' cgroups changed) when it walked.
    /// `pods` is asked for only then.
    pub fn rescan_if_asked(&mut self, pods: impl FnOnce() -> Vec<PodCgroups>) -> Option<bool> {
        if self.last_walk.is_some_and(|t| t.elapsed() < RESCAN_MIN) {
            return None;
        }
        let asked = self.misses.take();
        if asked.is_empty() {
            return None;
        }
        let changed = self.walk(&pods());
        self.misses.settle(&asked, &self.current);
        Some(changed)
    }

    fn walk(&mut self, pods: &[PodCgroups]) -> bool {
        let mut next = Containers::resolve(&*self.tree, self.root.as_deref(), pods);
        let own = next.exempt_process(&*self.tree, std::process::id());
        if own.is_some() && own != self.own_pod {
            info!(
                "containers: {} is the agent's own pod: the cgroup hooks never judge it (its L7 proxy connects to metadata addresses for every pod)",
                own.as_deref().unwrap_or_default()
            );
        }
        self.own_pod = own;
        for p in next.problems() {
            if !self.current.problems().contains(p) {
                warn!("containers: {p}");
            }
        }
        let changed = next.host_network != self.current.host_network;
        self.current = Arc::new(next);
        self.last_walk = Some(Instant::now());
        changed
    }

    pub fn current(&self) -> Arc<Containers> {
        self.current.clone()
    }

    pub fn misses(&self) -> Arc<Misses> {
        self.misses.clone()
    }

    pub fn tree(&self) -> Arc<dyn CgroupTree> {
        self.tree.clone()
    }
}

/// Cgroup ids flows named that the index did not know: the event drain notes them, the
/// reconciliation loop takes them and walks again. An id still unknown after a walk that came
/// after it is no pod's (a node process) and is not asked about again until pods change.
#[derive(Debug, Default)]
pub struct Misses(Mutex<MissState>);

#[derive(Debug, Default)]
struct MissState {
    pending: HashSet<u64>,
    settled: HashSet<u64>,
}

impl Misses {
    /// A flow named `cgroup_id`, which the index does not know.
    pub fn note(&self, cgroup_id: u64) {
        // 0 is "unknown", 1 the root: neither is a pod's.
        if cgroup_id <= 1 {
            return;
        }
        if let Ok(mut s) = self.0.lock()
            && !s.settled.contains(&cgroup_id)
            && s.pending.len() < MISSES_MAX
        {
            s.pending.insert(cgroup_id);
        }
    }

    /// The ids noted since the last call.
    pub fn take(&self) -> HashSet<u64> {
        self.0
            .lock()
            .map(|mut s| std::mem::take(&mut s.pending))
            .unwrap_or_default()
    }

    /// After a walk: those of `asked` that `index` still does not know are settled.
    pub fn settle(&self, asked: &HashSet<u64>, index: &Containers) {
        if let Ok(mut s) = self.0.lock() {
            if s.settled.len() + asked.len() > MISSES_MAX {
                s.settled.clear();
            }
            s.settled
                .extend(asked.iter().filter(|id| index.owner(**id).is_none()));
        }
    }

    /// Pods changed: any id may be a pod's now.
    pub fn reset(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.settled.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imdsguard_cgroup::FakeTree;

    const UID: &str = "8c1e3a8e-5f6b-4c2d-9e0f-1a2b3c4d5e6f";
    const HUID: &str = "11111111-2222-3333-4444-555555555555";

    fn cid(c: char) -> ContainerId {
        ContainerId::parse(&format!("containerd://{}", c.to_string().repeat(64))).expect("an id")
    }

    fn dirs(endpoint: &str, host_network: bool, d: &[(&str, &str)]) -> PodCgroups {
        PodCgroups {
            endpoint: endpoint.into(),
            host_network,
            source: CgroupSource::Dirs(
                d.iter()
                    .map(|(n, p)| (n.to_string(), PathBuf::from(p)))
                    .collect(),
            ),
        }
    }

    #[test]
    fn an_endpoints_files_containers_own_their_cgroups_and_those_below() {
        let mut t = FakeTree::new();
        t.dir("/cg/lab/web/app", 11)
            .dir("/cg/lab/web/app/worker", 12)
            .dir("/cg/lab/web/istio-proxy", 13)
            .dir("/cg/lab/agent/agent", 21);
        let pods = [
            dirs(
                "shop/web",
                false,
                &[
                    ("app", "/cg/lab/web/app"),
                    ("istio-proxy", "/cg/lab/web/istio-proxy"),
                ],
            ),
            dirs("mon/agent", true, &[("agent", "/cg/lab/agent/agent")]),
            dirs("shop/gone", false, &[("x", "/cg/lab/gone")]),
        ];
        let c = Containers::resolve(&t, None, &pods);
        let owner = |id| {
            c.owner(id)
                .map(|o| (o.endpoint.as_str(), o.container.as_deref()))
        };
        assert_eq!(owner(11), Some(("shop/web", Some("app"))));
        assert_eq!(owner(12), Some(("shop/web", Some("app"))), "a descendant");
        assert_eq!(owner(13), Some(("shop/web", Some("istio-proxy"))));
        assert_eq!(owner(99), None);
        assert_eq!(c.dir(12), Some(Path::new("/cg/lab/web/app/worker")));
        assert_eq!(
            c.host_network_cgroups(),
            HashMap::from([(21, "mon/agent".to_owned())]),
            "only the hostNetwork pod's cgroups are registered"
        );
        assert_eq!(c.problems().len(), 1, "{:?}", c.problems());
        assert!(c.problems()[0].contains("shop/gone container x"));
        assert_eq!(c.containers().len(), 3);
        let app = c.containers().into_iter().find(|x| x.container == "app");
        assert_eq!(app.map(|a| a.cgroups), Some(2), "app and its worker");
    }

    #[test]
    fn kubernetes_pods_are_found_by_uid_and_container_id_for_both_drivers() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let pause = "c".repeat(64);
        let h = "d".repeat(64);
        let systemd_pod = format!(
            "/cg/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            UID.replace('-', "_")
        );
        let cgroupfs_pod = format!("/cg/kubepods/besteffort/pod{HUID}");
        let mut t = FakeTree::new();
        t.dir("/cg", 1)
            .dir("/cg/kubepods.slice", 2)
            .dir(&systemd_pod, 10)
            .dir(format!("{systemd_pod}/cri-containerd-{a}.scope"), 11)
            .dir(format!("{systemd_pod}/cri-containerd-{b}.scope"), 12)
            .dir(format!("{systemd_pod}/cri-containerd-{pause}.scope"), 13)
            .dir(&cgroupfs_pod, 20)
            .dir(format!("{cgroupfs_pod}/{h}"), 21)
            .dir("/cg/system.slice/kubelet.service", 30);
        let pods = [
            PodCgroups {
                endpoint: "shop/web".into(),
                host_network: false,
                source: CgroupSource::Pod {
                    uid: UID.into(),
                    containers: vec![("app".into(), cid('a')), ("istio-proxy".into(), cid('b'))],
                },
            },
            PodCgroups {
                endpoint: "mon/agent".into(),
                host_network: true,
                source: CgroupSource::Pod {
                    uid: HUID.into(),
                    containers: vec![("agent".into(), cid('d'))],
                },
            },
            PodCgroups {
                endpoint: "shop/pending".into(),
                host_network: true,
                source: CgroupSource::Pod {
                    uid: "99999999-2222-3333-4444-555555555555".into(),
                    containers: vec![],
                },
            },
        ];
        let c = Containers::resolve(&t, Some(Path::new("/cg")), &pods);
        let name = |id| c.owner(id).and_then(|o| o.container.clone());
        assert_eq!(name(11).as_deref(), Some("app"));
        assert_eq!(name(12).as_deref(), Some("istio-proxy"));
        assert_eq!(name(21).as_deref(), Some("agent"));
        assert_eq!(c.owner(13).map(|o| o.endpoint.as_str()), Some("shop/web"));
        assert_eq!(name(13), None, "the sandbox is the pod's, unnamed");
        assert_eq!(name(10), None);
        assert!(c.owner(30).is_none() && c.owner(2).is_none(), "not a pod's");
        assert_eq!(
            c.host_network_cgroups(),
            HashMap::from([(20, "mon/agent".to_owned()), (21, "mon/agent".to_owned())]),
            "the pod's own cgroup and its container's"
        );
        assert_eq!(
            c.host_network_pods(),
            BTreeMap::from([("mon/agent".into(), 2)])
        );
        assert_eq!(c.problems().len(), 1, "{:?}", c.problems());
        assert!(
            c.problems()[0].contains("shop/pending") && c.problems()[0].contains("cannot judge")
        );
        // Without a root, Kubernetes pods cannot be found; that is said.
        let none = Containers::resolve(&t, None, &pods);
        assert!(none.is_empty() && none.problems()[0].contains("no cgroup v2 hierarchy"));
    }

    #[test]
    fn the_agents_own_host_network_pod_is_never_judged() {
        let mut t = FakeTree::new();
        t.dir("/cg/imdsguard/agent", 41)
            .dir("/cg/mon/agent", 51)
            .process(Path::new("/cg/imdsguard/agent"), 4242, "imdsguard")
            .process(Path::new("/cg/mon/agent"), 77, "collector");
        let pods = [
            dirs(
                "kube-system/imdsguard-x",
                true,
                &[("agent", "/cg/imdsguard/agent")],
            ),
            dirs("mon/agent", true, &[("agent", "/cg/mon/agent")]),
        ];
        let mut c = Containers::resolve(&t, None, &pods);
        assert_eq!(c.host_network_cgroups().len(), 2);
        assert_eq!(
            c.exempt_process(&t, 4242).as_deref(),
            Some("kube-system/imdsguard-x")
        );
        assert_eq!(
            c.host_network_cgroups(),
            HashMap::from([(51, "mon/agent".to_owned())])
        );
        assert_eq!(
            c.owner(41).and_then(|o| o.container.as_deref()),
            Some("agent"),
            "still named in flows"
        );
        assert_eq!(c.exempt_process(&t, 9), None);
    }

    #[test]
    fn a_container_that_starts_later_is_found_when_a_flow_names_it() {
        let mut tree = FakeTree::new();
        tree.dir("/cg/web/app", 11);
        let shared = Arc::new(Mutex::new(tree));
        /// The fake behind a lock, so the test can change it under the index.
        struct Live(Arc<Mutex<FakeTree>>);
        impl CgroupTree for Live {
            fn id(&self, d: &Path) -> std::io::Result<u64> {
                self.0.lock().expect("lock").id(d)
            }
            fn subtree(&self, d: &Path, l: usize) -> std::io::Result<Vec<(u64, PathBuf)>> {
                self.0.lock().expect("lock").subtree(d, l)
            }
            fn procs(&self, d: &Path) -> std::io::Result<Vec<u32>> {
                self.0.lock().expect("lock").procs(d)
            }
            fn comm(&self, p: u32) -> std::io::Result<String> {
                self.0.lock().expect("lock").comm(p)
            }
        }
        let pods = [dirs("shop/web", true, &[("app", "/cg/web/app")])];
        let mut index = CgroupIndex::new(Arc::new(Live(shared.clone())), None);
        assert!(
            index.refresh(&pods),
            "the hostNetwork pod's cgroups are new"
        );
        assert!(
            index.rescan_if_asked(|| pods.to_vec()).is_none(),
            "nothing asked"
        );
        shared.lock().expect("lock").dir("/cg/web/app/late", 12);
        index.misses().note(12);
        assert!(
            index.rescan_if_asked(|| pods.to_vec()).is_none(),
            "not again within RESCAN_MIN"
        );
        index.last_walk = Instant::now().checked_sub(RESCAN_MIN);
        assert_eq!(index.rescan_if_asked(|| pods.to_vec()), Some(true));
        assert_eq!(
            index
                .current()
                .owner(12)
                .and_then(|o| o.container.clone())
                .as_deref(),
            Some("app")
        );
    }

    #[test]
    fn unknown_ids_are_asked_about_once_until_pods_change() {
        let misses = Misses::default();
        let index = Containers::default();
        for id in [0, 1, 7, 7, 8] {
            misses.note(id);
        }
        let asked = misses.take();
        assert_eq!(asked, HashSet::from([7, 8]), "0 and 1 are no pod's");
        assert!(misses.take().is_empty());
        misses.settle(&asked, &index);
        misses.note(7);
        assert!(misses.take().is_empty(), "settled: a node process");
        misses.reset();
        misses.note(7);
        assert_eq!(misses.take(), HashSet::from([7]));
    }
}
