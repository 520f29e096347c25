//! Who is who on this node, as of the last reconciliation: the pods by address (with their
//! endpoint IDs, identities and policies), every identity's labels, the policies by the rule IDs
//! the datapath reports, and the attached interfaces. One view serves both readers that need it:
//! the event drain names the datapath's flows with it, and the L7 proxy asks it which pod is
//! calling and under which policy. It is rebuilt whole after every change and swapped in, so a
//! reader never sees half of one state and half of the next.

use crate::containers::{Containers, Misses};
use imdsguard_cgroup::CgroupTree;
use imdsguard_datapath::flows::Directory;
use imdsguard_datapath::hostnet::RedirectTable;
use imdsguard_datapath::sync::TableSync;
use imdsguard_hubble_proto::flow;
use imdsguard_hubble_proto::process::ProcessInfo;
use imdsguard_policy::ipcache::IpCache;
use imdsguard_policy::repository::EndpointPolicy;
use imdsguard_policy::{Identity, Repository};
use imdsguard_proxy::server::{Authority, Client, Redirected};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tracing::warn;

/// One pod address.
#[derive(Clone)]
struct Pod {
    endpoint: flow::Endpoint,
    /// None while the pod's policy is not computed: the proxy then has no client to serve.
    policy: Option<Arc<EndpointPolicy>>,
}

#[derive(Default)]
pub struct NodeView {
    pods: HashMap<IpAddr, Pod>,
    /// Every endpoint by its datapath ID, hostNetwork pods (which have no address) included.
    by_id: HashMap<u32, flow::Endpoint>,
    /// The computed policies by datapath ID: the proxy judges a hostNetwork pod's requests,
    /// which it knows by ID, with them.
    policy_by_id: HashMap<u32, Arc<EndpointPolicy>>,
    identity_labels: HashMap<u32, Vec<String>>,
    policies: HashMap<u32, flow::Policy>,
    interfaces: HashMap<u32, String>,
    ipcache: IpCache,
    cgroups: Option<Cgroups>,
}

/// What names the container and process behind a cgroup id.
struct Cgroups {
    index: Arc<Containers>,
    tree: Arc<dyn CgroupTree>,
    misses: Arc<Misses>,
    /// `process_of`'s answers, kept [`PROCESS_TTL`]: a flow burst reads cgroup.procs once.
    procs: Mutex<HashMap<u64, (Instant, Option<Process>)>>,
}

/// A process: pid and comm.
type Process = (u32, String);

/// How long a cgroup's only process is remembered.
const PROCESS_TTL: Duration = Duration::from_secs(2);
/// The most cgroups whose process is remembered.
const PROCESS_CACHE_MAX: usize = 4096;

impl NodeView {
    /// The view of `repo` as written by `sync`, with `attached` (interface name → index).
    pub fn build(repo: &Repository, sync: &TableSync, attached: &HashMap<String, u32>) -> NodeView {
        let identity_labels: HashMap<u32, Vec<String>> = repo
            .identities()
            .iter()
            .map(|(id, labels)| (id.0, labels.iter().map(|l| l.to_string()).collect()))
            .collect();
        let mut view = NodeView {
            identity_labels,
            ipcache: repo.ipcache().clone(),
            interfaces: attached.iter().map(|(n, i)| (*i, n.clone())).collect(),
            ..Default::default()
        };
        for (spec, identity) in repo.endpoints() {
            let key = spec.key();
            let pod = Pod {
                endpoint: flow::Endpoint {
                    id: sync.endpoint_id(&key).unwrap_or(0),
                    identity: identity.0,
                    namespace: spec.namespace.clone(),
                    labels: view.labels(identity.0),
                    pod_name: spec.name.clone(),
                    ..Default::default()
                },
                policy: repo.endpoint_policy(&key).cloned(),
            };
            if pod.endpoint.id != 0 {
                view.by_id.insert(pod.endpoint.id, pod.endpoint.clone());
                if let Some(p) = &pod.policy {
                    view.policy_by_id.insert(pod.endpoint.id, p.clone());
                }
            }
            for ip in &spec.ips {
                view.pods.insert(*ip, pod.clone());
            }
        }
        view.policies = (1..)
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
        view
    }

    /// Names containers and processes with `index` (cgroup id → pod and container) and `tree`
    /// (a cgroup's processes); cgroup ids the index does not know are noted in `misses`.
    pub fn with_cgroups(
        mut self,
        index: Arc<Containers>,
        tree: Arc<dyn CgroupTree>,
        misses: Arc<Misses>,
    ) -> NodeView {
        self.cgroups = Some(Cgroups {
            index,
            tree,
            misses,
            procs: Mutex::new(HashMap::new()),
        });
        self
    }

    /// The container index the view names containers with.
    pub fn containers(&self) -> Option<&Containers> {
        self.cgroups.as_ref().map(|c| &*c.index)
    }

    /// An identity's labels; reserved identities have theirs even when no pod holds them.
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

impl Directory for NodeView {
    fn endpoint(&self, ip: IpAddr) -> Option<flow::Endpoint> {
        self.pods.get(&ip).map(|p| p.endpoint.clone())
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
    fn container(&self, cgroup_id: u64) -> Option<String> {
        let c = self.cgroups.as_ref()?;
        match c.index.owner(cgroup_id) {
            Some(owner) => owner.container.clone(),
            None => {
                // Perhaps a container that started after the last walk: the loop walks again.
                c.misses.note(cgroup_id);
                None
            }
        }
    }
    fn endpoint_by_id(&self, ep_id: u32) -> Option<flow::Endpoint> {
        self.by_id.get(&ep_id).cloned()
    }
    fn process_of(&self, cgroup_id: u64) -> Option<(u32, String)> {
        let c = self.cgroups.as_ref()?;
        let dir = c.index.dir(cgroup_id)?;
        let mut cache = c.procs.lock().ok()?;
        if let Some((at, known)) = cache.get(&cgroup_id)
            && at.elapsed() < PROCESS_TTL
        {
            return known.clone();
        }
        // With more than one process the cgroup cannot say which one owns the socket.
        let found = match c.tree.procs(dir).ok().as_deref() {
            Some([pid]) => c.tree.comm(*pid).ok().map(|comm| (*pid, comm)),
            _ => None,
        };
        if cache.len() >= PROCESS_CACHE_MAX {
            cache.clear();
        }
        cache.insert(cgroup_id, (Instant::now(), found.clone()));
        found
    }
}

/// The current view, shared by the reconciliation loop (which replaces it), the event drain and
/// the proxy's tasks (which read it); and the datapath's record of the hostNetwork pods'
/// connections it sent to the proxy, set once when the cgroup hooks are on.
#[derive(Default)]
pub struct SharedView(RwLock<Arc<NodeView>>, OnceLock<RedirectTable>);

impl SharedView {
    /// The table the proxy takes redirected hostNetwork connections from. Set once; a second
    /// table is ignored.
    pub fn set_redirects(&self, table: RedirectTable) {
        let _ = self.1.set(table);
    }

    /// A redirected hostNetwork connection's pod, policy, destination and process, as
    /// `hostnet` recorded them and the view names them.
    fn redirect_of(&self, r: imdsguard_datapath::hostnet::HostnetRedirect) -> Option<Redirected> {
        let v = self.load();
        let Some(endpoint) = v.by_id.get(&r.ep_id).cloned() else {
            warn!(
                ep_id = r.ep_id,
                "proxy: a hostNetwork connection of an endpoint no longer known: closed"
            );
            return None;
        };
        let Some(policy) = v.policy_by_id.get(&r.ep_id).cloned() else {
            warn!(pod = %endpoint.pod_name, "proxy: a hostNetwork pod without its policy: closed");
            return None;
        };
        let process = (r.pid != 0).then(|| ProcessInfo {
            container: v.container(r.cgroup_id).unwrap_or_default(),
            process: r.comm.clone(),
            pid: r.pid,
            uid: Some(r.uid),
        });
        Some(Redirected {
            client: Client { endpoint, policy },
            destination: r.destination,
            process,
            socket_cookie: r.cookie,
            cgroup_id: r.cgroup_id,
        })
    }

    pub fn replace(&self, view: NodeView) {
        if let Ok(mut v) = self.0.write() {
            *v = Arc::new(view);
        }
    }

    pub fn load(&self) -> Arc<NodeView> {
        self.0.read().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Authority for SharedView {
    fn client(&self, ip: IpAddr) -> Option<Client> {
        let pod = self.load().pods.get(&ip).cloned()?;
        Some(Client {
            endpoint: pod.endpoint,
            policy: pod.policy?,
        })
    }

    fn redirected(&self, peer: SocketAddr) -> Option<Redirected> {
        let Some(table) = self.1.get() else {
            warn!(%peer, "proxy: a connection to the proxy's own address, and no redirect table (cgroup hooks off): closed");
            return None;
        };
        let v6 = match peer.ip() {
            IpAddr::V4(_) => false,
            IpAddr::V6(v6) => v6.to_ipv4_mapped().is_none(),
        };
        let Some(r) = table.take(peer.port(), v6) else {
            warn!(%peer, "proxy: a connection to the proxy's own address that the datapath did not send: closed");
            return None;
        };
        self.redirect_of(r)
    }

    fn destination(&self, ip: IpAddr) -> flow::Endpoint {
        let v = self.load();
        let identity = v
            .pods
            .get(&ip)
            .map(|p| p.endpoint.identity)
            .or_else(|| v.ipcache.lookup(ip).map(|(_, id)| id.0))
            .unwrap_or(Identity::WORLD.0);
        flow::Endpoint {
            identity,
            labels: v
                .identity_labels
                .get(&identity)
                .cloned()
                .unwrap_or_default(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imdsguard_datapath::sync::SyncOptions;
    use imdsguard_policy::{EndpointSpec, EngineOptions};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn node() -> Repository {
        let mut repo = Repository::new(EngineOptions::default());
        repo.upsert_endpoint(EndpointSpec {
            name: "web-1".into(),
            namespace: "shop".into(),
            labels: vec![("app".into(), "web".into())],
            service_account: "default".into(),
            ips: vec![ip("10.0.0.2"), ip("fd00::2")],
            named_ports: Vec::new(),
            raw_labels: None,
        });
        repo
    }

    fn view(repo: &Repository) -> SharedView {
        let shared = SharedView::default();
        let attached = HashMap::from([("veth-web".to_owned(), 7)]);
        shared.replace(NodeView::build(
            repo,
            &TableSync::new(SyncOptions::default()),
            &attached,
        ));
        shared
    }

    #[test]
    fn flows_and_the_proxy_see_the_same_pod() {
        let mut repo = node();
        repo.resolve();
        let shared = view(&repo);
        let v = shared.load();
        for addr in ["10.0.0.2", "fd00::2"] {
            let named = v
                .endpoint(ip(addr))
                .expect("the pod, by each of its addresses");
            assert_eq!(
                (named.namespace.as_str(), named.pod_name.as_str()),
                ("shop", "web-1")
            );
            assert!(
                named.labels.iter().any(|l| l.ends_with("app=web")),
                "{:?}",
                named.labels
            );
            let client = shared.client(ip(addr)).expect("a client with its policy");
            assert_eq!(client.endpoint, named, "one naming for flows and the proxy");
            assert_eq!(shared.destination(ip(addr)).identity, named.identity);
        }
        assert_eq!(v.interface_name(7).as_deref(), Some("veth-web"));
        assert!(v.endpoint(ip("10.0.0.9")).is_none());
    }

    #[test]
    fn a_pod_without_a_computed_policy_is_named_but_not_served() {
        let repo = node();
        let shared = view(&repo);
        assert!(shared.load().endpoint(ip("10.0.0.2")).is_some());
        assert!(
            shared.client(ip("10.0.0.2")).is_none(),
            "no policy yet: the proxy has nothing to judge with"
        );
    }

    #[test]
    fn containers_and_processes_are_named_by_cgroup_id() {
        use crate::containers::{CgroupSource, PodCgroups};
        use imdsguard_cgroup::FakeTree;
        use std::path::Path;
        let mut tree = FakeTree::new();
        tree.dir("/cg/web/app", 11)
            .dir("/cg/web/istio-proxy", 12)
            .process(Path::new("/cg/web/app"), 100, "curl")
            .process(Path::new("/cg/web/istio-proxy"), 200, "pilot-agent")
            .process(Path::new("/cg/web/istio-proxy"), 201, "envoy");
        let pods = [PodCgroups {
            endpoint: "shop/web-1".into(),
            host_network: false,
            source: CgroupSource::Dirs(vec![
                ("app".into(), "/cg/web/app".into()),
                ("istio-proxy".into(), "/cg/web/istio-proxy".into()),
            ]),
        }];
        let index = Arc::new(Containers::resolve(&tree, None, &pods));
        let misses = Arc::new(Misses::default());
        let tree: Arc<dyn CgroupTree> = Arc::new(tree);
        let mut repo = node();
        repo.resolve();
        let v = NodeView::build(
            &repo,
            &TableSync::new(SyncOptions::default()),
            &HashMap::new(),
        )
        .with_cgroups(index, tree, misses.clone());
        assert_eq!(v.container(11).as_deref(), Some("app"));
        assert_eq!(v.container(12).as_deref(), Some("istio-proxy"));
        assert_eq!(v.container(77), None);
        assert_eq!(
            misses.take(),
            std::collections::HashSet::from([77]),
            "an unknown cgroup asks for a walk"
        );
        assert_eq!(v.process_of(11), Some((100, "curl".to_owned())));
        assert_eq!(v.process_of(12), None, "two processes: cannot tell which");
        assert_eq!(v.process_of(77), None);
        assert_eq!(v.containers().map(Containers::len), Some(2));
    }

    #[test]
    fn endpoints_are_found_by_id_even_without_an_address() {
        let mut repo = node();
        repo.upsert_endpoint(EndpointSpec {
            name: "agent".into(),
            namespace: "mon".into(),
            service_account: "default".into(),
            ..Default::default()
        });
        repo.resolve();
        let mut sync = TableSync::new(SyncOptions::default());
        let mut maps = imdsguard_datapath::sync::fake::FakeMaps::default();
        sync.sync(&repo, &mut maps).expect("sync");
        let v = NodeView::build(&repo, &sync, &HashMap::new());
        let id = sync.endpoint_id("mon/agent").expect("an endpoint ID");
        let ep = v.endpoint_by_id(id).expect("the hostNetwork pod by its ID");
        assert_eq!(
            (ep.namespace.as_str(), ep.pod_name.as_str()),
            ("mon", "agent")
        );
        assert!(v.endpoint_by_id(9999).is_none());
    }

    #[test]
    fn a_redirected_host_network_connection_is_named_and_judged_by_its_endpoint_id() {
        let mut repo = node();
        repo.upsert_endpoint(EndpointSpec {
            name: "agent".into(),
            namespace: "mon".into(),
            service_account: "default".into(),
            ..Default::default()
        });
        repo.resolve();
        let mut sync = TableSync::new(SyncOptions::default());
        let mut maps = imdsguard_datapath::sync::fake::FakeMaps::default();
        sync.sync(&repo, &mut maps).expect("sync");
        let shared = SharedView::default();
        shared.replace(NodeView::build(&repo, &sync, &HashMap::new()));
        let id = sync.endpoint_id("mon/agent").expect("an endpoint ID");
        let record = imdsguard_datapath::hostnet::HostnetRedirect {
            destination: "169.254.169.254:80".parse().expect("addr"),
            ep_id: id,
            pid: 77,
            uid: 1000,
            comm: "curl".into(),
            cgroup_id: 5,
            cookie: 9,
        };
        let r = shared.redirect_of(record.clone()).expect("the pod");
        assert_eq!(
            (
                r.client.endpoint.namespace.as_str(),
                r.client.endpoint.pod_name.as_str()
            ),
            ("mon", "agent")
        );
        assert_eq!(r.destination, record.destination);
        assert_eq!((r.socket_cookie, r.cgroup_id), (9, 5));
        let p = r.process.expect("the process");
        assert_eq!((p.process.as_str(), p.pid, p.uid), ("curl", 77, Some(1000)));
        assert!(
            shared
                .redirect_of(imdsguard_datapath::hostnet::HostnetRedirect {
                    ep_id: 9999,
                    ..record
                })
                .is_none(),
            "an endpoint no longer known"
        );
        assert!(
            shared
                .redirected("127.0.0.1:40000".parse().expect("addr"))
                .is_none(),
            "no table: closed"
        );
    }

    #[test]
    fn other_addresses_are_named_from_the_ipcache_or_as_the_world() {
        let mut repo = node();
        repo.resolve();
        let shared = view(&repo);
        let world = shared.destination(ip("203.0.113.7")).identity;
        assert!(
            [Identity::WORLD.0, Identity::WORLD_IPV4.0].contains(&world),
            "got {world}"
        );
        assert_eq!(shared.load().labels(Identity::WORLD.0), ["reserved:world"]);
    }
}
