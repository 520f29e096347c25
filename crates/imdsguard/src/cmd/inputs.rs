//! Where the agent learns what to enforce: files (`--policies`, `--endpoints`) or a Kubernetes
//! cluster (`--kubeconfig` or the pod's service account). Both feed the same repository; the
//! enforcement loop does not know which one it has.

use crate::sources;
use imdsguard_k8s::events::PolicyProblem;
use imdsguard_k8s::{Cluster, ClusterObjects, WatchStatus};
use imdsguard_manifest::Source;
use imdsguard_policy::store::PolicyStore;
use imdsguard_policy::{DecodeOptions, EndpointSpec, Repository};
use imdsguard_scenario::EndpointsFile;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
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
}

/// `--unknown-veths guard`: the veths no known pod has, rescanned when links change, so a pod the
/// agent has not heard of yet (its veth exists before its Pod object or its endpoints entry)
/// cannot reach a metadata address.
pub struct VethGuard {
    links: Option<imdsguard_netns::LinkWatch>,
    rescan: bool,
    veths: BTreeSet<String>,
}

impl VethGuard {
    pub fn new() -> VethGuard {
        let links = match imdsguard_netns::LinkWatch::new() {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(
                    error = %e,
                    "watching network interfaces: new veths are found every --reload-interval"
                );
                None
            }
        };
        VethGuard {
            links,
            rescan: true,
            veths: BTreeSet::new(),
        }
    }

    /// Whether links changed since the last scan (checked on every turn of the loop).
    pub fn links_changed(&mut self) -> bool {
        if self.links.as_ref().is_some_and(|w| w.changed()) {
            self.rescan = true;
        }
        self.rescan
    }

    /// The veths to guard: every veth that is not one of `owned`'s interfaces.
    pub fn guarded(&mut self, owned: &BTreeMap<String, String>, retry: bool) -> BTreeSet<String> {
        if retry || self.rescan {
            match imdsguard_netns::veths() {
                Ok(v) => self.veths = v.into_iter().collect(),
                Err(e) => warn!(error = %e, "cannot list veths"),
            }
        }
        self.rescan = false;
        let owned: BTreeSet<&String> = owned.values().collect();
        self.veths
            .iter()
            .filter(|v| !owned.contains(v))
            .cloned()
            .collect()
    }
}

/// `--policies DIR --endpoints FILE`.
pub struct FileInputs {
    policies: Option<PathBuf>,
    endpoints: PathBuf,
    store: PolicyStore,
    eps: Option<EndpointsState>,
    writing: Writing,
    rejected: Vec<&'static str>,
    guard: Option<VethGuard>,
}

/// The endpoints file as last read: its hash, its content when it was valid, and its error.
struct EndpointsState {
    hash: u64,
    file: EndpointsFile,
    error: Option<String>,
}

impl FileInputs {
    /// `guard`: attach to veths the endpoints file does not name (`--unknown-veths guard`).
    pub fn new(policies: Option<PathBuf>, endpoints: PathBuf, guard: bool) -> FileInputs {
        // Absolute, as the watch reports paths.
        let endpoints = std::path::absolute(&endpoints).unwrap_or(endpoints);
        FileInputs {
            policies,
            endpoints,
            store: PolicyStore::new(),
            eps: None,
            writing: Writing::default(),
            rejected: Vec::new(),
            guard: guard.then(VethGuard::new),
        }
    }

    fn reload_policies(&mut self, repo: &mut Repository) -> bool {
        let Some(dir) = &self.policies else {
            return false;
        };
        let rejected = &mut self.rejected;
        match sources::load(std::slice::from_ref(dir)) {
            Ok(s) => reload_store(&mut self.store, &s, repo, |_| rejected.push("policy")),
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "policies: cannot read them; the policies in force stay"
                );
                rejected.push("policy");
                false
            }
        }
    }

    /// Reads the endpoints file when it is completely written. Anything but a valid document
    /// with an `endpoints:` list (an empty, half-written, binary or unparsable file) is reported,
    /// counted, and changes nothing: the endpoints in force stay, as for an invalid policy.
    fn reload_endpoints(&mut self, repo: &mut Repository) -> bool {
        let path = self.endpoints.clone();
        if self.writing.is_writing(&path) {
            // Open for writing (modified, not yet closed): read it at close-write or rename.
            return false;
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                if self.eps.is_none() {
                    warn!(error = %e, "endpoints: cannot read {}", path.display());
                }
                return false;
            }
        };
        let hash = imdsguard_policy::identity::fnv1a(&bytes);
        if self.eps.as_ref().is_some_and(|s| s.hash == hash) {
            return false;
        }
        let name = path.display().to_string();
        let parsed = match endpoints_text(&name, bytes) {
            Ok(text) => imdsguard_scenario::parse_endpoints(&Source::new(name.clone(), text))
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    if f.endpoints_declared {
                        Ok(f)
                    } else {
                        Err(format!(
                            "{name}: no `endpoints:` list (write `endpoints: []` for a node without pods)"
                        ))
                    }
                }),
            Err(e) => Err(e),
        };
        let file = match parsed {
            Ok(f) => f,
            Err(e) => {
                warn!(
                    error = %e,
                    "endpoints error: the file is rejected; the endpoints in force stay"
                );
                self.rejected.push("endpoints");
                // Remember the hash so the same bad content is reported once.
                let state = self.eps.get_or_insert_with(|| EndpointsState {
                    hash,
                    file: EndpointsFile::default(),
                    error: None,
                });
                state.hash = hash;
                state.error = Some(e);
                return false;
            }
        };
        let specs: Vec<EndpointSpec> = file.endpoints.iter().map(|e| e.spec.clone()).collect();
        apply_endpoints(repo, file.namespaces.iter().cloned().collect(), specs, None);
        info!(
            "endpoints: {} pod(s) from {}",
            file.endpoints.len(),
            path.display()
        );
        self.eps = Some(EndpointsState {
            hash,
            file,
            error: None,
        });
        true
    }
}

/// The endpoints file's bytes as text, refusing what cannot be a complete endpoints document.
fn endpoints_text(name: &str, bytes: Vec<u8>) -> Result<String, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("{name}: the file is empty"));
    }
    if bytes.contains(&0) {
        return Err(format!("{name}: binary content (NUL bytes)"));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "{name}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Files that are open for writing: modified since their last close-write. Filled by the
/// agent's inotify watch, so a file is never read half-way through an in-place rewrite.
#[derive(Debug, Default, Clone)]
pub struct Writing(std::sync::Arc<std::sync::Mutex<HashMap<PathBuf, Instant>>>);

/// A writer that modified a file and then went quiet this long without closing it (it died, or
/// holds the file open) no longer holds the file back. Long, because a slow writer's half file
/// may parse as a valid document with fewer pods.
const WRITE_STALL: Duration = Duration::from_secs(60);

impl Writing {
    /// A write began (`open`: modified) or ended (closed after writing, renamed, removed).
    pub fn mark(&self, path: &std::path::Path, open: bool) {
        if let Ok(mut w) = self.0.lock() {
            if open {
                w.insert(path.to_owned(), Instant::now());
            } else {
                w.remove(path);
            }
        }
    }

    pub fn is_writing(&self, path: &std::path::Path) -> bool {
        self.0
            .lock()
            .is_ok_and(|w| w.get(path).is_some_and(|t| t.elapsed() < WRITE_STALL))
    }
}

impl Inputs for FileInputs {
    fn mode(&self) -> &'static str {
        "files"
    }

    fn ready(&self) -> bool {
        true
    }

    fn refresh(&mut self, repo: &mut Repository, _: bool) -> bool {
        self.reload_policies(repo) | self.reload_endpoints(repo)
    }

    fn interfaces(&mut self, _: &Repository, retry: bool) -> Interfaces {
        let endpoints: BTreeMap<String, String> = self
            .eps
            .iter()
            .flat_map(|s| &s.file.endpoints)
            .filter_map(|e| Some((e.spec.key(), e.interface.clone()?)))
            .collect();
        let guarded = match &mut self.guard {
            Some(g) => g.guarded(&endpoints, retry),
            None => BTreeSet::new(),
        };
        Interfaces { endpoints, guarded }
    }

    fn links_changed(&mut self) -> bool {
        self.guard.as_mut().is_some_and(VethGuard::links_changed)
    }

    fn writing(&self) -> Option<Writing> {
        Some(self.writing.clone())
    }

    fn take_rejected(&mut self) -> Vec<&'static str> {
        std::mem::take(&mut self.rejected)
    }

    fn audit_endpoints(&self) -> HashSet<String> {
        self.eps
            .iter()
            .flat_map(|s| &s.file.endpoints)
            .filter(|e| e.policy_audit_mode)
            .map(|e| e.spec.key())
            .collect()
    }

    fn errors(&self) -> Vec<String> {
        let mut out: Vec<String> = self.store.errors().map(|e| e.to_string()).collect();
        out.extend(self.eps.iter().filter_map(|s| s.error.clone()));
        out
    }

    fn paths(&self) -> Vec<PathBuf> {
        let mut p = vec![self.endpoints.clone()];
        p.extend(self.policies.clone());
        p
    }
}

/// Decodes what changed into the store and the repository, reporting errors; true when a file
/// changed. `problem` hears of each invalid object.
fn reload_store(
    store: &mut PolicyStore,
    sources: &[Source],
    repo: &mut Repository,
    mut problem: impl FnMut(&imdsguard_policy::decode::PolicyError),
) -> bool {
    let up = store.reload(sources, &DecodeOptions::default(), repo);
    for e in &up.errors {
        let (kind, namespace, policy) = crate::logging::object_ref(&e.object);
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
        let (kind, namespace, policy) = crate::logging::object_ref(k);
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
fn apply_endpoints(
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
                    error = format!("{e:#}"),
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
