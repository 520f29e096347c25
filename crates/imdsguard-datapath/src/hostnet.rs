//! hostNetwork pods' connections to the L7 proxy. The connect hooks send a hostNetwork pod's TCP
//! connect() to a metadata address whose policy has HTTP rules to the proxy on loopback, and the
//! `sockops` program files the original destination and the calling process under the client's
//! port (`hostnet_redirects`, bpf/hooks.h). The proxy takes the entry when it accepts: the
//! connection's peer port names it. Read from the pinned map, so the proxy's tasks need no lock
//! on the `Datapath`.

use crate::abi::{HostnetKey, HostnetValue};
use crate::loader::{Datapath, DatapathError};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;

/// The pinned map's name under `maps/`.
pub const MAP: &str = "hostnet_redirects";

/// How old an entry may be when the proxy accepts its connection. The proxy accepts within
/// microseconds of the SYN; an older entry is one whose SYN never arrived (the proxy was down, or
/// the connect was abandoned), and a later loopback connection that happened to get the same port
/// must not inherit the pod, and the policy, it names.
pub const MAX_AGE_NS: u64 = 5_000_000_000;

/// Whether an entry filed at `created_ns` may still be taken at `now_ns` (both CLOCK_MONOTONIC).
pub fn fresh(created_ns: u64, now_ns: u64) -> bool {
    now_ns.saturating_sub(created_ns) <= MAX_AGE_NS
}

/// CLOCK_MONOTONIC now, as the datapath's `bpf_ktime_get_ns` counts.
// time_t is not i64 on every target.
#[allow(clippy::useless_conversion)]
fn monotonic_ns() -> u64 {
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(i64::from(ts.tv_sec)).unwrap_or(0) * 1_000_000_000
        + u64::try_from(i64::from(ts.tv_nsec)).unwrap_or(0)
}

/// One redirected connection: where it was going and who opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostnetRedirect {
    /// The original destination (a metadata address and port).
    pub destination: SocketAddr,
    /// The hostNetwork pod's endpoint ID.
    pub ep_id: u32,
    /// tgid in the host's pid namespace; 0 when unknown.
    pub pid: u32,
    pub uid: u32,
    pub comm: String,
    /// The cgroup v2 id of the calling task.
    pub cgroup_id: u64,
    /// The client socket's cookie.
    pub cookie: u64,
}

impl From<HostnetValue> for HostnetRedirect {
    fn from(v: HostnetValue) -> HostnetRedirect {
        HostnetRedirect {
            destination: SocketAddr::new(v.daddr.ip(), v.dport),
            ep_id: v.ep_id,
            pid: v.pid,
            uid: v.uid,
            comm: v.comm(),
            cgroup_id: v.cgroup_id,
            cookie: v.cookie,
        }
    }
}

/// `hostnet_redirects`, opened from its pin.
pub struct RedirectTable {
    map: Mutex<BpfHashMap<MapData, HostnetKey, HostnetValue>>,
}

impl RedirectTable {
    /// Opens the map the datapath under `bpf_root` pinned (it exists once `Datapath::open` ran).
    pub fn open(bpf_root: &Path) -> Result<RedirectTable, DatapathError> {
        let path = Datapath::pin_dir(bpf_root).join("maps").join(MAP);
        let err = |source| DatapathError::Map { name: MAP, source };
        let data = MapData::from_pin(&path).map_err(err)?;
        let map = BpfHashMap::try_from(Map::LruHashMap(data)).map_err(err)?;
        Ok(RedirectTable {
            map: Mutex::new(map),
        })
    }

    /// The entry of the connection whose client is on loopback port `local_port` (IPv6 when
    /// `v6`), removed from the table: each connection is taken once. An entry older than
    /// [`MAX_AGE_NS`] is removed and not returned.
    pub fn take(&self, local_port: u16, v6: bool) -> Option<HostnetRedirect> {
        let key = HostnetKey {
            ipver: if v6 { 6 } else { 4 },
            port: local_port,
            pad: 0,
        };
        let mut map = self.map.lock().ok()?;
        let value = map.get(&key, 0).ok()?;
        let _ = map.remove(&key);
        fresh(value.created_ns, monotonic_ns()).then(|| value.into())
    }

    /// The entries not taken yet (for tests and status): (v6, client port, entry).
    pub fn entries(&self) -> Vec<(bool, u16, HostnetRedirect)> {
        let Ok(map) = self.map.lock() else {
            return Vec::new();
        };
        map.iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (k.ipver == 6, k.port, v.into()))
            .collect()
    }
}

/// Whether `peer` is a client the redirect table may name: on loopback.
pub fn is_loopback(peer: IpAddr) -> bool {
    match peer {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_older_than_a_syn_could_be_is_not_taken() {
        let now = 100 * 1_000_000_000;
        assert!(fresh(now, now));
        assert!(fresh(now - MAX_AGE_NS, now));
        assert!(!fresh(now - MAX_AGE_NS - 1, now));
        // A clock read before the entry was filed (another CPU) is not "old".
        assert!(fresh(now + 1_000, now));
        assert!(monotonic_ns() > 0);
    }
}
