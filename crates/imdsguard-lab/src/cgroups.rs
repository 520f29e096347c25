//! The lab's cgroup v2 subtree, `<v2 root>/imdsguard-lab-<name>-<id>/<pod>/<container>` (and
//! `_node` for the node's own processes, a name no Kubernetes pod can have): the agent's hooks
//! attach at the subtree (`--cgroup-root`), so they see the lab's processes and no others.
//!
//! A process joins its cgroup between fork and exec, before `ip netns exec`, which remounts /sys
//! inside the namespace. Teardown ends every process in the subtree (all of them were started by
//! the lab, or by `lab exec`, or descend from those) and removes the directories bottom-up.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The directory of the node's processes that belong to no pod.
pub const NODE_DIR: &str = "_node";

/// The host's cgroup v2 mount, when there is one (the lab runs without cgroups otherwise).
pub fn v2_root() -> Option<PathBuf> {
    imdsguard_cgroup::host::default_root().ok()
}

/// Makes `cmd`'s process join `cgroup` before it executes anything: it writes `0` (the writer
/// itself) to the cgroup's `cgroup.procs` from the forked child.
pub fn join(cmd: &mut Command, cgroup: &Path) -> io::Result<()> {
    let procs = cgroup.join("cgroup.procs");
    // std opens with O_CLOEXEC: the program the child runs does not inherit it.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", procs.display())))?;
    // SAFETY: the closure runs in the child between fork and exec and calls only write(2), which
    // is async-signal-safe, on a descriptor the closure owns; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let n = libc::write(file.as_raw_fd(), b"0".as_ptr().cast(), 1);
            if n == 1 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    Ok(())
}

/// Every cgroup directory at and below `root`, children before their parents.
fn post_order(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), false)];
    while let Some((dir, visited)) = stack.pop() {
        if visited {
            out.push(dir);
            continue;
        }
        stack.push((dir.clone(), true));
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), false));
                }
            }
        }
    }
    out
}

fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Ends every process in the subtree at `root` and removes it; returns what could not be removed.
pub fn remove_tree(root: &Path) -> Vec<String> {
    if !root.exists() {
        return Vec::new();
    }
    let dirs = post_order(root);
    // cgroup.kill (Linux 5.14) kills the whole subtree at once, including processes forked while
    // it runs; without it, each process listed.
    if std::fs::write(root.join("cgroup.kill"), "1").is_err() {
        for dir in &dirs {
            for pid in procs(dir) {
                // SAFETY: kill(2) on a process in a cgroup this lab created for the processes it
                // starts; nothing else is placed there.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
    let mut problems = Vec::new();
    for dir in &dirs {
        // The killed processes leave their cgroup as they exit: rmdir fails (EBUSY) until then.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() >= deadline => {
                    problems.push(format!(
                        "removing cgroup {}: {e} (processes left: {:?})",
                        dir.display(),
                        procs(dir)
                    ));
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    problems
}

/// When process `pid` started (field 22 of /proc/PID/stat, in clock ticks since boot): with the
/// pid, it names one process, so a pid reused by another one is never signalled.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm (field 2) is in parentheses and may hold spaces and parentheses itself.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_names_this_process() {
        let t = start_time(std::process::id()).expect("own start time");
        assert_eq!(start_time(std::process::id()), Some(t));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn a_process_joins_its_cgroup_before_it_runs_and_the_tree_goes() {
        if !imdsguard_netns::can_create_namespaces() {
            imdsguard_netns::skip_test(env!("CARGO_CRATE_NAME"), "needs root (cgroups)");
            return;
        }
        let Some(root) = v2_root() else {
            imdsguard_netns::skip_test(env!("CARGO_CRATE_NAME"), "no cgroup v2 hierarchy");
            return;
        };
        let top = root.join(imdsguard_netns::unique_name("imdsguard-lab-unit-"));
        let leaf = top.join("pod").join("ctr");
        std::fs::create_dir_all(&leaf).expect("mkdir");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "grep '^0::' /proc/self/cgroup; exec sleep 30"])
            .stdout(std::process::Stdio::piped());
        join(&mut cmd, &leaf).expect("join");
        let mut child = cmd.spawn().expect("spawn");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            use std::io::BufRead;
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let rel = leaf.strip_prefix(&root).expect("below the root");
        let problems = remove_tree(&top);
        let _ = child.wait();
        assert_eq!(line.trim(), format!("0::/{}", rel.display()));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!top.exists());
    }
}
