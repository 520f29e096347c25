//! Where programs sit in an interface's TCX chain, read with `BPF_PROG_QUERY` (TCX links are
//! invisible to `tc filter show`), and interface indexes.

use super::{Attachment, DatapathError, Result};
use aya::programs::TcAttachType;
use aya::programs::links::{FdLink, PinnedLink};
use std::path::Path;

/// Where our program `name` (kernel ID `ours`) sits in `ifname`'s TCX chain for `direction`.
pub(super) fn attachment(
    ifname: &str,
    name: &'static str,
    direction: TcAttachType,
    ours: u32,
) -> Result<Attachment> {
    let chain = tcx_chain(ifname, direction).map_err(|e| DatapathError::Interface {
        ifname: ifname.to_owned(),
        message: format!("querying the TCX chain: {e}"),
    })?;
    Ok(Attachment {
        ifname: ifname.to_owned(),
        program: name,
        position: chain.iter().position(|id| *id == ours),
        chain_len: chain.len(),
    })
}

/// `BPF_PROG_QUERY`'s part of `union bpf_attr` (linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct ProgQuery {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// The index of interface `ifname`, if it exists.
pub fn ifindex(ifname: &str) -> Option<u32> {
    let name = std::ffi::CString::new(ifname).ok()?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The program IDs of a TCX chain, first first. aya's `query_tcx` opens every program by ID,
/// which needs CAP_SYS_ADMIN; the IDs alone need only CAP_NET_ADMIN, so the agent runs without
/// SYS_ADMIN.
fn tcx_chain(ifname: &str, direction: TcAttachType) -> std::io::Result<Vec<u32>> {
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_TCX_INGRESS: u32 = 46;
    const BPF_TCX_EGRESS: u32 = 47;
    let ifindex = ifindex(ifname).ok_or_else(std::io::Error::last_os_error)?;
    let attach_type = match direction {
        TcAttachType::Ingress => BPF_TCX_INGRESS,
        _ => BPF_TCX_EGRESS,
    };
    let mut ids = vec![0u32; 64];
    loop {
        let mut attr = ProgQuery {
            target_ifindex: ifindex,
            attach_type,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        // SAFETY: `attr` is a valid BPF_PROG_QUERY attribute of the size given, and `prog_ids`
        // points at `prog_cnt` writable u32s that outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_QUERY,
                &mut attr as *mut ProgQuery,
                std::mem::size_of::<ProgQuery>(),
            )
        };
        let count = attr.prog_cnt as usize;
        if rc == 0 {
            ids.truncate(count);
            return Ok(ids);
        }
        let err = std::io::Error::last_os_error();
        // ENOSPC: more programs than room; the kernel said how many.
        if err.raw_os_error() == Some(libc::ENOSPC) && count > ids.len() {
            ids = vec![0; count];
            continue;
        }
        return Err(err);
    }
}

/// The program a pinned TCX link runs.
pub(super) fn pinned_program_id(pin: &Path) -> Option<u32> {
    let link = FdLink::from(PinnedLink::from_pin(pin).ok()?);
    link.info().ok().map(|i| i.program_id())
}
