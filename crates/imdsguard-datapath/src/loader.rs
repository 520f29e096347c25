//! Loads the datapath, pins it, attaches it to pod interfaces and writes its tables.
//!
//! Everything lives under `<bpf-root>/imdsguard/v<LAYOUT_VERSION>/`: `maps/<name>` and
//! `links/<ifname>/<program>`. Pinned links keep enforcing while no agent runs; a new agent reuses
//! the pinned maps and swaps its programs into the pinned links atomically, so there is never a
//! moment without a program on an interface.

use crate::abi::{
    Addr, CFG_PROXY_ROUTE_SHADOWED, COUNTER_NAMES, Config, EndpointInfo, Event, IfaceInfo,
    IpcacheValue, LAYOUT_VERSION, PolicyKey, PolicyValue,
};
use crate::tables::EndpointTables;
use aya::maps::lpm_trie::Key;
use aya::maps::{
    Array, HashMap as BpfHashMap, LpmTrie, MapData, MapError, PerCpuArray, RingBuf, SockMap,
};
use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{ProgramError, SchedClassifier, SkLookup, TcAttachType};
use aya::{Ebpf, EbpfLoader, include_bytes_aligned};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::inspect::{Inspection, InterfaceState, inspect};
use crate::tcx::attachment;
pub use crate::tcx::ifindex;

static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/datapath.o"));

// SAFETY: each is #[repr(C)] plain data with explicit padding fields and no implicit holes (the
// sizes are asserted in `abi`), so any bit pattern is valid and none is uninitialised.
unsafe impl aya::Pod for Addr {}
unsafe impl aya::Pod for EndpointInfo {}
unsafe impl aya::Pod for IpcacheValue {}
unsafe impl aya::Pod for PolicyKey {}
unsafe impl aya::Pod for PolicyValue {}
unsafe impl aya::Pod for Config {}
unsafe impl aya::Pod for IfaceInfo {}

/// The programs, and where each attaches on the host side of a pod's veth.
pub const PROGRAMS: [(&str, TcAttachType); 2] = [
    ("from_pod", TcAttachType::Ingress),
    ("to_pod", TcAttachType::Egress),
];

const PINNED_MAPS: [&str; 10] = [
    "config",
    "endpoints",
    "ifaces",
    "frags",
    "ipcache",
    "policy",
    "ct",
    "drop_notified",
    "counters",
    "events",
];

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading the BPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// The Debug form carries the verifier log.
    #[error("program {name}: {source:?}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("interface {ifname}: {message}")]
    Interface { ifname: String, message: String },
    #[error("the BPF object has no {0}")]
    Missing(&'static str),
}

pub(crate) type Result<T, E = DatapathError> = std::result::Result<T, E>;

pub(crate) fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

fn prog_err(name: &'static str) -> impl FnOnce(ProgramError) -> DatapathError {
    move |source| DatapathError::Program { name, source }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DatapathError + '_ {
    move |source| DatapathError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The bpffs mount (Cilium's `--bpf-root`).
    pub bpf_root: PathBuf,
    /// The mark the proxy's routing rule selects (`ip rule fwmark`).
    pub proxy_mark: u32,
    /// At most one drop event per flow per interval; counters still count every packet.
    pub drop_notify_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bpf_root: PathBuf::from("/sys/fs/bpf"),
            proxy_mark: 0x200,
            drop_notify_interval: Duration::from_secs(1),
        }
    }
}

/// One program on one interface, as the kernel reports the TCX chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub ifname: String,
    pub program: &'static str,
    /// Our place in the chain (0 = first) and the chain's length.
    pub position: Option<usize>,
    pub chain_len: usize,
}

/// The table rows written for an endpoint, so the previous generation can be removed.
struct Written {
    generation: u32,
    rows: Vec<(u32, PolicyKey)>,
}

pub struct Datapath {
    bpf: Ebpf,
    dir: PathBuf,
    endpoints: BpfHashMap<MapData, Addr, EndpointInfo>,
    ifaces: BpfHashMap<MapData, u32, IfaceInfo>,
    ipcache: LpmTrie<MapData, Addr, IpcacheValue>,
    policy: LpmTrie<MapData, PolicyKey, PolicyValue>,
    counters: PerCpuArray<MapData, [u64; COUNTERS]>,
    config: Array<MapData, Config>,
    events: Option<RingBuf<MapData>>,
    written: HashMap<u32, Written>,
    /// The next policy generation. Generations are unique across all endpoints and agent
    /// restarts (the first is above any in the pinned tables), so an endpoint ID that passes to
    /// another pod can never select rows its previous owner left.
    next_generation: u32,
    proxy_listeners: SockMap<MapData>,
    time_wait_attached: bool,
}

impl Datapath {
    /// The pin directory for `bpf_root`.
    pub fn pin_dir(bpf_root: &Path) -> PathBuf {
        bpf_root
            .join("imdsguard")
            .join(format!("v{LAYOUT_VERSION}"))
    }

    /// Loads the programs, creating the pinned maps or reusing those a previous agent left.
    /// Mounts a BPF filesystem on `bpf_root` first if none is there (as Cilium's agent does).
    pub fn open(opts: &Options) -> Result<Datapath> {
        ensure_bpffs(&opts.bpf_root)?;
        let dir = Self::pin_dir(&opts.bpf_root);
        for sub in ["maps", "links"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let interval = u64::try_from(opts.drop_notify_interval.as_nanos()).unwrap_or(u64::MAX);
        let map_paths: Vec<(&str, PathBuf)> = PINNED_MAPS
            .iter()
            .map(|m| (*m, dir.join("maps").join(m)))
            .collect();
        let mut loader = EbpfLoader::new();
        loader
            .override_global("proxy_mark", &opts.proxy_mark, true)
            .override_global("drop_notify_interval_ns", &interval, true);
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;
        for (name, _) in PROGRAMS {
            classifier(&mut bpf, name)?.load().map_err(prog_err(name))?;
        }
        let endpoints: BpfHashMap<MapData, Addr, EndpointInfo> =
            BpfHashMap::try_from(take(&mut bpf, "endpoints")?).map_err(map_err("endpoints"))?;
        let ifaces = BpfHashMap::try_from(take(&mut bpf, "ifaces")?).map_err(map_err("ifaces"))?;
        let ipcache = LpmTrie::try_from(take(&mut bpf, "ipcache")?).map_err(map_err("ipcache"))?;
        let policy: LpmTrie<MapData, PolicyKey, PolicyValue> =
            LpmTrie::try_from(take(&mut bpf, "policy")?).map_err(map_err("policy"))?;
        let highest = endpoints
            .iter()
            .filter_map(|r| r.ok())
            .map(|(_, e)| e.generation)
            .chain(
                policy
                    .keys()
                    .filter_map(|k| k.ok())
                    .map(|k| k.data().generation),
            )
            .max()
            .unwrap_or(0);
        let counters =
            PerCpuArray::try_from(take(&mut bpf, "counters")?).map_err(map_err("counters"))?;
        let events = RingBuf::try_from(take(&mut bpf, "events")?).map_err(map_err("events"))?;
        let config = Array::try_from(take(&mut bpf, "config")?).map_err(map_err("config"))?;
        let proxy_listeners = SockMap::try_from(take(&mut bpf, "proxy_listeners")?)
            .map_err(map_err("proxy_listeners"))?;
        Ok(Datapath {
            bpf,
            dir,
            endpoints,
            ifaces,
            ipcache,
            policy,
            counters,
            config,
            events: Some(events),
            written: HashMap::new(),
            next_generation: highest.saturating_add(1),
            proxy_listeners,
            time_wait_attached: false,
        })
    }

    /// Hands the proxy's listeners to the datapath, so that a redirected SYN which meets the
    /// proxy's TIME_WAIT on its tuple (the proxy closes first, as a server does, and clients
    /// reuse ports) opens a new connection instead of being dropped: the socket-lookup program
    /// `proxy_time_wait` answers the kernel's TIME_WAIT recycling with the proxy's listener. It
    /// is attached to this process's network namespace for as long as this `Datapath` lives, and
    /// a listener leaves the map when it closes.
    pub fn set_proxy_listeners(
        &mut self,
        ipv4: Option<BorrowedFd<'_>>,
        ipv6: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        const NAME: &str = "proxy_time_wait";
        for (index, fd) in [(0u32, ipv4), (1, ipv6)] {
            match fd {
                Some(fd) => self
                    .proxy_listeners
                    .set(index, &fd, 0)
                    .map_err(map_err("proxy_listeners"))?,
                None => {
                    let _ = self.proxy_listeners.clear_index(&index);
                }
            }
        }
        if self.time_wait_attached {
            return Ok(());
        }
        let prog: &mut SkLookup = self
            .bpf
            .program_mut(NAME)
            .ok_or(DatapathError::Missing(NAME))?
            .try_into()
            .map_err(prog_err(NAME))?;
        prog.load().map_err(prog_err(NAME))?;
        let path = Path::new("/proc/self/ns/net");
        let netns = std::fs::File::open(path).map_err(io_err(path))?;
        prog.attach(&netns).map_err(prog_err(NAME))?;
        self.time_wait_attached = true;
        Ok(())
    }

    /// `links/<ifname>/<program>`. bpffs refuses dots in names (EPERM: reserved by the kernel),
    /// and interface names may have them (VLANs), so they are escaped.
    fn link_pin(&self, ifname: &str, program: &str) -> PathBuf {
        self.dir
            .join("links")
            .join(escape_ifname(ifname))
            .join(program)
    }

    /// Attaches both programs to `ifname`, first in its TCX chains, and pins the links. A link a
    /// previous agent pinned is adopted: our program replaces the old one in place.
    pub fn attach(&mut self, ifname: &str) -> Result<Vec<Attachment>> {
        for (name, direction) in PROGRAMS {
            let pin = self.link_pin(ifname, name);
            if let Some(parent) = pin.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            let prog = classifier(&mut self.bpf, name)?;
            let adopted = match PinnedLink::from_pin(&pin) {
                // The program keeps the links it attaches; taken back and dropped, the link
                // lives on through its pin alone, so `detach` (unpinning) really detaches.
                Ok(old) => SchedClassifierLink::try_from(FdLink::from(old))
                    .map_err(|e| e.to_string())
                    .and_then(|link| prog.attach_to_link(link).map_err(|e| e.to_string()))
                    .and_then(|id| prog.take_link(id).map_err(|e| e.to_string()))
                    .is_ok(),
                Err(_) => false,
            };
            if adopted {
                continue;
            }
            // A pin whose interface went away (or that cannot be updated) is stale.
            let _ = std::fs::remove_file(&pin);
            let id = prog
                .attach_with_options(
                    ifname,
                    direction,
                    TcAttachOptions::TcxOrder(LinkOrder::first()),
                )
                .map_err(|e| DatapathError::Interface {
                    ifname: ifname.to_owned(),
                    message: format!("attaching {name}: {e}"),
                })?;
            let link = prog.take_link(id).map_err(prog_err(name))?;
            let fd = FdLink::try_from(link).map_err(|e| DatapathError::Interface {
                ifname: ifname.to_owned(),
                message: format!("{name} is not a TCX link ({e}); TCX needs Linux 6.6 or later"),
            })?;
            fd.pin(&pin).map_err(|e| DatapathError::Interface {
                ifname: ifname.to_owned(),
                message: format!("pinning {}: {e:?}", pin.display()),
            })?;
        }
        let found = self.attachments(ifname)?;
        for a in &found {
            if a.position != Some(0) {
                return Err(DatapathError::Interface {
                    ifname: ifname.to_owned(),
                    message: format!(
                        "{} is at {:?} of {} in the TCX chain, not first: a program before it could pass traffic unjudged",
                        a.program, a.position, a.chain_len
                    ),
                });
            }
        }
        Ok(found)
    }

    /// Attaches to a pod's interface and says which pod is behind it: only then does the pod's
    /// policy apply to what it sends, and only its addresses may leave through the interface.
    pub fn attach_pod(&mut self, ifname: &str, info: IfaceInfo) -> Result<Vec<Attachment>> {
        let found = self.attach(ifname)?;
        let index = ifindex(ifname).ok_or_else(|| DatapathError::Interface {
            ifname: ifname.to_owned(),
            message: "no such interface".to_owned(),
        })?;
        self.set_interface(index, info)?;
        Ok(found)
    }

    /// Attaches the do-nothing `noop` program first on `ifname`, unpinned (it goes when this
    /// datapath is dropped): the floor for per-packet cost measurements.
    pub fn attach_noop(&mut self, ifname: &str) -> Result<()> {
        let prog = classifier(&mut self.bpf, "noop")?;
        if prog.fd().is_err() {
            prog.load().map_err(prog_err("noop"))?;
        }
        prog.attach_with_options(
            ifname,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        )
        .map_err(|e| DatapathError::Interface {
            ifname: ifname.to_owned(),
            message: format!("attaching noop: {e}"),
        })?;
        Ok(())
    }

    /// Run time and run count of each loaded program, counted while
    /// `aya::sys::enable_stats(Stats::RunTime)` is held (`kernel.bpf_stats_enabled`).
    pub fn program_stats(&self) -> Vec<(&'static str, Duration, u64)> {
        ["from_pod", "to_pod", "noop"]
            .into_iter()
            .filter_map(|name| {
                let info = self.bpf.program(name)?.info().ok()?;
                Some((name, info.run_time(), info.run_count()))
            })
            .collect()
    }

    /// Where our programs sit in `ifname`'s TCX chains (TCX links are invisible to `tc filter`).
    pub fn attachments(&self, ifname: &str) -> Result<Vec<Attachment>> {
        let mut out = Vec::new();
        for (name, direction) in PROGRAMS {
            let ours = self
                .bpf
                .program(name)
                .ok_or(DatapathError::Missing(name))?
                .info()
                .map_err(prog_err(name))?
                .id();
            out.push(attachment(ifname, name, direction, ours)?);
        }
        Ok(out)
    }

    /// Detaches from `ifname` by removing the pinned links.
    pub fn detach(&mut self, ifname: &str) -> Result<()> {
        for (name, _) in PROGRAMS {
            let pin = self.link_pin(ifname, name);
            if let Ok(link) = PinnedLink::from_pin(&pin) {
                // Unpinning drops the last reference: the kernel detaches the program.
                let _ = link.unpin();
            }
            let _ = std::fs::remove_file(&pin);
        }
        if let Some(dir) = self.link_pin(ifname, "x").parent() {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    /// Interfaces with pinned links (from this or an earlier agent).
    pub fn pinned_interfaces(&self) -> Result<Vec<String>> {
        let dir = self.dir.join("links");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok())
            .map(|e| unescape_ifname(&e.file_name().to_string_lossy()))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Registers an endpoint before its policy is known: it is fail-closed for metadata
    /// addresses until `apply_policy`.
    pub fn add_pending_endpoint(
        &mut self,
        ips: &[IpAddr],
        ep_id: u32,
        identity: u32,
    ) -> Result<()> {
        for ip in ips {
            let current = self.endpoints.get(&Addr::from(*ip), 0).ok();
            // Keep a policy already in force (an agent restart) rather than closing it again.
            if current.is_some_and(|c| c.ep_id == ep_id && c.identity == identity) {
                continue;
            }
            let info = EndpointInfo {
                ep_id,
                identity,
                generation: 0,
                flags: 0,
            };
            self.endpoints
                .insert(Addr::from(*ip), info, 0)
                .map_err(map_err("endpoints"))?;
        }
        Ok(())
    }

    /// Switches an endpoint to a new policy atomically: the new generation's rows are written
    /// first, then one write per address flips the endpoint to them, then the old rows go.
    pub fn apply_policy(
        &mut self,
        ips: &[IpAddr],
        ep_id: u32,
        identity: u32,
        tables: impl FnOnce(u32) -> EndpointTables,
    ) -> Result<u32> {
        let live = ips
            .iter()
            .filter_map(|ip| self.endpoints.get(&Addr::from(*ip), 0).ok())
            .filter(|c| c.ep_id == ep_id)
            .map(|c| c.generation)
            .chain(self.written.get(&ep_id).map(|w| w.generation))
            .max()
            .unwrap_or(0);
        let generation = self.next_generation;
        // 2^32 policy changes would be needed to wrap; start again at 1 rather than panic.
        self.next_generation = generation.checked_add(1).unwrap_or(1);
        let t = tables(generation);
        let mut rows = Vec::with_capacity(t.rows.len());
        for (prefixlen, key, value) in &t.rows {
            self.policy
                .insert(&Key::new(*prefixlen, *key), *value, 0)
                .map_err(map_err("policy"))?;
            rows.push((*prefixlen, *key));
        }
        let info = EndpointInfo {
            ep_id,
            identity,
            generation,
            flags: t.flags,
        };
        for ip in ips {
            self.endpoints
                .insert(Addr::from(*ip), info, 0)
                .map_err(map_err("endpoints"))?;
        }
        if let Some(old) = self.written.insert(ep_id, Written { generation, rows }) {
            self.remove_rows(&old.rows);
        } else if live > 0 {
            // A generation this agent did not write: an earlier agent's, whose rows only a walk
            // of the whole table finds. A new endpoint has none, and skips the walk.
            self.remove_stale_rows(ep_id, generation);
        }
        Ok(generation)
    }

    fn remove_rows(&mut self, rows: &[(u32, PolicyKey)]) {
        for (prefixlen, key) in rows {
            let _ = self.policy.remove(&Key::new(*prefixlen, *key));
        }
    }

    /// Rows of this endpoint left by an earlier agent (their generation is not the live one).
    fn remove_stale_rows(&mut self, ep_id: u32, live: u32) {
        let stale: Vec<(u32, PolicyKey)> = self
            .policy
            .keys()
            .filter_map(|k| k.ok())
            .map(|k| (k.prefix_len(), k.data()))
            .filter(|(_, k)| k.ep_id == ep_id && k.generation != live)
            .collect();
        self.remove_rows(&stale);
    }

    /// Removes what an earlier agent left and this one does not want: endpoint addresses not in
    /// `ips`, and policy rows that are not the live generation of a live endpoint.
    pub fn retain(&mut self, ips: &[IpAddr], live: &HashMap<u32, u32>) -> Result<usize> {
        let stale_eps: Vec<Addr> = self
            .endpoints
            .keys()
            .filter_map(|k| k.ok())
            .filter(|a| !ips.contains(&a.ip()))
            .collect();
        for a in &stale_eps {
            let _ = self.endpoints.remove(a);
        }
        let stale_rows: Vec<(u32, PolicyKey)> = self
            .policy
            .keys()
            .filter_map(|k| k.ok())
            .map(|k| (k.prefix_len(), k.data()))
            .filter(|(_, k)| live.get(&k.ep_id) != Some(&k.generation))
            .collect();
        self.remove_rows(&stale_rows);
        Ok(stale_eps.len() + stale_rows.len())
    }

    /// Tells the datapath that the tables changed: every connection is judged again on its next
    /// packet from the side that opened it, so a new deny also cuts existing connections.
    pub fn bump_policy_epoch(&mut self) -> Result<u32> {
        let mut c = self.config.get(&0, 0).map_err(map_err("config"))?;
        c.policy_epoch = c.policy_epoch.wrapping_add(1);
        self.config.set(0, c, 0).map_err(map_err("config"))?;
        Ok(c.policy_epoch)
    }

    /// Forgets an endpoint: its addresses, then its rows.
    pub fn remove_endpoint(&mut self, ips: &[IpAddr], ep_id: u32) -> Result<()> {
        self.release_addresses(ips, ep_id);
        match self.written.remove(&ep_id) {
            Some(w) => self.remove_rows(&w.rows),
            None => self.remove_stale_rows(ep_id, u32::MAX),
        }
        Ok(())
    }

    /// Forgets addresses an endpoint no longer has, where they are still its own (another
    /// endpoint may have taken one over); its policy rows stay.
    pub fn release_addresses(&mut self, ips: &[IpAddr], ep_id: u32) {
        for ip in ips {
            let addr = Addr::from(*ip);
            if self.endpoints.get(&addr, 0).is_ok_and(|c| c.ep_id == ep_id) {
                let _ = self.endpoints.remove(&addr);
            }
        }
    }

    /// Every endpoint entry, by address.
    pub fn endpoints(&self) -> Vec<(IpAddr, EndpointInfo)> {
        self.endpoints
            .iter()
            .filter_map(|r| r.ok())
            .map(|(a, e)| (a.ip(), e))
            .collect()
    }

    /// The endpoint entry for an address, as the datapath sees it.
    pub fn endpoint(&self, ip: IpAddr) -> Option<EndpointInfo> {
        self.endpoints.get(&Addr::from(ip), 0).ok()
    }

    /// Says which pod is behind the interface `ifindex`: only its addresses may leave through
    /// it, and only its policy applies to what passes.
    pub fn set_interface(&mut self, ifindex: u32, info: IfaceInfo) -> Result<()> {
        if self.ifaces.get(&ifindex, 0).ok() == Some(info) {
            return Ok(());
        }
        self.ifaces
            .insert(ifindex, info, 0)
            .map_err(map_err("ifaces"))
    }

    /// The interfaces with a known pod, by index.
    pub fn interfaces(&self) -> Vec<(u32, IfaceInfo)> {
        self.ifaces.iter().filter_map(|r| r.ok()).collect()
    }

    /// Forgets the pod behind each interface not in `keep` (gone, or now without a known pod).
    pub fn retain_interfaces(&mut self, keep: &[u32]) -> usize {
        let stale: Vec<u32> = self
            .ifaces
            .keys()
            .filter_map(|k| k.ok())
            .filter(|i| !keep.contains(i))
            .collect();
        for i in &stale {
            let _ = self.ifaces.remove(i);
        }
        stale.len()
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

    pub fn set_ipcache(&mut self, net: IpNet, identity: u32, flags: u32) -> Result<()> {
        self.ipcache
            .insert(&ipcache_key(net), IpcacheValue { identity, flags }, 0)
            .map_err(map_err("ipcache"))
    }

    pub fn remove_ipcache(&mut self, net: IpNet) -> Result<()> {
        match self.ipcache.remove(&ipcache_key(net)) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("ipcache")(e)),
        }
    }

    pub fn ipcache_entries(&self) -> Vec<(IpNet, IpcacheValue)> {
        self.ipcache
            .iter()
            .filter_map(|r| r.ok())
            .filter_map(|(k, v)| Some((ipcache_net(&k)?, v)))
            .collect()
    }

    /// The counters, summed over CPUs, named as `COUNTER_NAMES`.
    pub fn counters(&self) -> Result<Vec<(&'static str, u64)>> {
        let per_cpu = self.counters.get(&0, 0).map_err(map_err("counters"))?;
        Ok(sum_counters(per_cpu.iter()))
    }

    /// The event ring buffer, once: its reader polls it (events do not wake anyone).
    pub fn take_events(&mut self) -> Option<EventReader> {
        self.events.take().map(|ring| EventReader { ring })
    }
}

/// Reads datapath events. The programs submit without a wake-up, so call `drain` on a timer.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl EventReader {
    /// Hands every pending event to `f`; returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(Event)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            if let Some(e) = Event::decode(&item) {
                f(e);
                n += 1;
            }
        }
        n
    }
}

pub(crate) const COUNTERS: usize = COUNTER_NAMES.len();

/// Sums the per-CPU counter sets into named totals.
pub(crate) fn sum_counters<'a>(
    per_cpu: impl Iterator<Item = &'a [u64; COUNTERS]>,
) -> Vec<(&'static str, u64)> {
    let mut total = [0u64; COUNTERS];
    for set in per_cpu {
        for (t, v) in total.iter_mut().zip(set) {
            *t += v;
        }
    }
    COUNTER_NAMES.iter().copied().zip(total).collect()
}

pub(crate) fn escape_ifname(ifname: &str) -> String {
    ifname.replace('%', "%25").replace('.', "%2e")
}

pub(crate) fn unescape_ifname(name: &str) -> String {
    name.replace("%2e", ".").replace("%25", "%")
}

/// The inverse of `ipcache_key`.
pub(crate) fn ipcache_net(k: &Key<Addr>) -> Option<IpNet> {
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

fn classifier<'a>(bpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut SchedClassifier> {
    bpf.program_mut(name)
        .ok_or(DatapathError::Missing(name))?
        .try_into()
        .map_err(prog_err(name))
}

fn take(bpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map> {
    bpf.take_map(name).ok_or(DatapathError::Missing(name))
}

const BPF_FS_MAGIC: u32 = 0xcafe_4a11;

/// Makes sure `root` is a BPF filesystem, mounting one there if not; true when it mounted.
pub fn ensure_bpffs(root: &Path) -> Result<bool> {
    use std::os::unix::ffi::OsStrExt as _;
    std::fs::create_dir_all(root).map_err(io_err(root))?;
    let path =
        std::ffi::CString::new(root.as_os_str().as_bytes()).map_err(|_| DatapathError::Io {
            path: root.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
    // SAFETY: `path` is a valid C string and `st` a properly sized, writable statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return Err(io_err(root)(std::io::Error::last_os_error()));
    }
    if st.f_type as u32 == BPF_FS_MAGIC {
        return Ok(false);
    }
    // SAFETY: all pointers are valid C strings; no mount data is passed.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            path.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(DatapathError::Io {
            path: root.to_owned(),
            source: std::io::Error::new(
                e.kind(),
                format!(
                    "not a BPF filesystem, and mounting one failed ({e}); mount it with `mount -t bpf bpf {}`",
                    root.display()
                ),
            ),
        });
    }
    Ok(true)
}

/// Removes the whole pin tree: every pinned link (detaching the programs) and map.
pub fn unpin_all(bpf_root: &Path) -> std::io::Result<()> {
    let dir = Datapath::pin_dir(bpf_root);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Removes the pin trees of older layouts (`v1` … below ours): their links detach. Call it once
/// this layout is attached to every interface, so no interface is ever left without a program.
pub fn remove_older_layouts(bpf_root: &Path) -> Vec<PathBuf> {
    let base = bpf_root.join("imdsguard");
    let mut removed = Vec::new();
    for v in 1..LAYOUT_VERSION {
        let dir = base.join(format!("v{v}"));
        if dir.exists() && std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir);
        }
    }
    removed
}
