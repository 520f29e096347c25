//! The cgroup hooks: `cgroup/connect4`, `connect6`, `sendmsg4` and `sendmsg6` (and the `sockops`
//! program that completes a hostNetwork pod's redirect to the proxy) at the host's cgroup v2 root,
//! as bpf_links pinned under `links/cgroup/<program>`. They record the process behind every socket
//! that connects or sends to a protected address (`sock_procs`, read at TC), and judge hostNetwork
//! pods, whose packets cross no pod interface (`cgroup_endpoints`).
//!
//! A restarted agent swaps its programs into the pinned links (`BPF_LINK_UPDATE`), so the hooks
//! never leave. aya 0.14 has no update for cgroup links, hence the raw `bpf(2)` calls, as in
//! `tcx.rs`.

use super::{Datapath, DatapathError, Result, io_err, map_err, prog_err};
use crate::DenyResponse;
use crate::abi::{CFG_DENY_REJECT, EndpointInfo};
use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr, ProgramError, SockOps};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The hook programs, in attach order. `hostnet_sockops` files a hostNetwork pod's connection
/// that the connect hooks sent to the proxy under its client port (`hostnet_redirects`).
pub const CGROUP_HOOKS: [&str; 5] = [
    "sock_connect4",
    "sock_connect6",
    "sock_sendmsg4",
    "sock_sendmsg6",
    SOCKOPS,
];

/// The one `SEC("sockops")` program among the hooks.
const SOCKOPS: &str = "hostnet_sockops";

/// The directory under `links/` that holds the hooks' pins. An interface of this name is pinned
/// under an escaped name (`attach::escape_ifname`).
pub(super) const CGROUP_LINK_DIR: &str = "cgroup";

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// One pinned hook, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupHook {
    pub program: String,
    /// The link's kernel id: the same across agent restarts (the link is updated in place).
    pub link_id: u32,
    /// The id (inode number) of the cgroup the link is attached to.
    pub cgroup_id: u64,
    /// The kernel's id of the program the link runs.
    pub program_id: u32,
}

impl Datapath {
    /// Answers policy denials with ECONNREFUSED / RST / ICMP (`Reject`) or drops them silently
    /// (`Drop`). Takes effect for the next packet and the next connect().
    pub fn set_deny_response(&mut self, response: DenyResponse) -> Result<()> {
        let mut c = self.config.get(&0, 0).map_err(map_err("config"))?;
        let flags = match response {
            DenyResponse::Reject => c.flags | CFG_DENY_REJECT,
            DenyResponse::Drop => c.flags & !CFG_DENY_REJECT,
        };
        if flags != c.flags {
            c.flags = flags;
            self.config.set(0, c, 0).map_err(map_err("config"))?;
        }
        Ok(())
    }

    /// The hooks this datapath attached: (program, cgroup). Empty without `cgroup_root`.
    pub fn cgroup_hooks(&self) -> Vec<(String, PathBuf)> {
        self.hooks.clone()
    }

    /// `links/cgroup/<program>`.
    fn hook_pin(&self, program: &str) -> PathBuf {
        self.dir.join("links").join(CGROUP_LINK_DIR).join(program)
    }

    /// Attaches the hooks at `root` (a cgroup v2 directory), or takes over the links an earlier
    /// agent pinned there: they then run this agent's programs, with no moment without a hook.
    pub(super) fn attach_cgroup_hooks(&mut self, root: &Path) -> Result<()> {
        let cgroup_id = check_cgroup2(root)?;
        let cgroup = std::fs::File::open(root).map_err(io_err(root))?;
        let dir = self.dir.join("links").join(CGROUP_LINK_DIR);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut hooks = Vec::new();
        for name in CGROUP_HOOKS {
            let pin = self.hook_pin(name);
            let prog_fd = hook_fd(&mut self.bpf, name)?;
            let updated = match open_pinned(&pin) {
                // A link at another cgroup (the root moved) is replaced, not updated.
                Ok(link) if link_cgroup(link.as_fd()) == Some(cgroup_id) => {
                    link_update(link.as_fd(), prog_fd.as_fd()).is_ok()
                }
                _ => false,
            };
            if !updated {
                // Attach the new link first, then put its pin over the old one: the old link
                // detaches only when the new one is in force (both run briefly, over the same
                // maps, which is harmless).
                let fd = hook_attach(&mut self.bpf, name, &cgroup, root)?;
                let tmp = dir.join(format!("{name}-new"));
                let _ = std::fs::remove_file(&tmp);
                fd.pin(&tmp)
                    .map_err(|e| cgroup_err(root, format!("pinning {}: {e:?}", tmp.display())))?;
                std::fs::rename(&tmp, &pin).map_err(io_err(&pin))?;
            }
            hooks.push((name.to_owned(), root.to_owned()));
        }
        self.hooks = hooks;
        Ok(())
    }
}

/// Removes the pinned hooks under `pin_dir` (they detach). True when there were any.
pub(super) fn unpin_cgroup_hooks(pin_dir: &Path) -> bool {
    let dir = pin_dir.join("links").join(CGROUP_LINK_DIR);
    let found = dir.exists();
    let _ = std::fs::remove_dir_all(&dir);
    found
}

/// The hooks pinned under `pin_dir`, as the kernel reports them.
pub(super) fn pinned_hooks(pin_dir: &Path) -> Vec<CgroupHook> {
    CGROUP_HOOKS
        .iter()
        .filter_map(|name| {
            let link = open_pinned(&pin_dir.join("links").join(CGROUP_LINK_DIR).join(name)).ok()?;
            let info = link_info(link.as_fd()).ok()?;
            Some(CgroupHook {
                program: (*name).to_owned(),
                link_id: info.id,
                cgroup_id: info.cgroup_id,
                program_id: info.prog_id,
            })
        })
        .collect()
}

fn hook_program<'a>(bpf: &'a mut aya::Ebpf, name: &'static str) -> Result<&'a mut CgroupSockAddr> {
    bpf.program_mut(name)
        .ok_or(DatapathError::Missing(name))?
        .try_into()
        .map_err(prog_err(name))
}

fn sockops_program(bpf: &mut aya::Ebpf) -> Result<&mut SockOps> {
    bpf.program_mut(SOCKOPS)
        .ok_or(DatapathError::Missing(SOCKOPS))?
        .try_into()
        .map_err(prog_err(SOCKOPS))
}

/// A hook program's fd, loading it first if need be.
fn hook_fd(bpf: &mut aya::Ebpf, name: &'static str) -> Result<OwnedFd> {
    let dup = |fd: BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map_err(|e| io_err(Path::new(name))(e))
    };
    if name == SOCKOPS {
        let prog = sockops_program(bpf)?;
        if prog.fd().is_err() {
            prog.load().map_err(prog_err(SOCKOPS))?;
        }
        return dup(prog.fd().map_err(prog_err(SOCKOPS))?.as_fd());
    }
    let prog = hook_program(bpf, name)?;
    if prog.fd().is_err() {
        prog.load().map_err(prog_err(name))?;
    }
    dup(prog.fd().map_err(prog_err(name))?.as_fd())
}

/// A new link of the (loaded) hook program `name` at `cgroup`.
fn hook_attach(
    bpf: &mut aya::Ebpf,
    name: &'static str,
    cgroup: &std::fs::File,
    root: &Path,
) -> Result<FdLink> {
    let attach_err = |e: ProgramError| cgroup_err(root, format!("attaching {name}: {e}"));
    let link_err = |e: aya::programs::links::LinkError| {
        cgroup_err(
            root,
            format!("{name} is not a bpf_link ({e}); cgroup links need Linux 5.7"),
        )
    };
    if name == SOCKOPS {
        let prog = sockops_program(bpf)?;
        let id = prog
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(attach_err)?;
        let link = prog.take_link(id).map_err(prog_err(name))?;
        return FdLink::try_from(link).map_err(link_err);
    }
    let prog = hook_program(bpf, name)?;
    let id = prog
        .attach(cgroup, CgroupAttachMode::Single)
        .map_err(attach_err)?;
    let link = prog.take_link(id).map_err(prog_err(name))?;
    FdLink::try_from(link).map_err(link_err)
}

fn cgroup_err(path: &Path, message: String) -> DatapathError {
    DatapathError::Cgroup {
        path: path.to_owned(),
        message,
    }
}

/// The id of `path` when it is a cgroup v2 directory, else an error that says what to pass.
pub fn check_cgroup2(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::MetadataExt as _;
    let hint = "pass the host's cgroup v2 mount (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a \
                hybrid host), or none to run without the cgroup hooks";
    let meta = std::fs::metadata(path)
        .map_err(|e| cgroup_err(path, format!("not a cgroup v2 directory ({e}); {hint}")))?;
    if !meta.is_dir() {
        return Err(cgroup_err(path, format!("not a directory; {hint}")));
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| cgroup_err(path, format!("not a valid path; {hint}")))?;
    // SAFETY: `c` is a valid C string and `st` a properly sized, writable statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(cgroup_err(path, format!("statfs: {e}; {hint}")));
    }
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between libcs
    if st.f_type as i64 != CGROUP2_SUPER_MAGIC {
        return Err(cgroup_err(
            path,
            format!(
                "not a cgroup v2 filesystem (type {:#x}; a cgroup v1 controller or a tmpfs?); {hint}",
                st.f_type
            ),
        ));
    }
    Ok(meta.ino())
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// `bpf(2)` with an attribute of type `T`.
fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is the attribute struct `cmd` expects, of the size given, and every pointer
    // it holds stays valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A pinned object's fd (`BPF_OBJ_GET`).
fn open_pinned(pin: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    #[repr(C)]
    #[derive(Default)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let c = std::ffi::CString::new(pin.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut attr = ObjGet {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    let fd = sys_bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_LINK_UPDATE`: the link runs `prog` from now on.
fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> std::io::Result<()> {
    #[repr(C)]
    #[derive(Default)]
    struct LinkUpdate {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    let mut attr = LinkUpdate {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    sys_bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// The parts of `struct bpf_link_info` read here: a cgroup link's target.
#[repr(C)]
#[derive(Default)]
struct LinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    _rest: [u32; 13],
}

fn link_info(link: BorrowedFd<'_>) -> std::io::Result<LinkInfo> {
    #[repr(C)]
    #[derive(Default)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = LinkInfo::default();
    let mut attr = InfoByFd {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: std::mem::size_of::<LinkInfo>() as u32,
        info: &mut info as *mut LinkInfo as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

/// The cgroup a cgroup link is attached to.
fn link_cgroup(link: BorrowedFd<'_>) -> Option<u64> {
    const BPF_LINK_TYPE_CGROUP: u32 = 3;
    let info = link_info(link).ok()?;
    (info.link_type == BPF_LINK_TYPE_CGROUP).then_some(info.cgroup_id)
}

/// The MapWriter rows of `cgroup_endpoints`.
impl Datapath {
    pub(super) fn cgroup_endpoint_rows(&self) -> Vec<(u64, EndpointInfo)> {
        self.cgroup_endpoints
            .iter()
            .filter_map(|r| r.ok())
            .collect()
    }
}
