//! Attaching: the programs on a pod's interface, first in its TCX chains and pinned; which pod is
//! behind each interface (the `ifaces` map); the proxy's TIME_WAIT socket lookup.

use super::cgroup::{CGROUP_HOOKS, CGROUP_LINK_DIR};
use super::tcx::{attachment, ifindex};
use super::{Datapath, DatapathError, Result, io_err, map_err, prog_err};
use crate::abi::IfaceInfo;
use aya::Ebpf;
use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{SchedClassifier, SkLookup, TcAttachType};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The programs, and where each attaches on the host side of a pod's veth.
pub const PROGRAMS: [(&str, TcAttachType); 2] = [
    ("from_pod", TcAttachType::Ingress),
    ("to_pod", TcAttachType::Egress),
];

/// One program on one interface, as the kernel reports the TCX chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub ifname: String,
    pub program: &'static str,
    /// Our place in the chain (0 = first) and the chain's length.
    pub position: Option<usize>,
    pub chain_len: usize,
}

impl Datapath {
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
            .chain(CGROUP_HOOKS)
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
            .filter_map(|e| unescape_ifname(&e.file_name().to_string_lossy()))
            .collect();
        names.sort();
        Ok(names)
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
}

/// An interface named like the hooks' directory (`links/cgroup`) is pinned as `%63group`.
pub(super) fn escape_ifname(ifname: &str) -> String {
    if ifname == CGROUP_LINK_DIR {
        return format!("%63{}", &CGROUP_LINK_DIR[1..]);
    }
    ifname.replace('%', "%25").replace('.', "%2e")
}

/// The interface a `links/` entry is for; `None` for the cgroup hooks' directory.
pub(super) fn unescape_ifname(name: &str) -> Option<String> {
    if name == CGROUP_LINK_DIR {
        return None;
    }
    if name == format!("%63{}", &CGROUP_LINK_DIR[1..]) {
        return Some(CGROUP_LINK_DIR.to_owned());
    }
    Some(name.replace("%2e", ".").replace("%25", "%"))
}

pub(super) fn classifier<'a>(
    bpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier> {
    bpf.program_mut(name)
        .ok_or(DatapathError::Missing(name))?
        .try_into()
        .map_err(prog_err(name))
}
