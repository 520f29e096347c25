//! The policy repository: policies, CIDR groups, endpoints and identities, resolved into one
//! [`EndpointPolicy`] per endpoint identity (docs/policy-semantics.md §4, §5.5). Changes mark only
//! the identities they can affect, and [`Repository::resolve`] recomputes just those.

pub use crate::audit::{AuditDirection, AuditView};

use crate::api::*;
use crate::decode::Decoded;
use crate::identity::{Identity, IdentityRegistry, PodLabels, pod_identity_labels};
use crate::ipcache::IpCache;
use crate::l7::{HttpRule, L7Rules};
use crate::labels::LabelSet;
use crate::mapstate::{
    ANY_IDENTITY, Contribution, Key, MapState, MapStateBuilder, Origin, port_range_prefixes,
};
use crate::selectorcache::{SelectorCache, SelectorId};
use crate::subjectindex::SubjectIndex;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Agent-wide enforcement mode (`enable-policy`, §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum Enforcement {
    #[default]
    Default,
    Always,
    Never,
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub enforcement: Enforcement,
    /// `policy-audit-mode`: L3/L4 denials are reported as AUDIT and forwarded (§8).
    pub audit_mode: bool,
    /// `allow-localhost=always` (the Kubernetes default).
    pub allow_localhost: bool,
    pub cluster_name: String,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            enforcement: Enforcement::Default,
            audit_mode: false,
            allow_localhost: true,
            cluster_name: "default".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// A pod as the engine sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointSpec {
    pub name: String,
    pub namespace: String,
    pub labels: Vec<(String, String)>,
    pub service_account: String,
    pub ips: Vec<IpAddr>,
    pub named_ports: Vec<NamedPort>,
    /// Exact identity labels; when set, no labels are derived from the pod and namespace.
    pub raw_labels: Option<LabelSet>,
}

impl EndpointSpec {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone)]
struct Endpoint {
    spec: EndpointSpec,
    identity: Identity,
    /// Endpoints of one identity share a resolved policy unless their named ports differ (ingress
    /// named ports resolve against the endpoint's own container ports).
    ports_sig: u64,
}

fn ports_signature(ports: &[NamedPort]) -> u64 {
    let mut sorted: Vec<String> = ports
        .iter()
        .map(|p| format!("{}={}/{}", p.name, p.port, p.protocol.as_str()))
        .collect();
    sorted.sort();
    crate::identity::fnv1a(sorted.join(",").as_bytes())
}

/// (protocol number, port, port prefix length); protocol 0 means every protocol and port.
pub type PortPrefix = (u8, u16, u8);

/// An L7-relevant allow: which peers, which ports, and which HTTP rules (None: no restriction).
#[derive(Debug, Clone)]
pub struct L7Filter {
    pub peers: Option<Arc<FxHashSet<Identity>>>,
    /// (protocol, port, prefix length); protocol 0 means every protocol and port.
    pub ports: Vec<PortPrefix>,
    pub http: Option<Vec<Arc<HttpRule>>>,
    pub origin: Arc<Origin>,
}

impl L7Filter {
    /// Whether the filter covers this peer and port.
    pub fn applies(&self, peer: Identity, proto: u8, port: u16) -> bool {
        self.peers.as_ref().is_none_or(|p| p.contains(&peer))
            && self.ports.iter().any(|(p, start, len)| {
                *p == 0 || (*p == proto && Key::new(0, *p, port, *len).port == *start)
            })
    }
}

/// One direction of one endpoint's resolved policy.
#[derive(Debug, Clone, Default)]
pub struct DirectionPolicy {
    pub enforced: bool,
    pub default_deny: bool,
    pub map: MapState,
    /// Allow filters for the proxy's HTTP decision; empty when the direction has no L7 rules.
    pub l7: Vec<L7Filter>,
}

impl DirectionPolicy {
    /// Envoy's decision (§5.4): allowed iff some applicable allow has no HTTP rules or one of
    /// its HTTP rules matches. Returns the decision and the origins that allowed it.
    pub fn http_allows(
        &self,
        peer: Identity,
        port: u16,
        req: &crate::l7::HttpRequest,
    ) -> (bool, Vec<Arc<Origin>>) {
        let mut origins = Vec::new();
        for f in self
            .l7
            .iter()
            .filter(|f| f.applies(peer, Protocol::Tcp.number(), port))
        {
            let ok = match &f.http {
                None => true,
                Some(rules) => rules.iter().any(|r| r.matches(req)),
            };
            if ok && !origins.contains(&f.origin) {
                origins.push(f.origin.clone());
            }
        }
        (!origins.is_empty(), origins)
    }
}

/// The resolved policy of one identity.
#[derive(Debug, Clone)]
pub struct EndpointPolicy {
    pub identity: Identity,
    pub ingress: DirectionPolicy,
    pub egress: DirectionPolicy,
    /// Set when the policy could not be computed (conflicting L7 parsers); the tables then hold the
    /// previous policy, or deny everything if there was none.
    pub error: Option<String>,
    /// The FULL view (every selecting rule, audit-mode policies included), present only when an
    /// audit-mode policy selects the identity; `ingress`/`egress` above are then the ENFORCED view
    /// (non-audit policies only). docs/policy-semantics.md §8.1.
    pub audit_view: Option<Box<AuditView>>,
}

impl EndpointPolicy {
    pub fn direction(&self, dir: Direction) -> &DirectionPolicy {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// The full view of one direction, when an audit-mode policy selects the identity.
    pub fn audit_direction(&self, dir: Direction) -> Option<&AuditDirection> {
        self.audit_view.as_deref().map(|a| match dir {
            Direction::Ingress => &a.ingress,
            Direction::Egress => &a.egress,
        })
    }
}

#[derive(Debug, Clone)]
enum CompiledPeers {
    Any,
    Selectors(Vec<SelectorId>),
}

#[derive(Debug, Clone)]
struct CompiledItem {
    peers: CompiledPeers,
    deny: bool,
    direction: Direction,
    item: PolicyItem,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    subject: Option<crate::selector::Selector>,
    pub(crate) rule: Rule,
    items: Vec<CompiledItem>,
    pub(crate) origin: Arc<Origin>,
    /// The policy is in audit mode: the rule counts only in the full view.
    pub(crate) audit: bool,
}

#[derive(Debug, Clone)]
struct CompiledPolicy {
    policy: Arc<Policy>,
    rules: Vec<CompiledRule>,
}

/// Counters of the last [`Repository::resolve`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolveStats {
    pub identities: usize,
    pub entries: usize,
}

#[derive(Debug, Clone)]
pub struct Repository {
    opts: EngineOptions,
    policies: BTreeMap<PolicyRef, Arc<CompiledPolicy>>,
    groups: BTreeMap<Arc<str>, CidrGroup>,
    namespaces: BTreeMap<String, Vec<(String, String)>>,
    endpoints: BTreeMap<String, Endpoint>,
    by_ip: FxHashMap<IpAddr, String>,
    registry: IdentityRegistry,
    ipcache: IpCache,
    selectors: SelectorCache,
    resolved: FxHashMap<(Identity, u64), Arc<EndpointPolicy>>,
    dirty: FxHashSet<Identity>,
    subjects: SubjectIndex<(Arc<CompiledPolicy>, usize)>,
    /// Which policies use each selector, so identity changes find the policies to revisit.
    selector_users: FxHashMap<SelectorId, FxHashSet<PolicyRef>>,
    /// Policies whose peers changed; their subjects are marked at the next resolve.
    dirty_policies: FxHashSet<PolicyRef>,
    ipcache_dirty: bool,
    /// Endpoints (`namespace/name`) in per-endpoint audit mode (Cilium's PolicyAuditMode).
    pub(crate) audit_endpoints: FxHashSet<String>,
}

impl Repository {
    pub fn new(opts: EngineOptions) -> Repository {
        let registry = IdentityRegistry::new();
        let mut selectors = SelectorCache::default();
        for (id, labels) in registry.iter() {
            selectors.add_identity(id, labels.clone());
        }
        Repository {
            opts,
            policies: BTreeMap::new(),
            groups: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            by_ip: FxHashMap::default(),
            registry,
            ipcache: IpCache::default(),
            selectors,
            resolved: FxHashMap::default(),
            dirty: FxHashSet::default(),
            dirty_policies: FxHashSet::default(),
            selector_users: FxHashMap::default(),
            subjects: SubjectIndex::default(),
            ipcache_dirty: false,
            audit_endpoints: FxHashSet::default(),
        }
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    pub fn identities(&self) -> &IdentityRegistry {
        &self.registry
    }

    pub fn ipcache(&self) -> &IpCache {
        &self.ipcache
    }

    pub fn policies(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.policies.values().map(|c| &c.policy)
    }

    pub fn groups(&self) -> impl Iterator<Item = &CidrGroup> {
        self.groups.values()
    }

    /// Adds every valid policy and group of a decode.
    pub fn load(&mut self, decoded: &Decoded) {
        for g in &decoded.groups {
            self.upsert_group(g.clone());
        }
        for p in &decoded.policies {
            self.upsert_policy(p.clone());
        }
    }

    pub fn set_namespace_labels(&mut self, namespace: &str, labels: Vec<(String, String)>) {
        self.namespaces.insert(namespace.to_owned(), labels);
        let keys: Vec<String> = self
            .endpoints
            .values()
            .filter(|e| e.spec.namespace == namespace)
            .map(|e| e.spec.key())
            .collect();
        for k in keys {
            if let Some(ep) = self.endpoints.get(&k).cloned() {
                self.upsert_endpoint(ep.spec);
            }
        }
    }

    pub fn upsert_group(&mut self, group: CidrGroup) {
        self.groups.insert(group.name.clone(), group);
        self.ipcache_dirty = true;
    }

    pub fn delete_group(&mut self, name: &str) {
        if self.groups.remove(name).is_some() {
            self.ipcache_dirty = true;
        }
    }

    pub fn upsert_policy(&mut self, policy: Policy) {
        let id = policy.id.clone();
        let old_prefixes: Option<FxHashSet<ipnet::IpNet>> = self
            .policies
            .get(&id)
            .map(|c| c.policy.prefixes().collect());
        if let Some(old) = self.policies.get(&id) {
            let subjects = self.subjects_of(old);
            self.dirty.extend(subjects);
        }
        let compiled = Arc::new(self.compile(Arc::new(policy)));
        let new_prefixes: FxHashSet<ipnet::IpNet> = compiled.policy.prefixes().collect();
        if old_prefixes.as_ref() != Some(&new_prefixes)
            && !(old_prefixes.is_none() && new_prefixes.is_empty())
        {
            self.ipcache_dirty = true;
        }
        let subjects = self.subjects_of(&compiled);
        self.dirty.extend(subjects);
        self.subjects.remove(&id);
        for (i, r) in compiled.rules.iter().enumerate() {
            if let Some(sel) = &r.subject {
                self.subjects.insert(&id, (compiled.clone(), i), sel);
            }
        }
        self.policies.insert(id, compiled);
    }

    pub fn delete_policy(&mut self, id: &PolicyRef) -> bool {
        match self.policies.remove(id) {
            Some(old) => {
                self.subjects.remove(id);
                let subjects = self.subjects_of(&old);
                self.dirty.extend(subjects);
                if old.policy.prefixes().next().is_some() {
                    self.ipcache_dirty = true;
                }
                true
            }
            None => false,
        }
    }

    fn compile(&mut self, policy: Arc<Policy>) -> CompiledPolicy {
        let mut rules = Vec::new();
        for rule in &policy.rules {
            let origin = Arc::new(Origin::Rule {
                policy: policy.id.clone(),
                rule: rule.index,
                log: rule.log.clone(),
            });
            let mut items = Vec::new();
            for (section, list) in rule.sections() {
                for item in list {
                    let peers = match &item.peers {
                        Peers::Any => CompiledPeers::Any,
                        Peers::Selectors(s) if s.iter().any(|s| s.is_wildcard()) => {
                            CompiledPeers::Any
                        }
                        Peers::Selectors(s) => CompiledPeers::Selectors(
                            s.iter()
                                .map(|s| {
                                    let id = self.selectors.intern(s);
                                    self.selector_users
                                        .entry(id)
                                        .or_default()
                                        .insert(policy.id.clone());
                                    id
                                })
                                .collect(),
                        ),
                    };
                    items.push(CompiledItem {
                        peers,
                        deny: section.is_deny(),
                        direction: section.direction(),
                        item: item.clone(),
                    });
                }
            }
            let subject = match &rule.subject {
                Subject::Endpoints(s) => Some(s.clone()),
                Subject::Nodes(_) => None,
            };
            rules.push(CompiledRule {
                subject,
                rule: rule.clone(),
                items,
                origin,
                audit: policy.audit,
            });
        }
        CompiledPolicy { policy, rules }
    }

    /// Identities of endpoints that this policy's rules select.
    fn subjects_of(&self, c: &CompiledPolicy) -> Vec<Identity> {
        // Endpoint keys are `namespace/name`, so when the subjects can only live in some
        // namespaces, only those key ranges are scanned.
        let namespaces: Option<Vec<&str>> = match c.policy.id.kind {
            PolicyKind::CiliumNetworkPolicy => Some(vec![&*c.policy.id.namespace]),
            PolicyKind::CiliumClusterwideNetworkPolicy => c
                .rules
                .iter()
                .map(|r| r.subject.as_ref().and_then(|s| s.namespaces()))
                .collect::<Option<Vec<_>>>()
                .map(|lists| lists.into_iter().flatten().map(String::as_str).collect()),
        };
        let endpoints: Box<dyn Iterator<Item = &Endpoint>> = match namespaces {
            Some(list) => Box::new(list.into_iter().flat_map(|ns| {
                self.endpoints
                    .range(format!("{ns}/")..format!("{ns}0"))
                    .map(|(_, e)| e)
            })),
            None => Box::new(self.endpoints.values()),
        };
        let mut out = FxHashSet::default();
        for ep in endpoints {
            if out.contains(&ep.identity) {
                continue;
            }
            let Some(labels) = self.registry.labels(ep.identity) else {
                continue;
            };
            if c.rules
                .iter()
                .any(|r| r.subject.as_ref().is_some_and(|s| s.matches(labels)))
            {
                out.insert(ep.identity);
            }
        }
        out.into_iter().collect()
    }

    /// Makes an identity known without a local endpoint: a pod on another node, which policies may
    /// name as a peer but which this node does not enforce for.
    pub fn upsert_remote_identity(&mut self, labels: LabelSet) -> Identity {
        let (identity, new) = self.registry.allocate_global(labels);
        if new {
            let labels = self.registry.labels(identity).cloned().unwrap_or_default();
            let hit = self.selectors.add_identity(identity, labels);
            self.mark_selector_users(&hit);
        }
        identity
    }

    /// Adds or updates a pod. Returns its identity.
    pub fn upsert_endpoint(&mut self, spec: EndpointSpec) -> Identity {
        let key = spec.key();
        let labels = match &spec.raw_labels {
            Some(l) => l.clone(),
            None => {
                let ns_labels = self
                    .namespaces
                    .get(&spec.namespace)
                    .cloned()
                    .unwrap_or_default();
                pod_identity_labels(&PodLabels {
                    namespace: &spec.namespace,
                    labels: &spec.labels,
                    namespace_labels: &ns_labels,
                    service_account: &spec.service_account,
                    cluster: &self.opts.cluster_name,
                })
            }
        };
        if let Some(old) = self.endpoints.remove(&key) {
            for ip in &old.spec.ips {
                self.by_ip.remove(ip);
            }
            self.release_if_unused(old.identity);
        }
        let (identity, new) = self.registry.allocate_global(labels);
        if new || !self.selectors.has_identity(identity) {
            let labels = self.registry.labels(identity).cloned().unwrap_or_default();
            let hit = self.selectors.add_identity(identity, labels);
            self.mark_selector_users(&hit);
        }
        for ip in &spec.ips {
            self.by_ip.insert(*ip, key.clone());
        }
        // A new endpoint of a known identity reuses the resolved policy, but named ports may differ.
        self.dirty.insert(identity);
        let ports_sig = ports_signature(&spec.named_ports);
        self.endpoints.insert(
            key,
            Endpoint {
                spec,
                identity,
                ports_sig,
            },
        );
        identity
    }

    pub fn remove_endpoint(&mut self, namespace: &str, name: &str) -> bool {
        let key = format!("{namespace}/{name}");
        self.audit_endpoints.remove(&key);
        match self.endpoints.remove(&key) {
            Some(ep) => {
                for ip in &ep.spec.ips {
                    self.by_ip.remove(ip);
                }
                self.release_if_unused(ep.identity);
                true
            }
            None => false,
        }
    }

    fn release_if_unused(&mut self, id: Identity) {
        if self.endpoints.values().any(|e| e.identity == id) {
            return;
        }
        let hit = self.selectors.remove_identity(id);
        self.mark_selector_users(&hit);
        self.registry.release(id);
        self.resolved.retain(|(i, _), _| *i != id);
        self.dirty.remove(&id);
    }

    /// Marks the subjects of every policy that uses one of these selectors.
    fn mark_selector_users(&mut self, selectors: &[SelectorId]) {
        if selectors.is_empty() {
            return;
        }
        for s in selectors {
            if let Some(users) = self.selector_users.get(s) {
                self.dirty_policies.extend(
                    users
                        .iter()
                        .filter(|p| self.policies.contains_key(*p))
                        .cloned(),
                );
            }
        }
    }

    pub fn endpoint_identity(&self, namespace: &str, name: &str) -> Option<Identity> {
        self.endpoints
            .get(&format!("{namespace}/{name}"))
            .map(|e| e.identity)
    }

    /// The endpoint (`namespace/name`) that owns an address.
    pub fn endpoint_by_ip(&self, ip: IpAddr) -> Option<(&str, Identity)> {
        let key = self.by_ip.get(&ip)?;
        self.endpoints.get(key).map(|e| (key.as_str(), e.identity))
    }

    pub fn endpoints(&self) -> impl Iterator<Item = (&EndpointSpec, Identity)> {
        self.endpoints.values().map(|e| (&e.spec, e.identity))
    }

    /// The identity of an address: its endpoint, else its longest policy prefix, else world.
    pub fn identity_of_ip(&self, ip: IpAddr) -> Identity {
        if let Some((_, id)) = self.endpoint_by_ip(ip) {
            return id;
        }
        self.ipcache
            .lookup(ip)
            .map(|(_, id)| id)
            .unwrap_or(Identity::WORLD)
    }

    /// The resolved policy of an identity (after [`Repository::resolve`]); when endpoints of the
    /// identity differ in named ports, the policy of one of them.
    pub fn policy(&self, id: Identity) -> Option<&Arc<EndpointPolicy>> {
        let ep = self.endpoints.values().find(|e| e.identity == id)?;
        self.resolved.get(&(id, ep.ports_sig))
    }

    /// The resolved policy of an endpoint (`namespace/name`).
    pub fn endpoint_policy(&self, key: &str) -> Option<&Arc<EndpointPolicy>> {
        let ep = self.endpoints.get(key)?;
        self.resolved.get(&(ep.identity, ep.ports_sig))
    }

    /// Recomputes what changed since the last call.
    pub fn resolve(&mut self) -> ResolveStats {
        if self.ipcache_dirty {
            self.ipcache_dirty = false;
            let prefixes: Vec<ipnet::IpNet> = self
                .policies
                .values()
                .flat_map(|c| c.policy.prefixes())
                .collect();
            let groups: Vec<&CidrGroup> = self.groups.values().collect();
            let before: FxHashSet<Identity> =
                self.ipcache.entries().iter().map(|(_, id)| *id).collect();
            let mut ipcache = std::mem::take(&mut self.ipcache);
            ipcache.rebuild(prefixes, &groups, &mut self.registry);
            let after: FxHashSet<Identity> = ipcache.entries().iter().map(|(_, id)| *id).collect();
            self.ipcache = ipcache;
            let mut touched = Vec::new();
            for id in before.difference(&after) {
                touched.extend(self.selectors.remove_identity(*id));
            }
            for id in after.difference(&before) {
                let labels = self.registry.labels(*id).cloned().unwrap_or_default();
                touched.extend(self.selectors.add_identity(*id, labels));
            }
            touched.sort_unstable();
            touched.dedup();
            self.mark_selector_users(&touched);
        }
        let dirty_policies: Vec<PolicyRef> = self.dirty_policies.drain().collect();
        for id in dirty_policies {
            if let Some(c) = self.policies.get(&id) {
                let subjects = self.subjects_of(c);
                self.dirty.extend(subjects);
            }
        }
        let dirty: Vec<Identity> = self.dirty.drain().collect();
        let mut stats = ResolveStats::default();
        let mut by_identity: FxHashMap<Identity, Vec<(u64, &[NamedPort])>> = FxHashMap::default();
        let dirty: FxHashSet<Identity> = dirty.into_iter().collect();
        for ep in self
            .endpoints
            .values()
            .filter(|e| dirty.contains(&e.identity))
        {
            let v = by_identity.entry(ep.identity).or_default();
            if !v.iter().any(|(sig, _)| *sig == ep.ports_sig) {
                v.push((ep.ports_sig, &ep.spec.named_ports));
            }
        }
        let mut computed = Vec::new();
        for (id, variants) in &by_identity {
            for (sig, ports) in variants {
                let policy = self.resolve_identity(*id, *sig, ports);
                stats.identities += 1;
                stats.entries += policy.ingress.map.len() + policy.egress.map.len();
                if let Some(a) = &policy.audit_view {
                    stats.entries += a.ingress.table.map.len() + a.egress.table.map.len();
                }
                computed.push(((*id, *sig), Arc::new(policy)));
            }
        }
        self.resolved.retain(|(id, _), _| !dirty.contains(id));
        self.resolved.extend(computed);
        stats
    }

    /// Marks every endpoint identity for recomputation.
    pub fn invalidate_all(&mut self) {
        let ids: Vec<Identity> = self.endpoints.values().map(|e| e.identity).collect();
        self.dirty.extend(ids);
    }

    fn resolve_identity(&self, id: Identity, sig: u64, own_ports: &[NamedPort]) -> EndpointPolicy {
        let empty = LabelSet::default();
        let labels = self.registry.labels(id).map(|l| &**l).unwrap_or(&empty);
        let init = labels.has_reserved("init");
        let all: Vec<&CompiledRule> = self
            .subjects
            .candidates(labels)
            .into_iter()
            .filter_map(|(_, (c, i))| c.rules.get(*i))
            .filter(|r| r.subject.as_ref().is_some_and(|s| s.matches(labels)))
            .collect();
        // The enforced view: audit-mode policies never drop, so they are left out here.
        let rules: Vec<&CompiledRule> = all.iter().filter(|r| !r.audit).copied().collect();
        let mut error = None;
        let mut dirs = [Direction::Ingress, Direction::Egress].map(|dir| {
            match self.resolve_direction(id, dir, &rules, init, own_ports) {
                Ok(d) => d,
                Err(e) => {
                    error = Some(e);
                    // Fail closed: the previous tables if there were any, else enforce and deny.
                    self.resolved
                        .get(&(id, sig))
                        .map(|p| p.direction(dir).clone())
                        .unwrap_or(DirectionPolicy {
                            enforced: true,
                            default_deny: true,
                            ..Default::default()
                        })
                }
            }
        });
        let [ingress, egress] = std::mem::take(&mut dirs);
        // The full view costs a second resolution, so only identities an audit policy selects pay.
        let audit_view = (rules.len() != all.len()).then(|| {
            Box::new(self.resolve_audit_view(id, &all, init, own_ports, [&ingress, &egress]))
        });
        EndpointPolicy {
            identity: id,
            ingress,
            egress,
            error,
            audit_view,
        }
    }

    pub(crate) fn resolve_direction(
        &self,
        subject: Identity,
        dir: Direction,
        rules: &[&CompiledRule],
        init: bool,
        own_ports: &[NamedPort],
    ) -> Result<DirectionPolicy, String> {
        let has_section = rules.iter().any(|r| r.rule.has_direction(dir));
        let enforced = match self.opts.enforcement {
            Enforcement::Never => false,
            Enforcement::Always => true,
            Enforcement::Default => init || has_section,
        };
        if !enforced {
            return Ok(DirectionPolicy::default());
        }
        let default_deny = self.opts.enforcement == Enforcement::Always
            || init
            || rules
                .iter()
                .any(|r| r.rule.has_direction(dir) && r.rule.default_deny(dir));
        let has_l7 = rules.iter().flat_map(|r| &r.items).any(|i| {
            i.direction == dir && !i.deny && i.item.ports.iter().flatten().any(|p| p.l7.is_some())
        });
        // fromRequires/toRequires of every selecting rule narrow every endpoint selector (§3.3).
        let requires = |deny: bool| -> Vec<&crate::selector::Requirement> {
            rules
                .iter()
                .flat_map(|r| &r.items)
                .filter(|i| i.direction == dir && i.deny == deny)
                .flat_map(|i| &i.item.requires)
                .collect()
        };
        let (requires_allow, requires_deny) = (requires(false), requires(true));
        let mut table = MapStateBuilder::default();
        let mut parsers: FxHashMap<Key, &str> = FxHashMap::default();
        let mut l7 = Vec::new();
        for rule in rules {
            for item in rule.items.iter().filter(|i| i.direction == dir) {
                let peers: Option<Vec<u32>> = match &item.peers {
                    CompiledPeers::Any => None,
                    CompiledPeers::Selectors(ids) => {
                        let mut set: Vec<u32> = match ids.as_slice() {
                            [one] => self.selectors.matches(*one).iter().map(|i| i.0).collect(),
                            many => {
                                let mut u: FxHashSet<u32> = FxHashSet::default();
                                for s in many {
                                    u.extend(self.selectors.matches(*s).iter().map(|i| i.0));
                                }
                                u.into_iter().collect()
                            }
                        };
                        let reqs = if item.deny {
                            &requires_deny
                        } else {
                            &requires_allow
                        };
                        if !reqs.is_empty() && item.item.peer_field.ends_with("Endpoints") {
                            set.retain(|id| {
                                self.registry
                                    .labels(Identity(*id))
                                    .is_some_and(|l| reqs.iter().all(|r| r.matches(l)))
                            });
                        }
                        if set.is_empty() {
                            continue;
                        }
                        Some(set)
                    }
                };
                let any = [ANY_IDENTITY];
                let ids: &[u32] = peers.as_deref().unwrap_or(&any);
                for (ports, l7rules) in self.port_keys(dir, &item.item, own_ports) {
                    let rank = l7rules.map(proxy_rank).unwrap_or(0);
                    for &id in ids {
                        for &(proto, port, len) in &ports {
                            let key = Key::new(id, proto, port, len);
                            if let Some(r) = l7rules.filter(|_| !item.deny) {
                                match parsers.get(&key) {
                                    Some(p) if *p != r.parser() => {
                                        return Err(format!(
                                            "cannot merge conflicting L7 parsers ({p} and {}) for the same peer on {}/{}",
                                            r.parser(),
                                            Protocol::from_number(proto)
                                                .map(Protocol::as_str)
                                                .unwrap_or("?"),
                                            port
                                        ));
                                    }
                                    _ => {
                                        parsers.insert(key, r.parser());
                                    }
                                }
                            }
                            table.add(
                                key,
                                Contribution {
                                    deny: item.deny,
                                    proxy_rank: if item.deny { 0 } else { rank },
                                    auth_required: item.item.auth_required && !item.deny,
                                    origin: rule.origin.clone(),
                                },
                            );
                        }
                    }
                    if has_l7 && !item.deny && !ports.is_empty() {
                        l7.push(L7Filter {
                            peers: peers
                                .as_ref()
                                .map(|p| Arc::new(p.iter().map(|i| Identity(*i)).collect())),
                            ports,
                            http: match l7rules {
                                Some(L7Rules::Http(rules)) => Some(rules.clone()),
                                _ => None,
                            },
                            origin: rule.origin.clone(),
                        });
                    }
                }
            }
        }
        // The implicit L3 allows (§4.2, §4.3): no port, no L7, so they also lift HTTP rules.
        let mut implicit = |peer: Option<Identity>, origin: Origin| {
            let origin = Arc::new(origin);
            let contribution = Contribution {
                deny: false,
                proxy_rank: 0,
                auth_required: false,
                origin: origin.clone(),
            };
            table.add(
                Key::new(peer.map_or(ANY_IDENTITY, |p| p.0), 0, 0, 0),
                contribution,
            );
            if has_l7 {
                let peers = peer.map(|p| Arc::new([p].into_iter().collect()));
                l7.push(L7Filter {
                    peers,
                    ports: vec![(0, 0, 0)],
                    http: None,
                    origin,
                });
            }
        };
        if !default_deny {
            implicit(None, Origin::DefaultAllow);
        }
        if dir == Direction::Ingress && self.opts.allow_localhost && subject != Identity::HOST {
            implicit(Some(Identity::HOST), Origin::AllowLocalhost);
        }
        let map = table.finish();
        Ok(DirectionPolicy {
            enforced: true,
            default_deny,
            map,
            l7,
        })
    }

    /// The (protocol, port, prefix) keys of an item, grouped per port rule with its L7 rules.
    fn port_keys<'a>(
        &self,
        dir: Direction,
        item: &'a PolicyItem,
        own_ports: &[NamedPort],
    ) -> Vec<(Vec<PortPrefix>, Option<&'a L7Rules>)> {
        let mut out = Vec::new();
        if let Some(icmps) = &item.icmps {
            let keys = icmps
                .iter()
                .map(|f| {
                    (
                        (if f.v6 {
                            Protocol::Icmpv6
                        } else {
                            Protocol::Icmp
                        })
                        .number(),
                        u16::from(f.icmp_type),
                        16,
                    )
                })
                .collect();
            out.push((keys, None));
            return out;
        }
        let Some(port_rules) = &item.ports else {
            out.push((vec![(0, 0, 0)], None));
            return out;
        };
        for pr in port_rules {
            let mut keys = Vec::new();
            for pp in &pr.ports {
                let protos: &[Protocol] = match pp.protocol {
                    Protocol::Any => &[Protocol::Tcp, Protocol::Udp, Protocol::Sctp],
                    ref p => std::slice::from_ref(p),
                };
                let (start, end) = match &pp.port {
                    PortSpec::Number(0) => (0, u16::MAX),
                    PortSpec::Number(n) => (*n, pp.end_port.filter(|e| e > n).unwrap_or(*n)),
                    PortSpec::Named(name) => match self.named_port(dir, name, own_ports) {
                        Some(n) => (n, n),
                        None => continue,
                    },
                };
                for proto in protos {
                    for (port, len) in port_range_prefixes(start, end) {
                        keys.push((proto.number(), port, len));
                    }
                }
            }
            out.push((keys, pr.l7.as_ref()));
        }
        out
    }

    /// Ingress: the subject's own container ports; egress: every endpoint's. A name that maps to two
    /// numbers resolves to nothing (Cilium's ErrDuplicateNamedPorts).
    fn named_port(&self, dir: Direction, name: &str, own_ports: &[NamedPort]) -> Option<u16> {
        let all: Box<dyn Iterator<Item = &NamedPort>> = match dir {
            Direction::Ingress => Box::new(own_ports.iter()),
            Direction::Egress => {
                Box::new(self.endpoints.values().flat_map(|e| &e.spec.named_ports))
            }
        };
        let mut found: Option<u16> = None;
        for np in all.filter(|p| p.name == name) {
            match found {
                Some(n) if n != np.port => return None,
                _ => found = Some(np.port),
            }
        }
        found
    }
}

/// Cilium 1.18's proxy priorities (HTTP 101 … DNS 121), as ranks where higher wins.
fn proxy_rank(l7: &L7Rules) -> u8 {
    let priority: u8 = match l7 {
        L7Rules::Http(_) => 101,
        L7Rules::Kafka(_) => 106,
        L7Rules::Generic(_) => 111,
        L7Rules::Dns(_) => 121,
    };
    255 - priority
}
