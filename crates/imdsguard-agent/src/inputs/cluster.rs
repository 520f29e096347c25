//! `--kubeconfig` or in-cluster: pods, namespaces and policies from the API server's reflectors.

use super::{Inputs, Interfaces, VethGuard, apply_endpoints, reload_store};
use crate::HostNetworkPods;
use crate::containers::{CgroupSource, PodCgroups};
use crate::sources;
use imdsguard_cgroup::ContainerId;
use imdsguard_k8s::events::PolicyProblem;
use imdsguard_k8s::{Cluster, ClusterObjects, WatchStatus};
use imdsguard_manifest::Source;
use imdsguard_policy::api::namespace_in_audit;
use imdsguard_policy::store::PolicyStore;
use imdsguard_policy::{EndpointSpec, Repository};
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
    host_network: HostNetworkPods,
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
            host_network: HostNetworkPods::Ignore,
        }
    }

    /// Whether hostNetwork pods are endpoints under their policies (`enforce`), or left out of
    /// them as Cilium does (`ignore`, the default).
    pub fn host_network_pods(mut self, mode: HostNetworkPods) -> ClusterInputs {
        self.host_network = mode;
        self
    }
}

/// The cluster's objects as enforced: with `--host-network-pods enforce`, hostNetwork pods are
/// endpoints too (without addresses).
fn enforced(mut objects: ClusterObjects, mode: HostNetworkPods) -> ClusterObjects {
    if mode == HostNetworkPods::Enforce {
        objects
            .endpoints
            .extend(objects.host_network.iter().cloned());
        objects.endpoints.sort_by_key(|s| s.key());
    }
    objects
}

/// Each pod's containers by UID and container ID; IDs of runtimes not known are left out (the
/// container is then not named).
fn pod_cgroups(objects: &ClusterObjects) -> Vec<PodCgroups> {
    objects
        .containers
        .iter()
        .map(|p| PodCgroups {
            endpoint: p.endpoint.clone(),
            host_network: p.host_network,
            source: CgroupSource::Pod {
                uid: p.uid.clone(),
                containers: p
                    .containers
                    .iter()
                    .filter_map(|(name, id)| Some((name.clone(), ContainerId::parse(id).ok()?)))
                    .collect(),
            },
        })
        .collect()
}

/// The endpoints (`namespace/name`) whose namespace is labelled for audit mode: Cilium's
/// per-endpoint PolicyAuditMode, driven by the Namespace object.
pub(crate) fn namespace_audit<'a>(
    namespaces: impl IntoIterator<Item = (&'a String, &'a Vec<(String, String)>)>,
    endpoints: &[EndpointSpec],
) -> HashSet<String> {
    let audited: HashSet<&str> = namespaces
        .into_iter()
        .filter(|(_, labels)| namespace_in_audit(labels))
        .map(|(ns, _)| ns.as_str())
        .collect();
    endpoints
        .iter()
        .filter(|e| audited.contains(e.namespace.as_str()))
        .map(EndpointSpec::key)
        .collect()
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
        let objects = enforced(snap.objects, self.host_network);
        if self.applied.as_ref() == Some(&objects) && !files_changed {
            return false;
        }
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
        // hostNetwork pods (no addresses of their own) have no interface to find.
        for (spec, _) in repo.endpoints().filter(|(s, _)| !s.ips.is_empty()) {
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
        self.applied
            .as_ref()
            .map(|o| namespace_audit(&o.namespaces, &o.endpoints))
            .unwrap_or_default()
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

    fn pod_cgroups(&self) -> Vec<PodCgroups> {
        self.applied.as_ref().map(pod_cgroups).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imdsguard_policy::api::NAMESPACE_AUDIT_LABEL;

    fn pod(ns: &str, name: &str) -> EndpointSpec {
        EndpointSpec {
            name: name.into(),
            namespace: ns.into(),
            ..Default::default()
        }
    }

    fn labels(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn host_network_pods_are_endpoints_only_when_enforced_and_their_containers_are_known() {
        let id = format!("containerd://{}", "a".repeat(64));
        let objects = ClusterObjects {
            endpoints: vec![pod("apps", "web")],
            host_network: vec![pod("mon", "agent")],
            containers: vec![imdsguard_k8s::PodContainers {
                endpoint: "mon/agent".into(),
                uid: "u1".into(),
                host_network: true,
                containers: vec![
                    ("agent".into(), id.clone()),
                    ("odd".into(), "rkt://x".into()),
                ],
            }],
            ..Default::default()
        };
        let keys = |o: &ClusterObjects| o.endpoints.iter().map(|e| e.key()).collect::<Vec<_>>();
        assert_eq!(
            keys(&enforced(objects.clone(), HostNetworkPods::Ignore)),
            ["apps/web"]
        );
        assert_eq!(
            keys(&enforced(objects.clone(), HostNetworkPods::Enforce)),
            ["apps/web", "mon/agent"]
        );
        let cg = pod_cgroups(&objects);
        assert_eq!(
            cg[0].source,
            CgroupSource::Pod {
                uid: "u1".into(),
                containers: vec![("agent".into(), ContainerId::parse(&id).expect("an id"))],
            },
            "an ID of an unknown runtime is left out"
        );
    }

    #[test]
    fn a_labelled_namespace_puts_its_pods_in_audit_mode() {
        let namespaces: BTreeMap<String, Vec<(String, String)>> = [
            (
                "apps".to_owned(),
                labels(&[(NAMESPACE_AUDIT_LABEL, "true")]),
            ),
            ("logging".to_owned(), labels(&[("team", "obs")])),
            // Only "true" counts: a typo never switches enforcement off.
            (
                "typo".to_owned(),
                labels(&[(NAMESPACE_AUDIT_LABEL, "True")]),
            ),
            (
                "off".to_owned(),
                labels(&[(NAMESPACE_AUDIT_LABEL, "false")]),
            ),
        ]
        .into();
        let pods = [
            pod("apps", "web-1"),
            pod("apps", "web-2"),
            pod("logging", "fluent-bit"),
            pod("typo", "x"),
            pod("off", "y"),
            // A pod whose namespace is not known (yet) stays enforcing.
            pod("unknown", "z"),
        ];
        assert_eq!(
            namespace_audit(&namespaces, &pods),
            HashSet::from(["apps/web-1".to_owned(), "apps/web-2".to_owned()])
        );
        assert!(namespace_in_audit(&labels(&[(
            NAMESPACE_AUDIT_LABEL,
            "true"
        )])));
        assert!(!namespace_in_audit(&[]));
    }
}
