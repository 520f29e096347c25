//! The tables on the pinned maps: the row operations of `MapWriter`, and the endpoint, ipcache and
//! config writes the agent makes through `Datapath`.

use super::{Datapath, Result, map_err};
use crate::abi::{
    Addr, CFG_PROXY_ROUTE_SHADOWED, EndpointInfo, IpcacheValue, PolicyKey, PolicyValue,
};
use crate::sync::{Generations, MapWriter};
use crate::tables::EndpointTables;
use aya::maps::MapError;
use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

impl MapWriter for Datapath {
    fn endpoints(&self) -> Vec<(IpAddr, EndpointInfo)> {
        self.endpoints
            .iter()
            .filter_map(|r| r.ok())
            .map(|(a, e)| (a.ip(), e))
            .collect()
    }

    fn endpoint(&self, ip: IpAddr) -> Option<EndpointInfo> {
        self.endpoints.get(&Addr::from(ip), 0).ok()
    }

    fn put_endpoint(&mut self, ip: IpAddr, info: EndpointInfo) -> Result<()> {
        self.endpoints
            .insert(Addr::from(ip), info, 0)
            .map_err(map_err("endpoints"))
    }

    fn delete_endpoint(&mut self, ip: IpAddr) {
        let _ = self.endpoints.remove(&Addr::from(ip));
    }

    fn ipcache_entries(&self) -> Vec<(IpNet, IpcacheValue)> {
        self.ipcache
            .iter()
            .filter_map(|r| r.ok())
            .filter_map(|(k, v)| Some((ipcache_net(&k)?, v)))
            .collect()
    }

    fn set_ipcache(&mut self, net: IpNet, identity: u32, flags: u32) -> Result<()> {
        self.ipcache
            .insert(&ipcache_key(net), IpcacheValue { identity, flags }, 0)
            .map_err(map_err("ipcache"))
    }

    fn remove_ipcache(&mut self, net: IpNet) -> Result<()> {
        match self.ipcache.remove(&ipcache_key(net)) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("ipcache")(e)),
        }
    }

    fn policy_keys(&self) -> Vec<(u32, PolicyKey)> {
        self.policy
            .keys()
            .filter_map(|k| k.ok())
            .map(|k| (k.prefix_len(), k.data()))
            .collect()
    }

    fn put_policy(&mut self, prefix_len: u32, key: PolicyKey, value: PolicyValue) -> Result<()> {
        self.policy
            .insert(&Key::new(prefix_len, key), value, 0)
            .map_err(map_err("policy"))
    }

    fn delete_policy(&mut self, prefix_len: u32, key: PolicyKey) {
        let _ = self.policy.remove(&Key::new(prefix_len, key));
    }

    fn bump_policy_epoch(&mut self) -> Result<u32> {
        let mut c = self.config.get(&0, 0).map_err(map_err("config"))?;
        c.policy_epoch = c.policy_epoch.wrapping_add(1);
        self.config.set(0, c, 0).map_err(map_err("config"))?;
        Ok(c.policy_epoch)
    }

    fn generations(&mut self) -> &mut Generations {
        &mut self.generations
    }

    fn cgroup_endpoints(&self) -> Vec<(u64, EndpointInfo)> {
        self.cgroup_endpoint_rows()
    }

    fn cgroup_endpoint(&self, cgroup_id: u64) -> Option<EndpointInfo> {
        self.cgroup_endpoints.get(&cgroup_id, 0).ok()
    }

    fn set_cgroup_endpoint(&mut self, cgroup_id: u64, info: EndpointInfo) -> Result<()> {
        self.cgroup_endpoints
            .insert(cgroup_id, info, 0)
            .map_err(map_err("cgroup_endpoints"))
    }

    fn remove_cgroup_endpoint(&mut self, cgroup_id: u64) -> Result<()> {
        match self.cgroup_endpoints.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("cgroup_endpoints")(e)),
        }
    }
}

/// The table protocol of `MapWriter`, callable without importing the trait.
impl Datapath {
    /// Registers an endpoint before its policy is known: it is fail-closed for metadata
    /// addresses until `apply_policy`.
    pub fn add_pending_endpoint(
        &mut self,
        ips: &[IpAddr],
        ep_id: u32,
        identity: u32,
    ) -> Result<()> {
        MapWriter::add_pending_endpoint(self, ips, ep_id, identity)
    }

    /// Switches an endpoint to a new policy atomically (`MapWriter::apply_policy`).
    pub fn apply_policy(
        &mut self,
        ips: &[IpAddr],
        ep_id: u32,
        identity: u32,
        tables: impl FnOnce(u32) -> EndpointTables,
    ) -> Result<u32> {
        MapWriter::apply_policy(self, ips, ep_id, identity, tables)
    }

    /// Removes what an earlier agent left and this one does not want (`MapWriter::retain`).
    pub fn retain(&mut self, ips: &[IpAddr], live: &HashMap<u32, u32>) -> Result<usize> {
        MapWriter::retain(self, ips, live)
    }

    /// Tells the datapath that the tables changed (`MapWriter::bump_policy_epoch`).
    pub fn bump_policy_epoch(&mut self) -> Result<u32> {
        MapWriter::bump_policy_epoch(self)
    }

    /// Forgets an endpoint: its addresses, then its rows.
    pub fn remove_endpoint(&mut self, ips: &[IpAddr], ep_id: u32) -> Result<()> {
        MapWriter::remove_endpoint(self, ips, ep_id)
    }

    /// Forgets addresses an endpoint no longer has, where they are still its own.
    pub fn release_addresses(&mut self, ips: &[IpAddr], ep_id: u32) {
        MapWriter::release_addresses(self, ips, ep_id)
    }

    /// Every endpoint entry, by address.
    pub fn endpoints(&self) -> Vec<(IpAddr, EndpointInfo)> {
        MapWriter::endpoints(self)
    }

    /// The endpoint entry for an address, as the datapath sees it.
    pub fn endpoint(&self, ip: IpAddr) -> Option<EndpointInfo> {
        MapWriter::endpoint(self, ip)
    }

    pub fn set_ipcache(&mut self, net: IpNet, identity: u32, flags: u32) -> Result<()> {
        MapWriter::set_ipcache(self, net, identity, flags)
    }

    pub fn remove_ipcache(&mut self, net: IpNet) -> Result<()> {
        MapWriter::remove_ipcache(self, net)
    }

    pub fn ipcache_entries(&self) -> Vec<(IpNet, IpcacheValue)> {
        MapWriter::ipcache_entries(self)
    }

    /// Every hostNetwork pod entry, by cgroup id.
    pub fn cgroup_endpoints(&self) -> Vec<(u64, EndpointInfo)> {
        MapWriter::cgroup_endpoints(self)
    }

    /// Says which endpoint a cgroup (and its descendants) belongs to, for the hooks.
    pub fn set_cgroup_endpoint(&mut self, cgroup_id: u64, info: EndpointInfo) -> Result<()> {
        MapWriter::set_cgroup_endpoint(self, cgroup_id, info)
    }

    pub fn remove_cgroup_endpoint(&mut self, cgroup_id: u64) -> Result<()> {
        MapWriter::remove_cgroup_endpoint(self, cgroup_id)
    }

    /// Marks the proxy's routing as shadowed (a rule ahead of ours would take redirected packets
    /// elsewhere): the datapath then drops what it would redirect. True when this changed it.
    pub fn set_proxy_route_shadowed(&mut self, shadowed: bool) -> Result<bool> {
        let mut c = self.config.get(&0, 0).map_err(map_err("config"))?;
        let flags = if shadowed {
            c.flags | CFG_PROXY_ROUTE_SHADOWED
        } else {
            c.flags & !CFG_PROXY_ROUTE_SHADOWED
        };
        if flags == c.flags {
            return Ok(false);
        }
        c.flags = flags;
        self.config.set(0, c, 0).map_err(map_err("config"))?;
        Ok(true)
    }
}

/// The inverse of `ipcache_key`.
pub(super) fn ipcache_net(k: &Key<Addr>) -> Option<IpNet> {
    let ip = k.data().ip();
    let len = match ip {
        IpAddr::V4(_) => k.prefix_len().checked_sub(96)?,
        IpAddr::V6(_) => k.prefix_len(),
    };
    IpNet::new(ip, u8::try_from(len).ok()?).ok()
}

fn ipcache_key(net: IpNet) -> Key<Addr> {
    let len = match net {
        IpNet::V4(n) => 96 + u32::from(n.prefix_len()),
        IpNet::V6(n) => u32::from(n.prefix_len()),
    };
    Key::new(len, Addr::from(net.network()))
}
