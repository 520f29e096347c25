//! `--policies DIR --endpoints FILE`: the standalone agent's inputs, read when completely written.

use super::{Inputs, Interfaces, VethGuard, apply_endpoints, reload_store};
use crate::HostNetworkPods;
use crate::containers::{CgroupSource, PodCgroups};
use crate::sources;
use imdsguard_manifest::Source;
use imdsguard_policy::endpoints_file::{EndpointsFile, parse_endpoints};
use imdsguard_policy::store::PolicyStore;
use imdsguard_policy::{EndpointSpec, Repository};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// `--policies DIR --endpoints FILE`.
pub struct FileInputs {
    policies: Option<PathBuf>,
    endpoints: PathBuf,
    store: PolicyStore,
    eps: Option<EndpointsState>,
    writing: Writing,
    rejected: Vec<&'static str>,
    guard: Option<VethGuard>,
    host_network: HostNetworkPods,
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
            host_network: HostNetworkPods::Ignore,
        }
    }

    /// Whether the file's `hostNetwork: true` endpoints are put under their policies
    /// (`enforce`), or left out of them as Cilium does (`ignore`, the default).
    pub fn host_network_pods(mut self, mode: HostNetworkPods) -> FileInputs {
        self.host_network = mode;
        self
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
                    error = crate::logging::chain(&e),
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
            Ok(text) => parse_endpoints(&Source::new(name.clone(), text))
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
        let enforce = self.host_network == HostNetworkPods::Enforce;
        let specs: Vec<EndpointSpec> = file
            .endpoints
            .iter()
            .filter(|e| enforce || !e.host_network)
            .map(|e| e.spec.clone())
            .collect();
        apply_endpoints(repo, file.namespaces.iter().cloned().collect(), specs, None);
        let host_network = file.endpoints.iter().filter(|e| e.host_network).count();
        info!(
            "endpoints: {} pod(s) from {}{}",
            file.endpoints.len(),
            path.display(),
            match (host_network, enforce) {
                (0, _) => String::new(),
                (n, true) => format!(", {n} on the host network (under their policies)"),
                (n, false) => format!(
                    ", {n} on the host network (left out of policy: --host-network-pods ignore)"
                ),
            }
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

    /// Endpoints flagged `policyAuditMode`, and every endpoint of a namespace labelled
    /// `policy.imdsguard.io/audit-mode: "true"` in the file's `namespaces:` section, as the
    /// Namespace object's label does in a cluster.
    fn audit_endpoints(&self) -> HashSet<String> {
        self.eps
            .as_ref()
            .map(|state| state.file.audited())
            .unwrap_or_default()
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

    fn pod_cgroups(&self) -> Vec<PodCgroups> {
        self.eps
            .iter()
            .flat_map(|s| &s.file.endpoints)
            .filter(|e| !e.containers.is_empty())
            .map(|e| PodCgroups {
                endpoint: e.spec.key(),
                host_network: e.host_network,
                source: CgroupSource::Dirs(
                    e.containers
                        .iter()
                        .map(|c| (c.name.clone(), c.cgroup.clone()))
                        .collect(),
                ),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imdsguard_policy::EngineOptions;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory of this test's own, removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new() -> Dir {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "imdsguard-agent-inputs-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).expect("temp dir");
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const TWO_PODS: &str = "namespaces: {logging: {team: obs}}\nendpoints:\n  - {name: web, labels: {app: web}, ip: 10.0.0.2, interface: veth-web}\n  - {name: fluent-bit, namespace: logging, ip: 10.0.0.3, interface: veth-fb, policyAuditMode: true}\n";

    fn pods(repo: &Repository) -> Vec<String> {
        let mut v: Vec<String> = repo.endpoints().map(|(s, _)| s.key()).collect();
        v.sort();
        v
    }

    #[test]
    fn reads_pods_interfaces_and_audit_flags() {
        let dir = Dir::new();
        let path = dir.0.join("endpoints.yaml");
        std::fs::write(&path, TWO_PODS).expect("write");
        let mut inputs = FileInputs::new(None, path, false);
        let mut repo = Repository::new(EngineOptions::default());
        assert!(inputs.refresh(&mut repo, true));
        assert_eq!(pods(&repo), ["default/web", "logging/fluent-bit"]);
        let ifs = inputs.interfaces(&repo, false);
        assert_eq!(ifs.endpoints["default/web"], "veth-web");
        assert_eq!(ifs.endpoints["logging/fluent-bit"], "veth-fb");
        assert!(ifs.guarded.is_empty());
        assert_eq!(
            inputs.audit_endpoints(),
            HashSet::from(["logging/fluent-bit".to_owned()])
        );
        // The same bytes again change nothing.
        assert!(!inputs.refresh(&mut repo, true));
        assert!(inputs.errors().is_empty());
    }

    #[test]
    fn a_namespace_label_in_the_file_puts_its_pods_in_audit_mode() {
        let dir = Dir::new();
        let path = dir.0.join("endpoints.yaml");
        std::fs::write(
            &path,
            "namespaces:\n  apps: {policy.imdsguard.io/audit-mode: \"true\"}\n  logging: {team: obs}\nendpoints:\n  - {name: web, namespace: apps, ip: 10.0.0.2}\n  - {name: api, namespace: apps, ip: 10.0.0.4}\n  - {name: fluent-bit, namespace: logging, ip: 10.0.0.3, policyAuditMode: true}\n  - {name: other, namespace: logging, ip: 10.0.0.5}\n",
        )
        .expect("write");
        let mut inputs = FileInputs::new(None, path, false);
        let mut repo = Repository::new(EngineOptions::default());
        assert!(inputs.refresh(&mut repo, true));
        assert_eq!(
            inputs.audit_endpoints(),
            HashSet::from([
                "apps/web".to_owned(),
                "apps/api".to_owned(),
                "logging/fluent-bit".to_owned()
            ])
        );
    }

    #[test]
    fn a_bad_file_is_reported_once_and_keeps_the_endpoints_in_force() {
        let dir = Dir::new();
        let path = dir.0.join("endpoints.yaml");
        std::fs::write(&path, TWO_PODS).expect("write");
        let mut inputs = FileInputs::new(None, path.clone(), false);
        let mut repo = Repository::new(EngineOptions::default());
        assert!(inputs.refresh(&mut repo, true));
        for (bad, why) in [
            (&b""[..], "empty"),
            (&b"  \n"[..], "empty"),
            (&b"endpoints:\n  - {name: x\0}\n"[..], "NUL"),
            (&b"\xff\xfe"[..], "UTF-8"),
            (&b"endpoints: [ {name: "[..], "YAML"),
            (&b"namespaces: {}\n"[..], "no `endpoints:` list"),
            (&b"endpoints:\n  - {name: w, ip: not-an-ip}\n"[..], "IP"),
        ] {
            std::fs::write(&path, bad).expect("write");
            assert!(!inputs.refresh(&mut repo, true), "{why}: nothing changes");
            assert_eq!(
                pods(&repo),
                ["default/web", "logging/fluent-bit"],
                "{why}: the endpoints in force stay"
            );
            let errors = inputs.errors();
            assert!(
                errors.len() == 1 && errors[0].contains(why),
                "{why}: {errors:?}"
            );
            assert_eq!(inputs.take_rejected(), ["endpoints"], "{why}: counted");
            // The same bad content is not counted again.
            assert!(!inputs.refresh(&mut repo, true));
            assert!(inputs.take_rejected().is_empty(), "{why}: counted once");
        }
        std::fs::write(&path, "endpoints: []\n").expect("write");
        assert!(inputs.refresh(&mut repo, true));
        assert!(
            pods(&repo).is_empty(),
            "`endpoints: []` is a node without pods"
        );
        assert!(inputs.errors().is_empty());
    }

    #[test]
    fn host_network_pods_are_under_policy_only_when_enforced() {
        let dir = Dir::new();
        let path = dir.0.join("endpoints.yaml");
        std::fs::write(
            &path,
            "endpoints:\n  - {name: web, ip: 10.0.0.2, interface: veth-web, containers: [{name: app, cgroup: /cg/web/app}]}\n  - {name: agent, namespace: mon, hostNetwork: true, containers: [{name: agent, cgroup: /cg/agent}]}\n",
        )
        .expect("write");
        for (mode, want) in [
            (HostNetworkPods::Ignore, vec!["default/web"]),
            (HostNetworkPods::Enforce, vec!["default/web", "mon/agent"]),
        ] {
            let mut inputs = FileInputs::new(None, path.clone(), false).host_network_pods(mode);
            let mut repo = Repository::new(EngineOptions::default());
            assert!(inputs.refresh(&mut repo, true));
            assert_eq!(pods(&repo), want, "{mode:?}");
            let ifs = inputs.interfaces(&repo, false);
            assert_eq!(ifs.endpoints.len(), 1, "a hostNetwork pod has no interface");
            // Either way its containers are known, to name them.
            let cg = inputs.pod_cgroups();
            assert_eq!(cg.len(), 2);
            assert!(cg[1].host_network && cg[1].endpoint == "mon/agent");
            assert_eq!(
                cg[0].source,
                CgroupSource::Dirs(vec![("app".into(), PathBuf::from("/cg/web/app"))])
            );
        }
    }

    #[test]
    fn a_file_being_written_is_not_read() {
        let dir = Dir::new();
        let path = dir.0.join("endpoints.yaml");
        std::fs::write(&path, TWO_PODS).expect("write");
        let mut inputs = FileInputs::new(None, path.clone(), false);
        let mut repo = Repository::new(EngineOptions::default());
        let writing = inputs.writing().expect("files record writes");
        let abs = std::path::absolute(&path).expect("absolute");
        writing.mark(&abs, true);
        assert!(!inputs.refresh(&mut repo, true));
        assert!(pods(&repo).is_empty());
        writing.mark(&abs, false);
        assert!(inputs.refresh(&mut repo, true));
        assert_eq!(pods(&repo).len(), 2);
    }
}
