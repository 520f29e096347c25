//! Loads the datapath, pins it, attaches it to pod interfaces and writes its tables.
//!
//! Everything lives under `<bpf-root>/imdsguard/v<LAYOUT_VERSION>/`: `maps/<name>`,
//! `links/<ifname>/<program>` and `links/cgroup/<program>` (the cgroup hooks). Pinned links keep enforcing while no agent runs; a new agent reuses
//! the pinned maps and swaps its programs into the pinned links atomically, so there is never a
//! moment without a program on an interface.
//!
//! `attach`: programs on interfaces and the pod behind each; `cgroup`: the connect()/sendmsg()
//! hooks; `maps`: the tables (the row
//! operations of `sync::MapWriter`); `events`: events and counters; `tcx`: where programs sit in a
//! chain; `inspect`: the pinned state read without an agent.

mod attach;
mod cgroup;
mod events;
mod inspect;
mod maps;
mod tcx;

pub use attach::{Attachment, PROGRAMS};
pub use cgroup::{CGROUP_HOOKS, CgroupHook, check_cgroup2};
pub use events::EventReader;
pub use inspect::{Inspection, InterfaceState, inspect};
pub use tcx::ifindex;

use events::COUNTERS;

use crate::DenyResponse;
use crate::abi::{
    Addr, Config, EndpointInfo, HostnetKey, HostnetValue, IfaceInfo, IpcacheValue, LAYOUT_VERSION,
    PolicyKey, PolicyValue,
};
use crate::sync::Generations;
use aya::maps::{
    Array, HashMap as BpfHashMap, LpmTrie, MapData, MapError, PerCpuArray, RingBuf, SockMap,
};
use aya::programs::ProgramError;
use aya::{Ebpf, EbpfLoader, include_bytes_aligned};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
unsafe impl aya::Pod for HostnetKey {}
unsafe impl aya::Pod for HostnetValue {}
const PINNED_MAPS: [&str; 14] = [
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
    "sock_procs",
    "cgroup_endpoints",
    "hostnet_socks",
    "hostnet_redirects",
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
    #[error("cgroup {}: {message}", path.display())]
    Cgroup { path: PathBuf, message: String },
    #[error("the BPF object has no {0}")]
    Missing(&'static str),
}

type Result<T, E = DatapathError> = std::result::Result<T, E>;

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DatapathError {
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
    /// Where to attach the connect()/sendmsg() hooks (process attribution, hostNetwork pods):
    /// a cgroup v2 directory, normally the host's root. `None`: no hooks, and any pinned by an
    /// earlier agent are removed.
    pub cgroup_root: Option<PathBuf>,
    /// How policy denials are answered.
    pub deny_response: DenyResponse,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bpf_root: PathBuf::from("/sys/fs/bpf"),
            proxy_mark: 0x200,
            drop_notify_interval: Duration::from_secs(1),
            cgroup_root: None,
            deny_response: DenyResponse::Drop,
        }
    }
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
    generations: Generations,
    proxy_listeners: SockMap<MapData>,
    time_wait_attached: bool,
    cgroup_endpoints: BpfHashMap<MapData, u64, EndpointInfo>,
    /// The cgroup hooks attached: (program, cgroup).
    hooks: Vec<(String, PathBuf)>,
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
            attach::classifier(&mut bpf, name)?
                .load()
                .map_err(prog_err(name))?;
        }
        let endpoints: BpfHashMap<MapData, Addr, EndpointInfo> =
            BpfHashMap::try_from(take(&mut bpf, "endpoints")?).map_err(map_err("endpoints"))?;
        let ifaces = BpfHashMap::try_from(take(&mut bpf, "ifaces")?).map_err(map_err("ifaces"))?;
        let ipcache = LpmTrie::try_from(take(&mut bpf, "ipcache")?).map_err(map_err("ipcache"))?;
        let policy: LpmTrie<MapData, PolicyKey, PolicyValue> =
            LpmTrie::try_from(take(&mut bpf, "policy")?).map_err(map_err("policy"))?;
        let counters =
            PerCpuArray::try_from(take(&mut bpf, "counters")?).map_err(map_err("counters"))?;
        let events = RingBuf::try_from(take(&mut bpf, "events")?).map_err(map_err("events"))?;
        let config = Array::try_from(take(&mut bpf, "config")?).map_err(map_err("config"))?;
        let proxy_listeners = SockMap::try_from(take(&mut bpf, "proxy_listeners")?)
            .map_err(map_err("proxy_listeners"))?;
        let cgroup_endpoints = BpfHashMap::try_from(take(&mut bpf, "cgroup_endpoints")?)
            .map_err(map_err("cgroup_endpoints"))?;
        let mut dp = Datapath {
            bpf,
            dir,
            endpoints,
            ifaces,
            ipcache,
            policy,
            counters,
            config,
            events: Some(events),
            generations: Generations::default(),
            proxy_listeners,
            time_wait_attached: false,
            cgroup_endpoints,
            hooks: Vec::new(),
        };
        // Reused pinned tables may hold an earlier agent's generations.
        dp.generations = Generations::above(&dp);
        dp.set_deny_response(opts.deny_response)?;
        match &opts.cgroup_root {
            Some(root) => dp.attach_cgroup_hooks(root)?,
            None => {
                cgroup::unpin_cgroup_hooks(&dp.dir);
            }
        }
        Ok(dp)
    }
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
