//! The ipcache: every prefix named by a policy or a CIDR group gets a node-local identity whose
//! labels are `cidr:<prefix>`, `reserved:world` and the CIDR-group labels of every containing
//! prefix (§1.4, §3.3, §7.3 of docs/policy-semantics.md). An address takes the identity of its
//! longest containing prefix.

use crate::api::{CIDR_GROUP_NAME_KEY, CidrGroup};
use crate::decode::cidr_label_key;
use crate::identity::{Identity, IdentityRegistry};
use crate::labels::{Label, LabelSet, LabelSource};
use ipnet::IpNet;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Marks every CIDR-group prefix, so an empty `cidrGroupSelector` selects groups and not plain world.
pub(crate) const CIDR_GROUP_ANY_KEY: &str = "io.cilium.policy.cidrgroup";

#[derive(Debug, Clone, Default)]
pub struct IpCache {
    /// Per prefix length, longest first when iterated in reverse.
    v4: BTreeMap<u8, FxHashMap<IpNet, Identity>>,
    v6: BTreeMap<u8, FxHashMap<IpNet, Identity>>,
    /// In allocation order.
    entries: Vec<(IpNet, Identity)>,
}

impl IpCache {
    /// The identity of the longest prefix containing `ip`, if any.
    pub fn lookup(&self, ip: IpAddr) -> Option<(IpNet, Identity)> {
        let table = if ip.is_ipv4() { &self.v4 } else { &self.v6 };
        for (len, map) in table.iter().rev() {
            if let Ok(net) = IpNet::new(ip, *len) {
                let net = net.trunc();
                if let Some(id) = map.get(&net) {
                    return Some((net, *id));
                }
            }
        }
        None
    }

    pub fn entries(&self) -> &[(IpNet, Identity)] {
        &self.entries
    }

    /// Makes the cache hold exactly `prefixes` (in first-seen order) plus the groups' CIDRs.
    /// Identities of vanished prefixes are released. Returns whether any identity changed.
    pub fn rebuild(
        &mut self,
        prefixes: impl IntoIterator<Item = IpNet>,
        groups: &[&CidrGroup],
        registry: &mut IdentityRegistry,
    ) -> bool {
        let mut order: Vec<IpNet> = Vec::new();
        let mut seen = rustc_hash::FxHashSet::default();
        let group_nets = groups.iter().flat_map(|g| g.cidrs.iter().copied());
        for net in group_nets.chain(prefixes) {
            let net = net.trunc();
            if seen.insert(net) {
                order.push(net);
            }
        }
        let mut next: Vec<(IpNet, Identity)> = Vec::with_capacity(order.len());
        let mut changed = false;
        for net in &order {
            let labels = prefix_labels(*net, groups);
            let (id, new) = registry.allocate_local(labels);
            changed |= new;
            next.push((*net, id));
        }
        let keep: rustc_hash::FxHashSet<Identity> = next.iter().map(|(_, id)| *id).collect();
        for (_, id) in &self.entries {
            if !keep.contains(id) {
                registry.release(*id);
                changed = true;
            }
        }
        self.v4.clear();
        self.v6.clear();
        for (net, id) in &next {
            let table = if matches!(net, IpNet::V4(_)) {
                &mut self.v4
            } else {
                &mut self.v6
            };
            table.entry(net.prefix_len()).or_default().insert(*net, *id);
        }
        self.entries = next;
        changed
    }
}

fn prefix_labels(net: IpNet, groups: &[&CidrGroup]) -> LabelSet {
    let mut labels = vec![
        Label::new(LabelSource::Cidr, &cidr_label_key(net), ""),
        Label::reserved("world"),
    ];
    for g in groups {
        if g.cidrs
            .iter()
            .any(|q| q.prefix_len() <= net.prefix_len() && q.contains(&net.network()))
        {
            labels.push(Label::new(
                LabelSource::CidrGroup,
                &format!("{CIDR_GROUP_NAME_KEY}/{}", g.name),
                "",
            ));
            labels.push(Label::new(LabelSource::CidrGroup, CIDR_GROUP_ANY_KEY, ""));
            for (k, v) in &g.labels {
                if !k.starts_with("io.cilium.k8s") {
                    labels.push(Label::new(LabelSource::CidrGroup, k, v));
                }
            }
        }
    }
    LabelSet::new(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn longest_prefix_and_group_labels() {
        let mut reg = IdentityRegistry::new();
        let mut cache = IpCache::default();
        let group = CidrGroup {
            name: Arc::from("azure-imds"),
            labels: vec![("team".into(), "a".into())],
            cidrs: vec!["169.254.169.254/32".parse().unwrap()],
            file: Arc::from("g.yaml"),
            pos: Default::default(),
        };
        cache.rebuild(["169.254.0.0/16".parse().unwrap()], &[&group], &mut reg);
        let (net, id) = cache.lookup("169.254.169.254".parse().unwrap()).unwrap();
        assert_eq!(net.to_string(), "169.254.169.254/32");
        assert_eq!(id, Identity::FIRST_LOCAL);
        let labels = reg.labels(id).unwrap().to_string();
        assert!(
            labels.contains("cidrgroup:io.cilium.policy.cidrgroupname/azure-imds"),
            "{labels}"
        );
        assert!(labels.contains("cidrgroup:team=a"));
        assert!(labels.contains("reserved:world"));
        let (net2, _) = cache.lookup("169.254.1.1".parse().unwrap()).unwrap();
        assert_eq!(net2.to_string(), "169.254.0.0/16");
        assert!(cache.lookup("10.0.0.1".parse().unwrap()).is_none());
    }
}
