//! Security identities (docs/policy-semantics.md §7): reserved numbers, pod identities from their
//! security-relevant labels (§2.6), and node-local identities for policy prefixes, allocated from
//! 16777217 upward.

use crate::labels::{Label, LabelSet};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const CLUSTER_LABEL: &str = "io.cilium.k8s.policy.cluster";
pub const SERVICE_ACCOUNT_LABEL: &str = "io.cilium.k8s.policy.serviceaccount";
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";

/// A numeric security identity, printed as Hubble prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Identity(pub u32);

impl Identity {
    pub const UNKNOWN: Identity = Identity(0);
    pub const HOST: Identity = Identity(1);
    pub const WORLD: Identity = Identity(2);
    pub const UNMANAGED: Identity = Identity(3);
    pub const HEALTH: Identity = Identity(4);
    pub const INIT: Identity = Identity(5);
    pub const REMOTE_NODE: Identity = Identity(6);
    pub const KUBE_APISERVER: Identity = Identity(7);
    pub const INGRESS: Identity = Identity(8);
    pub const WORLD_IPV4: Identity = Identity(9);
    pub const WORLD_IPV6: Identity = Identity(10);
    /// The first node-local identity (`1 << 24 | 1`).
    pub const FIRST_LOCAL: Identity = Identity(16_777_217);

    const RESERVED: [(u32, &'static str); 10] = [
        (1, "host"),
        (2, "world"),
        (3, "unmanaged"),
        (4, "health"),
        (5, "init"),
        (6, "remote-node"),
        (7, "kube-apiserver"),
        (8, "ingress"),
        (9, "world-ipv4"),
        (10, "world-ipv6"),
    ];

    pub fn reserved_name(self) -> Option<&'static str> {
        Self::RESERVED
            .iter()
            .find(|(n, _)| *n == self.0)
            .map(|(_, s)| *s)
    }

    pub fn reserved_by_name(name: &str) -> Option<Identity> {
        Self::RESERVED
            .iter()
            .find(|(_, s)| *s == name)
            .map(|(n, _)| Identity(*n))
    }

    pub fn is_local(self) -> bool {
        self.0 >> 24 == 1
    }

    /// The labels of a reserved identity (§7.1).
    pub fn reserved_labels(self) -> Option<LabelSet> {
        let name = self.reserved_name()?;
        let mut labels = vec![Label::reserved(name)];
        if self == Identity::KUBE_APISERVER {
            labels.push(Label::reserved("remote-node"));
        }
        Some(LabelSet::new(labels))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reserved_name() {
            Some(name) => f.write_str(name),
            None => write!(f, "ID:{}", self.0),
        }
    }
}

/// FNV-1a: a stable hash (unlike std's randomised one), so derived numbers survive restarts.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What Kubernetes knows about a pod, as far as its identity is concerned.
#[derive(Debug, Clone, Default)]
pub struct PodLabels<'a> {
    pub namespace: &'a str,
    pub labels: &'a [(String, String)],
    pub namespace_labels: &'a [(String, String)],
    pub service_account: &'a str,
    pub cluster: &'a str,
}

/// Cilium's `SanitizePodLabels` followed by the default identity-relevant label filter (§2.6).
pub fn pod_identity_labels(pod: &PodLabels) -> LabelSet {
    let mut out = Vec::new();
    for (k, v) in pod.labels {
        if !k.starts_with("io.cilium.k8s") && relevant(k) {
            out.push(Label::k8s(k, v));
        }
    }
    out.push(Label::k8s(NAMESPACE_LABEL, pod.namespace));
    let mut has_meta_name = false;
    for (k, v) in pod.namespace_labels {
        has_meta_name |= k == "kubernetes.io/metadata.name";
        out.push(Label::k8s(&format!("{NAMESPACE_LABELS_PREFIX}{k}"), v));
    }
    if !has_meta_name {
        // The API server adds this label to every namespace (Kubernetes ≥ 1.21).
        out.push(Label::k8s(
            &format!("{NAMESPACE_LABELS_PREFIX}kubernetes.io/metadata.name"),
            pod.namespace,
        ));
    }
    if !pod.service_account.is_empty() {
        out.push(Label::k8s(SERVICE_ACCOUNT_LABEL, pod.service_account));
    }
    if !pod.cluster.is_empty() {
        out.push(Label::k8s(CLUSTER_LABEL, pod.cluster));
    }
    LabelSet::new(out)
}

const INCLUDE: &[&str] = &[
    "io.kubernetes.pod.namespace",
    "io.cilium.k8s.namespace.labels",
    "app.kubernetes.io",
    "io.cilium.k8s.policy.cluster",
    "io.cilium.k8s.policy.serviceaccount",
];
const IGNORE: &[&str] = &[
    "io.kubernetes",
    "kubernetes.io",
    "k8s.io",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/job-completion-index",
    "batch.kubernetes.io/controller-uid",
    "pod-template-generation",
    "pod-template-hash",
    "controller-revision-hash",
    "controller-uid",
    "annotation.",
    "etcd_node",
];

/// Whether a pod label key is security-relevant: no ignore pattern matches, or a longer include does.
fn relevant(key: &str) -> bool {
    let include = INCLUDE
        .iter()
        .filter(|p| key.starts_with(*p))
        .map(|p| p.len())
        .max()
        .unwrap_or(0);
    let mut ignore = IGNORE
        .iter()
        .filter(|p| key.starts_with(*p))
        .map(|p| p.len())
        .min();
    if ignore.is_none() && key.contains("beta.kubernetes.io") {
        ignore = Some(key.find("beta.kubernetes.io").unwrap_or(0) + "beta.kubernetes.io".len());
    }
    match ignore {
        None => true,
        Some(ig) => include > ig,
    }
}

/// Numbers and labels of every identity known on this node.
#[derive(Debug, Clone, Default)]
pub struct IdentityRegistry {
    by_labels: FxHashMap<Arc<LabelSet>, Identity>,
    by_id: BTreeMap<Identity, Arc<LabelSet>>,
    next_local: u32,
}

impl IdentityRegistry {
    /// A registry holding the reserved identities.
    pub fn new() -> IdentityRegistry {
        let mut r = IdentityRegistry {
            next_local: Identity::FIRST_LOCAL.0,
            ..Default::default()
        };
        for (n, _) in Identity::RESERVED {
            let id = Identity(n);
            if let Some(labels) = id.reserved_labels() {
                r.insert(id, labels);
            }
        }
        r
    }

    fn insert(&mut self, id: Identity, labels: LabelSet) {
        let labels = Arc::new(labels);
        self.by_labels.insert(labels.clone(), id);
        self.by_id.insert(id, labels);
    }

    pub fn labels(&self, id: Identity) -> Option<&Arc<LabelSet>> {
        self.by_id.get(&id)
    }

    pub fn lookup(&self, labels: &LabelSet) -> Option<Identity> {
        self.by_labels.get(labels).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Identity, &Arc<LabelSet>)> {
        self.by_id.iter().map(|(id, l)| (*id, l))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The identity of a pod's label set. The number is derived from the labels (stable across
    /// restarts and nodes, as Cilium's cluster-wide allocation is), probing upward on a collision.
    /// Returns the identity and whether it is new.
    pub fn allocate_global(&mut self, labels: LabelSet) -> (Identity, bool) {
        if let Some(id) = self.lookup(&labels) {
            return (id, false);
        }
        const FIRST: u32 = 256;
        const SPAN: u32 = 65536 - FIRST;
        let mut n = (fnv1a(labels.to_string().as_bytes()) % u64::from(SPAN)) as u32;
        for _ in 0..SPAN {
            let id = Identity(FIRST + n);
            if !self.by_id.contains_key(&id) {
                self.insert(id, labels);
                return (id, true);
            }
            n = (n + 1) % SPAN;
        }
        // 65280 distinct pod label sets on one node: fall back to the local scope rather than fail.
        self.allocate_local(labels)
    }

    /// A node-local identity (CIDR prefixes, CIDR groups), numbered in allocation order.
    pub fn allocate_local(&mut self, labels: LabelSet) -> (Identity, bool) {
        if let Some(id) = self.lookup(&labels) {
            return (id, false);
        }
        let id = Identity(self.next_local);
        self.next_local += 1;
        self.insert(id, labels);
        (id, true)
    }

    pub fn release(&mut self, id: Identity) {
        if id.reserved_name().is_some() {
            return;
        }
        if let Some(labels) = self.by_id.remove(&id) {
            self.by_labels.remove(&labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_labels_are_filtered() {
        let labels = vec![
            ("app".to_owned(), "web".to_owned()),
            ("pod-template-hash".to_owned(), "847857f68".to_owned()),
            ("app.kubernetes.io/name".to_owned(), "web".to_owned()),
            (
                "statefulset.kubernetes.io/pod-name".to_owned(),
                "web-0".to_owned(),
            ),
            ("io.cilium.k8s.policy.cluster".to_owned(), "evil".to_owned()),
        ];
        let set = pod_identity_labels(&PodLabels {
            namespace: "go-webapp",
            labels: &labels,
            namespace_labels: &[],
            service_account: "default",
            cluster: "default",
        });
        let text = set.to_string();
        assert_eq!(
            text,
            "k8s:app=web,k8s:app.kubernetes.io/name=web,k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=go-webapp,k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=default,k8s:io.kubernetes.pod.namespace=go-webapp"
        );
    }

    #[test]
    fn identities_are_stable_and_local_ones_sequential() {
        let mut a = IdentityRegistry::new();
        let mut b = IdentityRegistry::new();
        let l = LabelSet::new(vec![Label::k8s("app", "x")]);
        let (ia, _) = a.allocate_global(l.clone());
        let (ib, _) = b.allocate_global(l);
        assert_eq!(ia, ib);
        assert!((256..65536).contains(&ia.0));
        let (c1, _) = a.allocate_local(LabelSet::new(vec![Label::parse("cidr:1.2.3.4/32")]));
        let (c2, _) = a.allocate_local(LabelSet::new(vec![Label::parse("cidr:1.2.3.5/32")]));
        assert_eq!((c1.0, c2.0), (16_777_217, 16_777_218));
        assert_eq!(Identity::WORLD.to_string(), "world");
        assert_eq!(c1.to_string(), "ID:16777217");
    }
}
