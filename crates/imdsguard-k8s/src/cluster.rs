//! Reflectors over the Kubernetes API: this node's pods, namespaces, and Cilium's policy kinds.
//! Each reflector retries with backoff and keeps its last complete listing through errors and
//! API outages, so the agent goes on enforcing what it last knew.

use crate::convert::{
    ClusterObjects, assign_ips, host_network_endpoint, namespace_labels, pod_containers,
    pod_endpoint, policy_source,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("reading the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no Kubernetes configuration: give --kubeconfig, or run in a pod with a service account ({0})"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[error("creating the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// Cilium's kinds as the agent watches them: kind, group, version, plural, namespaced.
pub const POLICY_KINDS: [(&str, &str, &str, &str, bool); 3] = [
    (
        "CiliumNetworkPolicy",
        "cilium.io",
        "v2",
        "ciliumnetworkpolicies",
        true,
    ),
    (
        "CiliumClusterwideNetworkPolicy",
        "cilium.io",
        "v2",
        "ciliumclusterwidenetworkpolicies",
        false,
    ),
    (
        "CiliumCIDRGroup",
        "cilium.io",
        "v2alpha1",
        "ciliumcidrgroups",
        false,
    ),
];

pub struct ClusterOptions {
    /// This node: only its pods are endpoints.
    pub node_name: String,
    /// None: the in-cluster service account (or $KUBECONFIG, as kubectl finds it).
    pub kubeconfig: Option<PathBuf>,
}

/// How one reflector is doing, for `imdsguard status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WatchStatus {
    pub resource: String,
    /// The first complete listing has arrived.
    pub synced: bool,
    /// The API server does not serve this kind (its CRD is not installed): it holds nothing.
    pub missing: bool,
    pub objects: usize,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The cluster as the agent last saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Bumped by every watch event; equal generations mean equal snapshots.
    pub generation: u64,
    /// Every reflector has listed once. Before that, the agent must not act on a partial view:
    /// pods without their policies would be let through.
    pub ready: bool,
    pub objects: ClusterObjects,
}

struct PolicyStore {
    kind: &'static str,
    api_version: String,
    store: Store<DynamicObject>,
}

/// The running reflectors. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    policies: Arc<Vec<PolicyStore>>,
    status: Arc<Mutex<Vec<WatchStatus>>>,
    generation: Arc<AtomicU64>,
    changed: Arc<tokio::sync::Notify>,
}

impl Cluster {
    /// Connects and starts the reflectors on the current tokio runtime.
    pub async fn start(opts: &ClusterOptions) -> Result<Cluster, ClusterError> {
        let client = connect(opts.kubeconfig.as_deref()).await?;
        Ok(Cluster::start_with(client, &opts.node_name))
    }

    pub fn start_with(client: Client, node_name: &str) -> Cluster {
        let generation = Arc::new(AtomicU64::new(0));
        let changed = Arc::new(tokio::sync::Notify::new());
        let status = Arc::new(Mutex::new(Vec::new()));
        let reflect = {
            let (generation, status, changed) =
                (generation.clone(), status.clone(), changed.clone());
            move |resource: String| Progress {
                index: {
                    let mut s = lock(&status);
                    s.push(WatchStatus {
                        resource,
                        ..Default::default()
                    });
                    s.len() - 1
                },
                status: status.clone(),
                generation: generation.clone(),
                changed: changed.clone(),
            }
        };
        let pods = spawn_reflector(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().fields(&format!("spec.nodeName={node_name}")),
            Writer::default(),
            reflect(format!("pods (spec.nodeName={node_name})")),
        );
        let namespaces = spawn_reflector(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            Writer::default(),
            reflect("namespaces".into()),
        );
        let policies = POLICY_KINDS
            .iter()
            .map(|&(kind, group, version, plural, _)| {
                let gvk = GroupVersionKind::gvk(group, version, kind);
                let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
                let store = spawn_reflector(
                    Api::<DynamicObject>::all_with(client.clone(), &ar),
                    watcher::Config::default(),
                    Writer::new(ar.clone()),
                    reflect(format!("{plural}.{group}/{version}")),
                );
                PolicyStore {
                    kind,
                    api_version: ar.api_version,
                    store,
                }
            })
            .collect();
        Cluster {
            client,
            pods,
            namespaces,
            policies: Arc::new(policies),
            status,
            generation,
            changed,
        }
    }

    /// Completes when the generation moves (at once if it moved since the last wait).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn status(&self) -> Vec<WatchStatus> {
        let mut s = lock(&self.status).clone();
        // The order of `reflect` calls above.
        let counts = [self.pods.state().len(), self.namespaces.state().len()]
            .into_iter()
            .chain(self.policies.iter().map(|p| p.store.state().len()));
        for (w, n) in s.iter_mut().zip(counts) {
            w.objects = n;
        }
        s
    }

    /// Every object converted; read the generation first so a change during the read is seen
    /// again on the next call.
    pub fn snapshot(&self) -> Snapshot {
        let generation = self.generation();
        let ready = lock(&self.status).iter().all(|s| s.synced || s.missing);
        let pods = self.pods.state();
        let mut host_network: Vec<_> = pods
            .iter()
            .filter_map(|p| host_network_endpoint(p))
            .collect();
        host_network.sort_by_key(|s| s.key());
        let mut containers: Vec<_> = pods.iter().filter_map(|p| pod_containers(p)).collect();
        containers.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        let mut objects = ClusterObjects {
            namespaces: self
                .namespaces
                .state()
                .iter()
                .filter_map(|n| namespace_labels(n))
                .collect(),
            endpoints: assign_ips(pods.iter().filter_map(|p| pod_endpoint(p)).collect()),
            host_network,
            containers,
            policies: Vec::new(),
        };
        for p in self.policies.iter() {
            objects.policies.extend(
                p.store
                    .state()
                    .iter()
                    .filter_map(|o| policy_source(p.kind, &p.api_version, o)),
            );
        }
        objects.policies.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot {
            generation,
            ready,
            objects,
        }
    }

    /// The UID and resourceVersion of a policy object, for the Events that report on it.
    pub fn policy_object(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<(String, String, String)> {
        let p = self.policies.iter().find(|p| p.kind == kind)?;
        let obj = p.store.state().into_iter().find(|o| {
            o.metadata.name.as_deref() == Some(name) && o.metadata.namespace.as_deref() == namespace
        })?;
        Some((
            p.api_version.clone(),
            obj.metadata.uid.clone().unwrap_or_default(),
            obj.metadata.resource_version.clone().unwrap_or_default(),
        ))
    }
}

/// A client for this kubeconfig, or the in-cluster service account (or $KUBECONFIG, as kubectl
/// finds it) when none is given.
pub async fn connect(kubeconfig: Option<&std::path::Path>) -> Result<Client, ClusterError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                ClusterError::Kubeconfig {
                    path: path.to_owned(),
                    source,
                }
            })?;
            Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|source| ClusterError::Kubeconfig {
                    path: path.to_owned(),
                    source,
                })?
        }
        None => Config::infer().await.map_err(ClusterError::Infer)?,
    };
    Client::try_from(config).map_err(ClusterError::Client)
}

/// Every namespace and every pod of the cluster (all nodes), once: for offline checks.
pub async fn list_all(
    client: &Client,
) -> Result<
    (
        Vec<(String, Vec<(String, String)>)>,
        Vec<imdsguard_policy::EndpointSpec>,
    ),
    kube::Error,
> {
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter_map(namespace_labels)
        .collect();
    let pods = Api::<Pod>::all(client.clone())
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter_map(pod_endpoint)
        .collect();
    Ok((namespaces, assign_ips(pods)))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records a reflector's events in the shared status.
struct Progress {
    index: usize,
    status: Arc<Mutex<Vec<WatchStatus>>>,
    generation: Arc<AtomicU64>,
    changed: Arc<tokio::sync::Notify>,
}

impl Progress {
    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
    }
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut WatchStatus)) {
        if let Some(s) = lock(&self.status).get_mut(self.index) {
            f(s);
        }
    }
}

fn spawn_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    progress: Progress,
) -> Store<K>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
{
    let store = writer.as_reader();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(e) => {
                    if matches!(e, watcher::Event::InitDone) {
                        progress.update(|s| {
                            s.synced = true;
                            s.missing = false;
                        });
                    }
                    if !matches!(e, watcher::Event::Init | watcher::Event::InitApply(_)) {
                        progress.bump();
                    }
                }
                Err(e) => {
                    let missing = is_not_found(&e);
                    let text = e.to_string();
                    progress.update(|s| {
                        if s.errors == 0 || s.last_error.as_deref() != Some(&text) {
                            tracing::warn!(
                                error = %text,
                                "kubernetes: cannot watch {}; retrying",
                                s.resource
                            );
                        }
                        s.errors += 1;
                        s.last_error = Some(text);
                        // A kind the API does not serve has no objects, and that is complete.
                        if missing && !s.missing && !s.synced {
                            s.missing = true;
                            progress.bump();
                        }
                    });
                }
            }
        }
    });
    store
}

fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code == 404,
        _ => false,
    }
}
