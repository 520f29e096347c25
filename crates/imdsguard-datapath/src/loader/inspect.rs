//! The datapath as the kernel holds it, read from the pins, whether or not an agent runs
//! (`imdsguard status`).

use super::attach::{Attachment, PROGRAMS, escape_ifname, unescape_ifname};
use super::cgroup::{CgroupHook, pinned_hooks};
use super::events::{COUNTERS, sum_counters};
use super::maps::ipcache_net;
use super::tcx::{attachment, pinned_program_id};
use super::{Datapath, DatapathError, Result, map_err};
use crate::abi::{Addr, Config, EndpointInfo, IpcacheValue};
use aya::maps::{Array, HashMap as BpfHashMap, LpmTrie, MapData, PerCpuArray};
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The datapath as the kernel holds it, read from the pins: works whether or not an agent runs.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub pin_dir: PathBuf,
    pub endpoints: Vec<(IpAddr, EndpointInfo)>,
    pub ipcache: Vec<(IpNet, IpcacheValue)>,
    pub counters: Vec<(&'static str, u64)>,
    pub interfaces: Vec<InterfaceState>,
    /// `Config::flags` (`CFG_*`): e.g. redirects failing closed while the proxy's routing is
    /// shadowed, or denials answered (`CFG_DENY_REJECT`).
    pub config_flags: u32,
    /// The pinned connect()/sendmsg() hooks; empty when the agent runs without them.
    pub cgroup_hooks: Vec<CgroupHook>,
    /// hostNetwork pods by cgroup id.
    pub cgroup_endpoints: Vec<(u64, EndpointInfo)>,
    /// hostNetwork connections sent to the proxy that it has not accepted yet.
    pub hostnet_redirects: usize,
}

/// One pinned interface and where our programs sit in its TCX chains.
#[derive(Debug, Clone)]
pub struct InterfaceState {
    pub ifname: String,
    /// `None` when the interface no longer exists (a stale pin).
    pub chains: Option<Vec<Attachment>>,
}

/// Reads the pinned datapath under `bpf_root`.
pub fn inspect(bpf_root: &Path) -> Result<Inspection> {
    let dir = Datapath::pin_dir(bpf_root);
    let map = |name: &'static str| -> Result<MapData> {
        let path = dir.join("maps").join(name);
        MapData::from_pin(&path).map_err(|source| DatapathError::Map { name, source })
    };
    let endpoints: BpfHashMap<MapData, Addr, EndpointInfo> =
        BpfHashMap::try_from(aya::maps::Map::HashMap(map("endpoints")?))
            .map_err(map_err("endpoints"))?;
    let ipcache: LpmTrie<MapData, Addr, IpcacheValue> =
        LpmTrie::try_from(aya::maps::Map::LpmTrie(map("ipcache")?)).map_err(map_err("ipcache"))?;
    let counters: PerCpuArray<MapData, [u64; COUNTERS]> =
        PerCpuArray::try_from(aya::maps::Map::PerCpuArray(map("counters")?))
            .map_err(map_err("counters"))?;
    let mut endpoint_list: Vec<(IpAddr, EndpointInfo)> = endpoints
        .iter()
        .filter_map(|r| r.ok())
        .map(|(a, e)| (a.ip(), e))
        .collect();
    endpoint_list.sort_by_key(|(ip, e)| (e.ep_id, *ip));
    let ipcache_list = ipcache
        .iter()
        .filter_map(|r| r.ok())
        .filter_map(|(k, v)| Some((ipcache_net(&k)?, v)))
        .collect();
    let config_flags = map("config")
        .ok()
        .and_then(|m| Array::<MapData, Config>::try_from(aya::maps::Map::Array(m)).ok())
        .and_then(|a| a.get(&0, 0).ok())
        .map_or(0, |c| c.flags);
    let counter_list = counters
        .get(&0, 0)
        .map(|v| sum_counters(v.iter()))
        .unwrap_or_default();
    let links = dir.join("links");
    let mut interfaces = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&links) {
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| unescape_ifname(&e.file_name().to_string_lossy()))
            .collect();
        names.sort();
        for ifname in names {
            let exists = Path::new("/sys/class/net").join(&ifname).exists();
            let chains = exists.then(|| {
                PROGRAMS
                    .iter()
                    .map(|(program, direction)| {
                        // Another agent's programs: the ones its pinned links run.
                        let pin = links.join(escape_ifname(&ifname)).join(program);
                        pinned_program_id(&pin)
                            .map_or_else(
                                || {
                                    Ok(Attachment {
                                        ifname: ifname.clone(),
                                        program,
                                        position: None,
                                        chain_len: 0,
                                    })
                                },
                                |ours| attachment(&ifname, program, *direction, ours),
                            )
                            .unwrap_or(Attachment {
                                ifname: ifname.clone(),
                                program,
                                position: None,
                                chain_len: 0,
                            })
                    })
                    .collect()
            });
            interfaces.push(InterfaceState { ifname, chains });
        }
    }
    let cgroup_endpoints = map("cgroup_endpoints")
        .ok()
        .and_then(|m| {
            BpfHashMap::<MapData, u64, EndpointInfo>::try_from(aya::maps::Map::HashMap(m)).ok()
        })
        .map(|h| h.iter().filter_map(|r| r.ok()).collect())
        .unwrap_or_default();
    let hostnet_redirects = crate::hostnet::RedirectTable::open(bpf_root)
        .map(|t| t.entries().len())
        .unwrap_or(0);
    Ok(Inspection {
        hostnet_redirects,
        cgroup_hooks: pinned_hooks(&dir),
        cgroup_endpoints,
        pin_dir: dir,
        endpoints: endpoint_list,
        ipcache: ipcache_list,
        counters: counter_list,
        interfaces,
        config_flags,
    })
}
