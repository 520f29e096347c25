//! The host's cgroup v2 hierarchy: where it is mounted, a directory's cgroup id (the number
//! `bpf_get_current_cgroup_id()` gives a program), a process's cgroup, and a walk that maps ids
//! to paths, so an id from the kernel can be named.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// statfs(2)'s f_type for cgroup v2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

use crate::tree::{CgroupTree, MAX_DEPTH};

fn is_cgroup2(path: &Path) -> io::Result<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    // SAFETY: `c` is a valid C string and `st` a statfs buffer for the call to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // f_type's width differs between targets.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok(i64::from(st.f_type as i64) == CGROUP2_SUPER_MAGIC)
}

/// The cgroup v2 mount: `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid
/// ones. An error says neither is cgroup v2.
pub fn default_root() -> io::Result<PathBuf> {
    for p in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if is_cgroup2(Path::new(p)).unwrap_or(false) {
            return Ok(PathBuf::from(p));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified (give --cgroup-root)",
    ))
}

/// The root of the host's cgroup v2 tree: [`default_root`], if it is the hierarchy's root
/// (inode 1). In a container with a private cgroup namespace the mount shows only the
/// container's own subtree, and hooks attached there would see only the container's sockets.
pub fn host_root() -> io::Result<PathBuf> {
    let root = default_root()?;
    match cgroup_id(&root)? {
        1 => Ok(root),
        id => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} is a cgroup namespace's subtree (cgroup id {id}), not the host's cgroup v2 root: mount the host's /sys/fs/cgroup there (a hostPath volume) or give --cgroup-root",
                root.display()
            ),
        )),
    }
}

/// Checks that `root` is a cgroup v2 mount.
pub fn check_root(root: &Path) -> io::Result<()> {
    if is_cgroup2(root)? {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a cgroup v2 hierarchy", root.display()),
        ))
    }
}

/// A cgroup directory's id: its inode number on the cgroup v2 filesystem.
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}

/// The cgroup v2 path of process `pid` (relative to the mount, `/…`), from /proc; None when the
/// process is in no v2 cgroup (a v1-only controller setup).
pub fn process_cgroup(pid: u32) -> io::Result<Option<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned))
}

/// Every cgroup below `root` (and `root` itself, as `/`): its id and its path relative to
/// `root`. Directories that vanish during the walk are skipped: containers come and go.
pub fn walk(root: &Path) -> io::Result<Vec<(u64, String)>> {
    let mut out = vec![(cgroup_id(root)?, "/".to_owned())];
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        if depth >= MAX_DEPTH {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_dir() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let child = format!("{rel}/{name}");
            out.push((meta.ino(), child.clone()));
            stack.push((e.path(), child, depth + 1));
        }
    }
    Ok(out)
}

/// The host's cgroup v2 hierarchy, read through the filesystem and /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

impl CgroupTree for Host {
    fn id(&self, dir: &Path) -> io::Result<u64> {
        cgroup_id(dir)
    }

    fn subtree(&self, dir: &Path, limit: usize) -> io::Result<Vec<(u64, PathBuf)>> {
        let mut out = vec![(cgroup_id(dir)?, dir.to_path_buf())];
        let mut stack = vec![(dir.to_path_buf(), 0usize)];
        while let Some((d, depth)) = stack.pop() {
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                if out.len() >= limit {
                    return Ok(out);
                }
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_dir() {
                    out.push((meta.ino(), e.path()));
                    stack.push((e.path(), depth + 1));
                }
            }
        }
        Ok(out)
    }

    fn procs(&self, dir: &Path) -> io::Result<Vec<u32>> {
        Ok(std::fs::read_to_string(dir.join("cgroup.procs"))?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    fn comm(&self, pid: u32) -> io::Result<String> {
        Ok(std::fs::read_to_string(format!("/proc/{pid}/comm"))?
            .trim_end_matches('\n')
            .to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_in_the_hierarchy() {
        let root = match default_root() {
            Ok(r) => r,
            Err(e) => {
                imdsguard_netns::skip_test(env!("CARGO_CRATE_NAME"), &e.to_string());
                return;
            }
        };
        check_root(&root).expect("the default root is cgroup v2");
        // The host's root has id 1; a cgroup namespace's view is refused, saying so.
        match host_root() {
            Ok(r) => assert_eq!(cgroup_id(&r).expect("id"), 1),
            Err(e) => assert!(
                e.to_string().contains("not the host's cgroup v2 root"),
                "{e}"
            ),
        }
        let own = process_cgroup(std::process::id())
            .expect("/proc/self/cgroup")
            .expect("a v2 cgroup");
        let dir = root.join(own.trim_start_matches('/'));
        let id = cgroup_id(&dir).expect("our cgroup's id");
        let all = walk(&root).expect("walk");
        assert!(
            all.iter().any(|(i, p)| *i == id && *p == own),
            "{own} (id {id}) not among {} cgroups",
            all.len()
        );
        assert_eq!(all[0].1, "/");
        // The same through the trait, with absolute paths, and this process among its cgroup's.
        let sub = Host.subtree(&dir, 10).expect("subtree");
        assert_eq!(sub[0], (id, dir.clone()));
        assert!(
            Host.procs(&dir)
                .expect("procs")
                .contains(&std::process::id())
        );
        let comm = Host.comm(std::process::id()).expect("comm");
        assert!(!comm.is_empty() && !comm.ends_with('\n'), "{comm:?}");
    }

    #[test]
    fn a_directory_that_is_not_cgroup_v2_is_refused() {
        let err = check_root(Path::new("/proc")).expect_err("procfs is not cgroup v2");
        assert!(err.to_string().contains("not a cgroup v2"), "{err}");
    }
}
