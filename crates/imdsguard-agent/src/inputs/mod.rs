//! Where the agent learns what to enforce: files (`--policies`, `--endpoints`) or a Kubernetes
//! cluster (`--kubeconfig` or the pod's service account). Both feed the same repository; the
//! enforcement loop does not know which one it has.

mod cluster;
mod files;
mod veths;
pub mod watch;

pub use cluster::ClusterInputs;
pub use files::{FileInputs, Writing};
pub use veths::VethGuard;

use crate::containers::PodCgroups;
use crate::logging::object_ref;
use imdsguard_k8s::{ClusterObjects, WatchStatus};
use imdsguard_manifest::Source;
use imdsguard_policy::store::PolicyStore;
use imdsguard_policy::{DecodeOptions, EndpointSpec, Repository};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;
use tracing::{info, warn};

/// Where the datapath attaches.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Interfaces {
    /// Each endpoint's host-side interface, by `namespace/name`.
    pub endpoints: BTreeMap<String, String>,
    /// Veths with no known pod, attached so that a pod the agent has not heard of yet (its veth
    /// comes before its Pod object's IP) cannot reach a metadata address.
    pub guarded: BTreeSet<String>,
}

impl Interfaces {
    pub fn all(&self) -> BTreeSet<&str> {
        self.endpoints
            .values()
            .chain(&self.guarded)
            .map(String::as_str)
            .collect()
    }
}

pub trait Inputs: Send {
    /// "files" or "kubernetes".
    fn mode(&self) -> &'static str;
    /// Whether the first complete view has arrived. Until then nothing is written, so a
    /// restarted agent leaves the pinned state in force rather than a partial one.
    fn ready(&self) -> bool;
    /// Whether `refresh` is cheap enough to call on every turn of the loop (a change counter),
    /// rather than on inotify events and every --reload-interval (files).
    fn poll_every_tick(&self) -> bool {
        false
    }
    /// Brings `repo` up to date; true when something changed. The caller resolves. `due`: files
    /// may have changed (inotify, or the --reload-interval passed).
    fn refresh(&mut self, repo: &mut Repository, due: bool) -> bool;
    /// Where to attach. `retry` looks again for interfaces not found before.
    fn interfaces(&mut self, repo: &Repository, retry: bool) -> Interfaces;
    /// Whether network interfaces changed since the last call (checked on every turn).
    fn links_changed(&mut self) -> bool {
        false
    }
    /// Endpoints in audit mode of their own.
    fn audit_endpoints(&self) -> HashSet<String>;
    /// What is wrong with the input as it reads now (file, line, field).
    fn errors(&self) -> Vec<String>;
    fn watches(&self) -> Vec<WatchStatus> {
        Vec::new()
    }
    /// Waits up to `timeout` for the next turn of the loop; a source that can tell when it
    /// changed ends the wait early.
    fn wait(&self, timeout: Duration) {
        std::thread::sleep(timeout);
    }
    /// Files to watch with inotify.
    fn paths(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    /// Where the watch records files that are being written, when the source reads files.
    fn writing(&self) -> Option<Writing> {
        None
    }
    /// The inputs rejected since the last call (`policy`, `endpoints`), for the metric.
    fn take_rejected(&mut self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Where each pod's containers are (hostNetwork pods included, whatever
    /// `--host-network-pods` says): what names the container behind a cgroup id.
    fn pod_cgroups(&self) -> Vec<PodCgroups> {
        Vec::new()
    }
}

/// Decodes what changed into the store and the repository, reporting errors; true when a file
/// changed. `problem` hears of each invalid object.
pub(crate) fn reload_store(
    store: &mut PolicyStore,
    sources: &[Source],
    repo: &mut Repository,
    mut problem: impl FnMut(&imdsguard_policy::decode::PolicyError),
) -> bool {
    let up = store.reload(sources, &DecodeOptions::default(), repo);
    for e in &up.errors {
        let (kind, namespace, policy) = object_ref(&e.object);
        let policy = (!policy.is_empty()).then_some(policy);
        warn!(
            kind,
            namespace,
            policy,
            error = %e,
            "policy error: the object is rejected"
        );
        problem(e);
    }
    for k in &up.kept {
        let (kind, namespace, policy) = object_ref(k);
        warn!(
            kind,
            namespace, policy, "policy: {k} is invalid now; its last good version stays in force"
        );
    }
    if up.files_changed > 0 {
        info!(
            "policies: {} changed, {} object(s) updated, {} deleted",
            up.files_changed, up.policies_upserted, up.policies_deleted
        );
    }
    up.files_changed > 0
}

/// Makes the repository's namespaces and endpoints equal to these. With `previous` (what the
/// last call applied) only differences are written.
pub(crate) fn apply_endpoints(
    repo: &mut Repository,
    namespaces: BTreeMap<String, Vec<(String, String)>>,
    endpoints: Vec<EndpointSpec>,
    previous: Option<&ClusterObjects>,
) {
    for (ns, labels) in &namespaces {
        if previous.and_then(|p| p.namespaces.get(ns)) != Some(labels) {
            repo.set_namespace_labels(ns, labels.clone());
        }
    }
    if let Some(p) = previous {
        // A namespace that is gone has no labels to give its pods (Cilium does the same).
        for ns in p.namespaces.keys().filter(|n| !namespaces.contains_key(*n)) {
            repo.set_namespace_labels(ns, Vec::new());
        }
    }
    let keep: HashSet<String> = endpoints.iter().map(|e| e.key()).collect();
    let gone: Vec<(String, String)> = repo
        .endpoints()
        .filter(|(s, _)| !keep.contains(&s.key()))
        .map(|(s, _)| (s.namespace.clone(), s.name.clone()))
        .collect();
    for (ns, name) in gone {
        repo.remove_endpoint(&ns, &name);
    }
    let before: HashMap<String, &EndpointSpec> = previous
        .map(|p| p.endpoints.iter().map(|e| (e.key(), e)).collect())
        .unwrap_or_default();
    for e in endpoints {
        if before.get(&e.key()).is_some_and(|old| **old == e) {
            continue;
        }
        repo.upsert_endpoint(e);
    }
}
