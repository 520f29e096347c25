//! The host's cgroup v2 hierarchy: where it is mounted, a directory's cgroup id (the number
//! `bpf_get_current_cgroup_id()` gives a program), a process's cgroup, and a walk that maps ids
//! to paths, so an id from the kernel can be named.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// statfs(2)'s f_type for cgroup v2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Directories deeper than this below the root are not walked: Kubernetes nests about six levels
/// (kubepods, QoS, pod, container, and a container's own few).
const MAX_DEPTH: usize = 12;

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
    }

    #[test]
    fn a_directory_that_is_not_cgroup_v2_is_refused() {
        let err = check_root(Path::new("/proc")).expect_err("procfs is not cgroup v2");
        assert!(err.to_string().contains("not a cgroup v2"), "{err}");
    }
}
