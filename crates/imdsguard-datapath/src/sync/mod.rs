//! Keeps the datapath's tables equal to the engine's state: the ipcache, the endpoints and each
//! endpoint's policy. Called after every change; writes only what differs.
//!
//! It writes through [`MapWriter`], which the loaded `Datapath` implements on the pinned maps and
//! [`fake::FakeMaps`] in memory, so that what it writes, and in which order, is tested without
//! root (`tests`); the root tests (`tests/enforce.rs`) check that packets obey it.

pub mod fake;
#[cfg(test)]
mod tests;
mod writer;

pub use writer::{Generations, MapWriter};

use crate::abi::{EP_HOST_NETWORK, EndpointInfo, IPC_PROTECTED, canonical_prefix};
use crate::loader::DatapathError;
use crate::tables::{RuleIds, endpoint_tables};
use imdsguard_policy::Repository;
use imdsguard_policy::repository::EndpointPolicy;
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Audit mode for every endpoint (Cilium's --policy-audit-mode).
    pub audit: bool,
    /// Audit mode for these endpoints (`namespace/name`) only.
    pub audit_endpoints: HashSet<String>,
    /// The L7 proxy's listening port, for entries that redirect.
    pub proxy_port: u16,
    /// Addresses never reachable from a pod whose policy is not in place yet: by default every
    /// metadata address of `imdsguard_metadata`'s table.
    pub protected: Vec<IpNet>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            audit: false,
            audit_endpoints: HashSet::new(),
            proxy_port: 15001,
            protected: imdsguard_metadata::protected_prefixes(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    pub ipcache_written: usize,
    pub ipcache_removed: usize,
    pub policies_applied: usize,
    pub endpoints_pending: usize,
    pub endpoints_removed: usize,
    /// `cgroup_endpoints` entries written or removed apart from a policy change (a pod's
    /// cgroups changed).
    pub cgroups_changed: usize,
}

struct Applied {
    ep_id: u32,
    audit: bool,
    ips: Vec<IpAddr>,
    /// Its cgroups (a hostNetwork pod's), sorted.
    cgroups: Vec<u64>,
    identity: u32,
    policy: Option<Arc<EndpointPolicy>>,
    /// The entry last written for it.
    info: EndpointInfo,
}

/// The engine → datapath writer. Endpoint IDs are small numbers per endpoint key, stable across
/// agent restarts: a restarted agent takes each endpoint's ID back from the pinned endpoints map
/// (by its addresses), and hands new endpoints numbers above every pinned one.
pub struct TableSync {
    opts: SyncOptions,
    pub rule_ids: RuleIds,
    ipcache: HashMap<IpNet, (u32, u32)>,
    endpoints: HashMap<String, Applied>,
    /// IDs taken back from the pinned state at start, for endpoints not yet applied.
    reserved: HashMap<String, u32>,
    /// hostNetwork pods: cgroup id -> endpoint key.
    cgroups: HashMap<u64, String>,
    next_ep_id: u32,
    synced: bool,
}

impl TableSync {
    pub fn new(opts: SyncOptions) -> TableSync {
        TableSync {
            opts,
            rule_ids: RuleIds::default(),
            ipcache: HashMap::new(),
            endpoints: HashMap::new(),
            reserved: HashMap::new(),
            cgroups: HashMap::new(),
            next_ep_id: 1,
            synced: false,
        }
    }

    /// Sets which endpoints are in audit mode; the next `sync` rewrites those that changed.
    pub fn set_audit_endpoints(&mut self, keys: HashSet<String>) {
        self.opts.audit_endpoints = keys;
    }

    /// The cgroups of hostNetwork pods (cgroup id -> endpoint key `namespace/name`): the next
    /// `sync` gives each its endpoint's entry in `cgroup_endpoints` (with `EP_HOST_NETWORK`), so
    /// the cgroup hooks judge what processes in it (and its descendants) connect to, and removes
    /// the entries no longer in `map`. A key that is not an endpoint of the repository is
    /// ignored. The endpoint needs no addresses (hostNetwork pods have none of their own).
    pub fn set_cgroup_endpoints(&mut self, map: HashMap<u64, String>) {
        self.cgroups = map;
    }

    /// The cgroup ids given for an endpoint key, sorted.
    fn cgroups_of(&self, key: &str) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .cgroups
            .iter()
            .filter(|(_, k)| k.as_str() == key)
            .map(|(c, _)| *c)
            .collect();
        v.sort_unstable();
        v
    }

    /// The endpoint ID of an endpoint key (`namespace/name`).
    pub fn endpoint_id(&self, key: &str) -> Option<u32> {
        self.endpoints.get(key).map(|a| a.ep_id)
    }

    pub fn sync(
        &mut self,
        repo: &Repository,
        dp: &mut impl MapWriter,
    ) -> Result<SyncStats, DatapathError> {
        let mut stats = SyncStats::default();
        let first = !self.synced;
        if first {
            self.adopt_endpoint_ids(repo, dp);
            // Start from what the maps hold (an earlier agent's state), so the diff removes
            // what is no longer wanted.
            self.ipcache = dp
                .ipcache_entries()
                .into_iter()
                .map(|(net, v)| (net, (v.identity, v.flags)))
                .collect();
        }
        self.sync_ipcache(repo, dp, &mut stats)?;
        self.sync_endpoints(repo, dp, &mut stats)?;
        if first {
            let ips: Vec<IpAddr> = self
                .endpoints
                .values()
                .flat_map(|a| a.ips.clone())
                .collect();
            let live: HashMap<u32, u32> = self
                .endpoints
                .values()
                .filter_map(|a| {
                    let e = match a.ips.first() {
                        Some(ip) => dp.endpoint(*ip),
                        None => dp.cgroup_endpoint(*a.cgroups.first()?),
                    }?;
                    Some((a.ep_id, e.generation))
                })
                .collect();
            dp.retain(&ips, &live)?;
            let wanted: HashSet<u64> = self
                .endpoints
                .values()
                .flat_map(|a| a.cgroups.iter().copied())
                .collect();
            for (cg, _) in dp.cgroup_endpoints() {
                if !wanted.contains(&cg) {
                    dp.remove_cgroup_endpoint(cg)?;
                }
            }
            self.synced = true;
        }
        if first || stats != SyncStats::default() {
            dp.bump_policy_epoch()?;
        }
        Ok(stats)
    }

    /// Takes back the IDs an earlier agent gave: an endpoint whose address the pinned map holds
    /// keeps that entry's ID, unless another endpoint claimed it first (an address that moved
    /// between pods while no agent ran). The rest get numbers above every pinned ID.
    fn adopt_endpoint_ids(&mut self, repo: &Repository, dp: &impl MapWriter) {
        let pinned: HashMap<IpAddr, u32> = dp
            .endpoints()
            .into_iter()
            .map(|(ip, e)| (ip, e.ep_id))
            .collect();
        let pinned_cgroups: HashMap<u64, u32> = dp
            .cgroup_endpoints()
            .into_iter()
            .map(|(c, e)| (c, e.ep_id))
            .collect();
        self.next_ep_id = self.next_ep_id.max(
            pinned
                .values()
                .chain(pinned_cgroups.values())
                .max()
                .map_or(1, |m| m.saturating_add(1)),
        );
        let mut claimed: HashSet<u32> = self.reserved.values().copied().collect();
        for (spec, _) in repo.endpoints() {
            let key = spec.key();
            if self.reserved.contains_key(&key) {
                continue;
            }
            let id = spec
                .ips
                .iter()
                .find_map(|ip| pinned.get(ip).copied())
                .or_else(|| {
                    self.cgroups_of(&key)
                        .iter()
                        .find_map(|c| pinned_cgroups.get(c).copied())
                });
            if let Some(id) = id.filter(|id| *id != 0 && claimed.insert(*id)) {
                self.reserved.insert(key, id);
            }
        }
    }

    fn sync_ipcache(
        &mut self,
        repo: &Repository,
        dp: &mut impl MapWriter,
        stats: &mut SyncStats,
    ) -> Result<(), DatapathError> {
        let mut want: HashMap<IpNet, (u32, u32)> = repo
            .ipcache()
            .entries()
            .iter()
            .map(|(net, id)| (*net, (id.0, 0)))
            .collect();
        for (spec, identity) in repo.endpoints() {
            for ip in &spec.ips {
                want.insert(IpNet::from(*ip), (identity.0, 0));
            }
        }
        for net in self.opts.protected.iter().map(canonical_prefix) {
            let entry = want
                .entry(net)
                .or_insert_with(|| (repo.identity_of_ip(net.network()).0, 0));
            entry.1 |= IPC_PROTECTED;
        }
        for (net, v) in &want {
            if self.ipcache.get(net) != Some(v) {
                dp.set_ipcache(*net, v.0, v.1)?;
                stats.ipcache_written += 1;
            }
        }
        let gone: Vec<IpNet> = self
            .ipcache
            .keys()
            .filter(|n| !want.contains_key(n))
            .copied()
            .collect();
        for net in gone {
            dp.remove_ipcache(net)?;
            stats.ipcache_removed += 1;
        }
        self.ipcache = want;
        Ok(())
    }

    fn sync_endpoints(
        &mut self,
        repo: &Repository,
        dp: &mut impl MapWriter,
        stats: &mut SyncStats,
    ) -> Result<(), DatapathError> {
        let mut seen = Vec::new();
        for (spec, identity) in repo.endpoints() {
            let key = spec.key();
            let policy = repo.endpoint_policy(&key).cloned();
            let known = self.endpoints.get(&key).map(|a| a.ep_id);
            let ep_id = match known.or_else(|| self.reserved.get(&key).copied()) {
                Some(id) => id,
                None => {
                    let id = self.next_ep_id;
                    self.next_ep_id += 1;
                    id
                }
            };
            let audit = self.opts.audit || self.opts.audit_endpoints.contains(&key);
            let cgroups = self.cgroups_of(&key);
            let unchanged = self.endpoints.get(&key).is_some_and(|a| {
                a.ips == spec.ips
                    && a.audit == audit
                    && a.identity == identity.0
                    && match (&a.policy, &policy) {
                        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                        (None, None) => true,
                        _ => false,
                    }
            });
            seen.push(key.clone());
            if unchanged {
                // Only its cgroups may have changed: they take the entry in force, with no new
                // generation.
                if let Some(a) = self.endpoints.get_mut(&key)
                    && a.cgroups != cgroups
                {
                    let gone: Vec<u64> = a
                        .cgroups
                        .iter()
                        .filter(|c| !cgroups.contains(c))
                        .copied()
                        .collect();
                    dp.release_cgroups(&gone, ep_id)?;
                    for cg in cgroups.iter().filter(|c| !a.cgroups.contains(c)) {
                        dp.set_cgroup_endpoint(
                            *cg,
                            EndpointInfo {
                                flags: a.info.flags | EP_HOST_NETWORK,
                                ..a.info
                            },
                        )?;
                    }
                    stats.cgroups_changed += 1;
                    a.cgroups = cgroups;
                }
                continue;
            }
            // Only addresses the endpoint lost go: its rows stay until the new generation is in
            // force (apply_policy removes them after the flip), so no packet sees a gap.
            if let Some(old) = self.endpoints.get(&key) {
                let moved: Vec<IpAddr> = old
                    .ips
                    .iter()
                    .filter(|ip| !spec.ips.contains(ip))
                    .copied()
                    .collect();
                dp.release_addresses(&moved, ep_id);
                let gone: Vec<u64> = old
                    .cgroups
                    .iter()
                    .filter(|c| !cgroups.contains(c))
                    .copied()
                    .collect();
                dp.release_cgroups(&gone, ep_id)?;
            }
            let info = match &policy {
                Some(p) => {
                    let (proxy_port, ids) = (self.opts.proxy_port, &mut self.rule_ids);
                    let info =
                        dp.apply_policy_at(&spec.ips, &cgroups, ep_id, identity.0, |generation| {
                            endpoint_tables(ep_id, generation, p, audit, proxy_port, ids)
                        })?;
                    stats.policies_applied += 1;
                    info
                }
                None => {
                    dp.add_pending_endpoint_at(&spec.ips, &cgroups, ep_id, identity.0)?;
                    stats.endpoints_pending += 1;
                    // A policy an earlier agent put in force stays (add_pending keeps it).
                    spec.ips
                        .iter()
                        .filter_map(|ip| dp.endpoint(*ip))
                        .chain(cgroups.iter().filter_map(|c| dp.cgroup_endpoint(*c)))
                        .find(|e| e.ep_id == ep_id)
                        .map(|e| EndpointInfo {
                            flags: e.flags & !EP_HOST_NETWORK,
                            ..e
                        })
                        .unwrap_or(EndpointInfo {
                            ep_id,
                            identity: identity.0,
                            ..Default::default()
                        })
                }
            };
            self.endpoints.insert(
                key,
                Applied {
                    ep_id,
                    audit,
                    ips: spec.ips.clone(),
                    cgroups,
                    identity: identity.0,
                    policy,
                    info,
                },
            );
        }
        let gone: Vec<String> = self
            .endpoints
            .keys()
            .filter(|k| !seen.contains(k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(a) = self.endpoints.remove(&key) {
                dp.remove_endpoint_at(&a.ips, &a.cgroups, a.ep_id)?;
                stats.endpoints_removed += 1;
            }
        }
        Ok(())
    }
}
