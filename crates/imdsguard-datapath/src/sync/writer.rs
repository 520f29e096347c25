//! The map operations table sync needs, apart from the kernel: the datapath implements them on its
//! pinned maps and `fake::FakeMaps` in memory, so the sync's logic runs in tests without root.
//!
//! The table protocol (generations, the flip, stale rows) is written once, as the trait's
//! provided methods over the row operations, so the fake runs the same protocol as the kernel's
//! maps.

use crate::abi::{
    AUDIT_VIEW_GENERATION, EP_HOST_NETWORK, EndpointInfo, IpcacheValue, PolicyKey, PolicyValue,
};
use crate::loader::DatapathError;
use crate::tables::EndpointTables;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

type Result<T> = std::result::Result<T, DatapathError>;

/// The table rows written for an endpoint, so the previous generation can be removed without a
/// walk of the whole policy table.
#[derive(Debug, Clone)]
struct Written {
    generation: u32,
    rows: Vec<(u32, PolicyKey)>,
}

/// What one writer (one agent) wrote, per endpoint ID, and the next policy generation.
/// Generations are unique across all endpoints and agent restarts (the first is above any in the
/// tables found at start), so an endpoint ID that passes to another pod can never select rows its
/// previous owner left.
#[derive(Debug, Clone)]
pub struct Generations {
    written: HashMap<u32, Written>,
    next: u32,
}

impl Default for Generations {
    fn default() -> Self {
        Generations {
            written: HashMap::new(),
            next: 1,
        }
    }
}

impl Generations {
    /// The bookkeeping of a writer that starts on tables an earlier one may have filled.
    pub fn above(tables: &(impl MapWriter + ?Sized)) -> Generations {
        let highest = tables
            .endpoints()
            .into_iter()
            .map(|(_, e)| e.generation)
            .chain(
                tables
                    .cgroup_endpoints()
                    .into_iter()
                    .map(|(_, e)| e.generation),
            )
            .chain(
                tables
                    .policy_keys()
                    .into_iter()
                    .map(|(_, k)| view_generation(&k)),
            )
            .max()
            .unwrap_or(0);
        Generations {
            written: HashMap::new(),
            next: highest.saturating_add(1),
        }
    }

    fn take_next(&mut self) -> u32 {
        let generation = self.next;
        // 2^31 policy changes would be needed to reach the audit view's bit; start again at 1
        // rather than panic or collide with the full view's rows.
        self.next = generation
            .checked_add(1)
            .filter(|g| g & AUDIT_VIEW_GENERATION == 0)
            .unwrap_or(1);
        generation
    }
}

/// The rows of the datapath's endpoint, ipcache and policy tables, one at a time, and the
/// protocol that keeps them consistent while packets are judged. Implement the row operations;
/// the provided methods are the protocol and are not meant to be replaced.
pub trait MapWriter {
    /// Every endpoint entry, by address.
    fn endpoints(&self) -> Vec<(IpAddr, EndpointInfo)>;
    /// The endpoint entry for an address, as the datapath sees it.
    fn endpoint(&self, ip: IpAddr) -> Option<EndpointInfo>;
    fn put_endpoint(&mut self, ip: IpAddr, info: EndpointInfo) -> Result<()>;
    /// Best effort: an entry that is already gone is not an error.
    fn delete_endpoint(&mut self, ip: IpAddr);
    fn ipcache_entries(&self) -> Vec<(IpNet, IpcacheValue)>;
    fn set_ipcache(&mut self, net: IpNet, identity: u32, flags: u32) -> Result<()>;
    /// An entry that is already gone is not an error.
    fn remove_ipcache(&mut self, net: IpNet) -> Result<()>;
    /// Every policy row's key, with its LPM prefix length.
    fn policy_keys(&self) -> Vec<(u32, PolicyKey)>;
    fn put_policy(&mut self, prefix_len: u32, key: PolicyKey, value: PolicyValue) -> Result<()>;
    /// Best effort: a row that is already gone is not an error.
    fn delete_policy(&mut self, prefix_len: u32, key: PolicyKey);
    /// Tells the datapath that the tables changed: every connection is judged again on its next
    /// packet from the side that opened it, so a new deny also cuts existing connections.
    fn bump_policy_epoch(&mut self) -> Result<u32>;
    /// This writer's bookkeeping of what it wrote.
    fn generations(&mut self) -> &mut Generations;
    /// Every hostNetwork pod entry, by cgroup id.
    fn cgroup_endpoints(&self) -> Vec<(u64, EndpointInfo)>;
    fn set_cgroup_endpoint(&mut self, cgroup_id: u64, info: EndpointInfo) -> Result<()>;
    /// An entry that is already gone is not an error.
    fn remove_cgroup_endpoint(&mut self, cgroup_id: u64) -> Result<()>;

    /// The entry for one cgroup id.
    fn cgroup_endpoint(&self, cgroup_id: u64) -> Option<EndpointInfo> {
        self.cgroup_endpoints()
            .into_iter()
            .find(|(c, _)| *c == cgroup_id)
            .map(|(_, e)| e)
    }

    /// Registers an endpoint before its policy is known: it is fail-closed for metadata
    /// addresses until `apply_policy`.
    fn add_pending_endpoint(&mut self, ips: &[IpAddr], ep_id: u32, identity: u32) -> Result<()> {
        self.add_pending_endpoint_at(ips, &[], ep_id, identity)
    }

    /// `add_pending_endpoint`, also for the endpoint's cgroups (a hostNetwork pod): until its
    /// policy is in place, the hooks let it through (it is unknown, like any host process) and
    /// count it.
    fn add_pending_endpoint_at(
        &mut self,
        ips: &[IpAddr],
        cgroups: &[u64],
        ep_id: u32,
        identity: u32,
    ) -> Result<()> {
        for cg in cgroups {
            if self
                .cgroup_endpoint(*cg)
                .is_some_and(|c| c.ep_id == ep_id && c.identity == identity)
            {
                continue;
            }
            let info = EndpointInfo {
                ep_id,
                identity,
                generation: 0,
                flags: EP_HOST_NETWORK,
            };
            self.set_cgroup_endpoint(*cg, info)?;
        }
        for ip in ips {
            // Keep a policy already in force (an agent restart) rather than closing it again.
            if self
                .endpoint(*ip)
                .is_some_and(|c| c.ep_id == ep_id && c.identity == identity)
            {
                continue;
            }
            let info = EndpointInfo {
                ep_id,
                identity,
                generation: 0,
                flags: 0,
            };
            self.put_endpoint(*ip, info)?;
        }
        Ok(())
    }

    /// Switches an endpoint to a new policy atomically: the new generation's rows are written
    /// first, then one write per address flips the endpoint to them, then the old rows go.
    fn apply_policy(
        &mut self,
        ips: &[IpAddr],
        ep_id: u32,
        identity: u32,
        tables: impl FnOnce(u32) -> EndpointTables,
    ) -> Result<u32>
    where
        Self: Sized,
    {
        self.apply_policy_at(ips, &[], ep_id, identity, tables)
            .map(|info| info.generation)
    }

    /// `apply_policy`, also for the endpoint's cgroups (a hostNetwork pod, whose entries carry
    /// `EP_HOST_NETWORK`): they flip with its addresses, before the old rows go. Returns the
    /// endpoint entry written.
    fn apply_policy_at(
        &mut self,
        ips: &[IpAddr],
        cgroups: &[u64],
        ep_id: u32,
        identity: u32,
        tables: impl FnOnce(u32) -> EndpointTables,
    ) -> Result<EndpointInfo>
    where
        Self: Sized,
    {
        let written = self.generations().written.get(&ep_id).map(|w| w.generation);
        let live = ips
            .iter()
            .filter_map(|ip| self.endpoint(*ip))
            .chain(cgroups.iter().filter_map(|c| self.cgroup_endpoint(*c)))
            .filter(|c| c.ep_id == ep_id)
            .map(|c| c.generation)
            .chain(written)
            .max()
            .unwrap_or(0);
        let generation = self.generations().take_next();
        let t = tables(generation);
        let mut rows = Vec::with_capacity(t.rows.len());
        for (prefix_len, key, value) in &t.rows {
            self.put_policy(*prefix_len, *key, *value)?;
            rows.push((*prefix_len, *key));
        }
        let info = EndpointInfo {
            ep_id,
            identity,
            generation,
            flags: t.flags,
        };
        for ip in ips {
            self.put_endpoint(*ip, info)?;
        }
        for cg in cgroups {
            self.set_cgroup_endpoint(
                *cg,
                EndpointInfo {
                    flags: info.flags | EP_HOST_NETWORK,
                    ..info
                },
            )?;
        }
        let previous = self
            .generations()
            .written
            .insert(ep_id, Written { generation, rows });
        if let Some(old) = previous {
            remove_rows(self, &old.rows);
        } else if live > 0 {
            // A generation this agent did not write: an earlier agent's, whose rows only a walk
            // of the whole table finds. A new endpoint has none, and skips the walk.
            remove_stale_rows(self, ep_id, generation);
        }
        Ok(info)
    }

    /// Removes what an earlier agent left and this one does not want: endpoint addresses not in
    /// `ips`, and policy rows that are not the live generation (`live`: by endpoint ID) of a live
    /// endpoint.
    fn retain(&mut self, ips: &[IpAddr], live: &HashMap<u32, u32>) -> Result<usize> {
        let stale_eps: Vec<IpAddr> = self
            .endpoints()
            .into_iter()
            .map(|(ip, _)| ip)
            .filter(|ip| !ips.contains(ip))
            .collect();
        for ip in &stale_eps {
            self.delete_endpoint(*ip);
        }
        let stale_rows: Vec<(u32, PolicyKey)> = self
            .policy_keys()
            .into_iter()
            .filter(|(_, k)| live.get(&k.ep_id) != Some(&view_generation(k)))
            .collect();
        remove_rows(self, &stale_rows);
        Ok(stale_eps.len() + stale_rows.len())
    }

    /// Forgets an endpoint: its addresses, then its rows.
    fn remove_endpoint(&mut self, ips: &[IpAddr], ep_id: u32) -> Result<()> {
        self.remove_endpoint_at(ips, &[], ep_id)
    }

    /// `remove_endpoint`, also for the endpoint's cgroups.
    fn remove_endpoint_at(&mut self, ips: &[IpAddr], cgroups: &[u64], ep_id: u32) -> Result<()> {
        self.release_cgroups(cgroups, ep_id)?;
        self.release_addresses(ips, ep_id);
        match self.generations().written.remove(&ep_id) {
            Some(w) => remove_rows(self, &w.rows),
            None => remove_stale_rows(self, ep_id, u32::MAX),
        }
        Ok(())
    }

    /// Forgets cgroups an endpoint no longer has, where they are still its own.
    fn release_cgroups(&mut self, cgroups: &[u64], ep_id: u32) -> Result<()> {
        for cg in cgroups {
            if self.cgroup_endpoint(*cg).is_some_and(|c| c.ep_id == ep_id) {
                self.remove_cgroup_endpoint(*cg)?;
            }
        }
        Ok(())
    }

    /// Forgets addresses an endpoint no longer has, where they are still its own (another
    /// endpoint may have taken one over); its policy rows stay.
    fn release_addresses(&mut self, ips: &[IpAddr], ep_id: u32) {
        for ip in ips {
            if self.endpoint(*ip).is_some_and(|c| c.ep_id == ep_id) {
                self.delete_endpoint(*ip);
            }
        }
    }
}

fn remove_rows(tables: &mut (impl MapWriter + ?Sized), rows: &[(u32, PolicyKey)]) {
    for (prefix_len, key) in rows {
        tables.delete_policy(*prefix_len, *key);
    }
}

/// Rows of this endpoint left by an earlier agent (their generation is not the live one).
fn remove_stale_rows(tables: &mut (impl MapWriter + ?Sized), ep_id: u32, live: u32) {
    let stale: Vec<(u32, PolicyKey)> = tables
        .policy_keys()
        .into_iter()
        .filter(|(_, k)| k.ep_id == ep_id && view_generation(k) != live)
        .collect();
    remove_rows(tables, &stale);
}

/// The generation a row belongs to, for either view: the full view's rows carry the audit bit.
fn view_generation(k: &PolicyKey) -> u32 {
    k.generation & !AUDIT_VIEW_GENERATION
}
