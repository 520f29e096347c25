//! `--kubeconfig` or in-cluster: pods, namespaces and policies from the API server's reflectors.

use super::{Inputs, Interfaces, VethGuard, apply_endpoints, reload_store};
use crate::sources;
use imdsguard_k8s::events::PolicyProblem;
use imdsguard_k8s::{Cluster, ClusterObjects, WatchStatus};
use imdsguard_manifest::Source;
use imdsguard_policy::Repository;
use imdsguard_policy::store::PolicyStore;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Where an endpoint's addresses were last routed.
struct Lookup {
    ips: Vec<IpAddr>,
    dev: Option<String>,
    next_try: Instant,
    delay: Duration,
}

/// `--kubeconfig` or in-cluster: reflectors over the API.
pub struct ClusterInputs {
    cluster: Cluster,
    /// The agent's runtime, to wait for the reflectors from the loop's thread.
    runtime: tokio::runtime::Handle,
    /// Policies shipped as files (a ConfigMap), in force next to the cluster's objects.
    policy_dir: Option<PathBuf>,
    files: Vec<Source>,
    seen: u64,
    /// The cluster's objects as last applied (the policy files are in `files`).
    applied: Option<ClusterObjects>,
    store: PolicyStore,
    problems: Option<tokio::sync::mpsc::UnboundedSender<PolicyProblem>>,
    /// Each endpoint's interface as last looked up.
    found: HashMap<String, Lookup>,
    /// Guard veths no known pod has (`--unknown-veths guard`), rescanned when links change.
    guard: Option<VethGuard>,
}

impl ClusterInputs {
    pub fn new(
        cluster: Cluster,
        policy_dir: Option<PathBuf>,
        problems: Option<tokio::sync::mpsc::UnboundedSender<PolicyProblem>>,
        guard: bool,
    ) -> ClusterInputs {
        ClusterInputs {
            runtime: tokio::runtime::Handle::current(),
            guard: guard.then(VethGuard::new),
            cluster,
            policy_dir,
            files: Vec::new(),
            seen: u64::MAX,
            applied: None,
            store: PolicyStore::new(),
            problems,
            found: HashMap::new(),
        }
    }
}

impl Inputs for ClusterInputs {
    fn mode(&self) -> &'static str {
        "kubernetes"
    }

    fn ready(&self) -> bool {
        self.applied.is_some()
    }

    fn poll_every_tick(&self) -> bool {
        true
    }

    fn wait(&self, timeout: Duration) {
        let changed = self.cluster.changed();
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, changed).await })
            .ok();
    }

    fn refresh(&mut self, repo: &mut Repository, due: bool) -> bool {
        let mut files_changed = false;
        if due && let Some(dir) = &self.policy_dir {
            match sources::load(std::slice::from_ref(dir)) {
                Ok(files) if files != self.files => {
                    self.files = files;
                    files_changed = true;
                }
                Ok(_) => {}
                Err(e) => warn!(
                    error = crate::logging::chain(&e),
                    "policies: cannot read them; the policies in force stay"
                ),
            }
        }
        if self.cluster.generation() == self.seen && !files_changed {
            return false;
        }
        let snap = self.cluster.snapshot();
        if !snap.ready {
            return false;
        }
        self.seen = snap.generation;
        if self.applied.as_ref() == Some(&snap.objects) && !files_changed {
            return false;
        }
        let objects = snap.objects;
        let mut sources = objects.policies.clone();
        sources.extend(self.files.iter().cloned());
        let first = self.applied.is_none();
        apply_endpoints(
            repo,
            objects.namespaces.clone(),
            objects.endpoints.clone(),
            self.applied.as_ref(),
        );
        let problems = self.problems.clone();
        reload_store(&mut self.store, &sources, repo, |e| {
            if let (Some(tx), Some(kind), Some(name)) = (&problems, &e.kind, &e.name) {
                // The source is named Kind/namespace/name or Kind/name.
                let parts: Vec<&str> = e.file.split('/').collect();
                let _ = tx.send(PolicyProblem {
                    kind: kind.clone(),
                    namespace: (parts.len() == 3).then(|| parts[1].to_owned()),
                    name: name.clone(),
                    message: e.to_string(),
                });
            }
        });
        if first {
            info!(
                "kubernetes: synced {} pod(s) of this node, {} namespace(s), {} policy object(s)",
                objects.endpoints.len(),
                objects.namespaces.len(),
                objects.policies.len()
            );
        }
        self.applied = Some(objects);
        true
    }

    fn links_changed(&mut self) -> bool {
        self.guard.as_mut().is_some_and(VethGuard::links_changed)
    }

    fn interfaces(&mut self, repo: &Repository, retry: bool) -> Interfaces {
        let links_changed = self.guard.as_ref().is_some_and(|g| g.rescan);
        let now = Instant::now();
        let mut live = HashSet::new();
        let mut wanted: Vec<(String, Vec<IpAddr>)> = Vec::new();
        for (spec, _) in repo.endpoints() {
            let key = spec.key();
            live.insert(key.clone());
            let cached = self.found.get(&key).filter(|l| l.ips == spec.ips);
            let look = match cached {
                None => true,
                // The veth went (the pod's sandbox was recreated): look again.
                Some(Lookup { dev: Some(d), .. }) => {
                    !std::path::Path::new(&format!("/sys/class/net/{d}")).exists()
                }
                // Not found yet: again when links change, else with backoff (a pod may have no
                // route here for good: a stale IP, another network).
                Some(l) => links_changed || (retry && now >= l.next_try),
            };
            if look {
                wanted.push((key, spec.ips.clone()));
            }
        }
        if !wanted.is_empty() {
            let ips: Vec<IpAddr> = wanted.iter().flat_map(|(_, ips)| ips.clone()).collect();
            let routes = imdsguard_netns::host_interfaces(&ips).unwrap_or_else(|e| {
                warn!(error = %e, "cannot look up pod interfaces");
                HashMap::new()
            });
            for (key, ips) in wanted {
                let dev = ips.iter().find_map(|ip| routes.get(ip).cloned().flatten());
                let delay = match self.found.get(&key) {
                    Some(l) if l.dev.is_none() && l.ips == ips => {
                        (l.delay * 2).min(Duration::from_secs(30))
                    }
                    _ => Duration::from_secs(1),
                };
                self.found.insert(
                    key,
                    Lookup {
                        ips,
                        dev,
                        next_try: now + delay,
                        delay,
                    },
                );
            }
        }
        let out: BTreeMap<String, String> = self
            .found
            .iter()
            .filter(|(k, _)| live.contains(*k))
            .filter_map(|(k, l)| Some((k.clone(), l.dev.clone()?)))
            .collect();
        self.found.retain(|k, _| live.contains(k));
        let guarded = match &mut self.guard {
            Some(g) => g.guarded(&out, retry),
            None => BTreeSet::new(),
        };
        Interfaces {
            endpoints: out,
            guarded,
        }
    }

    fn audit_endpoints(&self) -> HashSet<String> {
        HashSet::new()
    }

    fn errors(&self) -> Vec<String> {
        self.store.errors().map(|e| e.to_string()).collect()
    }

    fn watches(&self) -> Vec<WatchStatus> {
        self.cluster.status()
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.policy_dir.iter().cloned().collect()
    }
}
