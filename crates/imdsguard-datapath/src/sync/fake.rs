//! The datapath's tables in memory, for tests that cannot load BPF (no root, no kernel support):
//! `TableSync` writes them through the same `MapWriter` protocol as the pinned maps, and every
//! write is logged in order, so a test can check what was written, when, and that nothing was.
//!
//! Limits: policy rows are keyed by their exact (prefix length, key), as `tables` writes them
//! (bits past the prefix are zero); nothing is judged, there are no programs, counters or events.

use super::writer::{Generations, MapWriter};
use crate::abi::{EndpointInfo, IpcacheValue, PolicyKey, PolicyValue};
use crate::loader::DatapathError;
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// One write to the tables, as `FakeMaps` logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    PutEndpoint(IpAddr, EndpointInfo),
    DeleteEndpoint(IpAddr),
    SetIpcache(IpNet, IpcacheValue),
    RemoveIpcache(IpNet),
    PutPolicy(u32, PolicyKey, PolicyValue),
    DeletePolicy(u32, PolicyKey),
    BumpPolicyEpoch,
    SetCgroupEndpoint(u64, EndpointInfo),
    RemoveCgroupEndpoint(u64),
}

/// The endpoint, ipcache and policy tables and the policy epoch, in memory.
#[derive(Debug, Clone, Default)]
pub struct FakeMaps {
    pub endpoints: BTreeMap<IpAddr, EndpointInfo>,
    pub ipcache: BTreeMap<IpNet, IpcacheValue>,
    pub policy: HashMap<(u32, PolicyKey), PolicyValue>,
    pub policy_epoch: u32,
    /// hostNetwork pods by cgroup id.
    pub cgroup_endpoints: BTreeMap<u64, EndpointInfo>,
    /// Every write since the last `take_writes`, in order; deletes of absent entries included,
    /// as the kernel would be asked for them too.
    pub writes: Vec<Write>,
    generations: Generations,
}

impl FakeMaps {
    /// Empty tables, as on a node where no agent ever ran.
    pub fn new() -> FakeMaps {
        FakeMaps::default()
    }

    /// The same tables as a new agent finds them pinned after a restart: the writer's own
    /// bookkeeping (what it wrote, its next generation) is gone, and the write log is empty.
    pub fn restarted(&self) -> FakeMaps {
        let mut maps = FakeMaps {
            endpoints: self.endpoints.clone(),
            ipcache: self.ipcache.clone(),
            policy: self.policy.clone(),
            policy_epoch: self.policy_epoch,
            cgroup_endpoints: self.cgroup_endpoints.clone(),
            writes: Vec::new(),
            generations: Generations::default(),
        };
        maps.generations = Generations::above(&maps);
        maps
    }

    /// The writes logged so far, clearing the log.
    pub fn take_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.writes)
    }

    /// The policy rows of one endpoint ID: (prefix length, key, value), in no particular order.
    pub fn policy_rows(&self, ep_id: u32) -> Vec<(u32, PolicyKey, PolicyValue)> {
        self.policy
            .iter()
            .filter(|((_, k), _)| k.ep_id == ep_id)
            .map(|((len, k), v)| (*len, *k, *v))
            .collect()
    }
}

impl MapWriter for FakeMaps {
    fn endpoints(&self) -> Vec<(IpAddr, EndpointInfo)> {
        self.endpoints.iter().map(|(ip, e)| (*ip, *e)).collect()
    }

    fn endpoint(&self, ip: IpAddr) -> Option<EndpointInfo> {
        self.endpoints.get(&ip).copied()
    }

    fn put_endpoint(&mut self, ip: IpAddr, info: EndpointInfo) -> Result<(), DatapathError> {
        self.writes.push(Write::PutEndpoint(ip, info));
        self.endpoints.insert(ip, info);
        Ok(())
    }

    fn delete_endpoint(&mut self, ip: IpAddr) {
        self.writes.push(Write::DeleteEndpoint(ip));
        self.endpoints.remove(&ip);
    }

    fn ipcache_entries(&self) -> Vec<(IpNet, IpcacheValue)> {
        self.ipcache.iter().map(|(n, v)| (*n, *v)).collect()
    }

    fn set_ipcache(&mut self, net: IpNet, identity: u32, flags: u32) -> Result<(), DatapathError> {
        let value = IpcacheValue { identity, flags };
        self.writes.push(Write::SetIpcache(net, value));
        // Keyed as the kernel's map keys it: a mapped prefix and its IPv4 form collide.
        self.ipcache
            .insert(crate::abi::canonical_prefix(&net), value);
        Ok(())
    }

    fn remove_ipcache(&mut self, net: IpNet) -> Result<(), DatapathError> {
        self.writes.push(Write::RemoveIpcache(net));
        self.ipcache.remove(&crate::abi::canonical_prefix(&net));
        Ok(())
    }

    fn policy_keys(&self) -> Vec<(u32, PolicyKey)> {
        self.policy.keys().copied().collect()
    }

    fn put_policy(
        &mut self,
        prefix_len: u32,
        key: PolicyKey,
        value: PolicyValue,
    ) -> Result<(), DatapathError> {
        self.writes.push(Write::PutPolicy(prefix_len, key, value));
        self.policy.insert((prefix_len, key), value);
        Ok(())
    }

    fn delete_policy(&mut self, prefix_len: u32, key: PolicyKey) {
        self.writes.push(Write::DeletePolicy(prefix_len, key));
        self.policy.remove(&(prefix_len, key));
    }

    fn bump_policy_epoch(&mut self) -> Result<u32, DatapathError> {
        self.writes.push(Write::BumpPolicyEpoch);
        self.policy_epoch = self.policy_epoch.wrapping_add(1);
        Ok(self.policy_epoch)
    }

    fn generations(&mut self) -> &mut Generations {
        &mut self.generations
    }

    fn cgroup_endpoints(&self) -> Vec<(u64, EndpointInfo)> {
        self.cgroup_endpoints
            .iter()
            .map(|(c, e)| (*c, *e))
            .collect()
    }

    fn set_cgroup_endpoint(
        &mut self,
        cgroup_id: u64,
        info: EndpointInfo,
    ) -> Result<(), DatapathError> {
        self.writes.push(Write::SetCgroupEndpoint(cgroup_id, info));
        self.cgroup_endpoints.insert(cgroup_id, info);
        Ok(())
    }

    fn remove_cgroup_endpoint(&mut self, cgroup_id: u64) -> Result<(), DatapathError> {
        self.writes.push(Write::RemoveCgroupEndpoint(cgroup_id));
        self.cgroup_endpoints.remove(&cgroup_id);
        Ok(())
    }
}
