//! What the agent reads of a cgroup v2 hierarchy, behind a trait: the host's ([`crate::host::Host`],
//! Linux) or an in-memory [`FakeTree`] for tests, so the resolution of containers to cgroup ids
//! is tested without a kernel.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// A cgroup v2 hierarchy, read by absolute directory paths.
pub trait CgroupTree: Send + Sync {
    /// The cgroup id (the directory's inode number) of `dir`.
    fn id(&self, dir: &Path) -> io::Result<u64>;
    /// `dir` first, then its descendant cgroups: ids and absolute paths, at most `limit`
    /// entries and [`MAX_DEPTH`] levels below `dir`. Cgroups that vanish during the walk are
    /// left out: containers come and go.
    fn subtree(&self, dir: &Path, limit: usize) -> io::Result<Vec<(u64, PathBuf)>>;
    /// The processes directly in `dir` (its `cgroup.procs`), not those of its descendants.
    fn procs(&self, dir: &Path) -> io::Result<Vec<u32>>;
    /// A process's name (its comm).
    fn comm(&self, pid: u32) -> io::Result<String>;
}

/// Directories deeper than this below the walk's start are not walked: Kubernetes nests about
/// six levels (kubepods, QoS, pod, container, and a container's own few).
pub const MAX_DEPTH: usize = 12;

/// An in-memory hierarchy: directories with ids and processes, and processes' names.
#[derive(Debug, Clone, Default)]
pub struct FakeTree {
    dirs: BTreeMap<PathBuf, (u64, Vec<u32>)>,
    comms: BTreeMap<u32, String>,
}

impl FakeTree {
    pub fn new() -> FakeTree {
        FakeTree::default()
    }

    /// Adds (or replaces) the cgroup `dir` with id `id`. Its parents need not exist.
    pub fn dir(&mut self, dir: impl Into<PathBuf>, id: u64) -> &mut FakeTree {
        self.dirs.insert(dir.into(), (id, Vec::new()));
        self
    }

    /// Removes `dir` and its descendants.
    pub fn remove(&mut self, dir: &Path) -> &mut FakeTree {
        self.dirs.retain(|d, _| !d.starts_with(dir));
        self
    }

    /// Puts process `pid`, named `comm`, in `dir` (which must have been added).
    pub fn process(&mut self, dir: &Path, pid: u32, comm: &str) -> &mut FakeTree {
        if let Some((_, procs)) = self.dirs.get_mut(dir) {
            procs.push(pid);
        }
        self.comms.insert(pid, comm.to_owned());
        self
    }
}

fn not_found(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, what)
}

impl CgroupTree for FakeTree {
    fn id(&self, dir: &Path) -> io::Result<u64> {
        self.dirs
            .get(dir)
            .map(|(id, _)| *id)
            .ok_or_else(|| not_found(format!("{}: no such cgroup", dir.display())))
    }

    fn subtree(&self, dir: &Path, limit: usize) -> io::Result<Vec<(u64, PathBuf)>> {
        let top = self.id(dir)?;
        let mut out = vec![(top, dir.to_path_buf())];
        for (d, (id, _)) in self.dirs.range(dir.to_path_buf()..) {
            if !d.starts_with(dir) {
                break;
            }
            let depth = d.components().count() - dir.components().count();
            if depth == 0 || depth > MAX_DEPTH {
                continue;
            }
            if out.len() >= limit {
                break;
            }
            out.push((*id, d.clone()));
        }
        Ok(out)
    }

    fn procs(&self, dir: &Path) -> io::Result<Vec<u32>> {
        self.dirs
            .get(dir)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| not_found(format!("{}: no such cgroup", dir.display())))
    }

    fn comm(&self, pid: u32) -> io::Result<String> {
        self.comms
            .get(&pid)
            .cloned()
            .ok_or_else(|| not_found(format!("no process {pid}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_walks_a_subtree_and_knows_its_processes() {
        let mut t = FakeTree::new();
        t.dir("/cg", 1)
            .dir("/cg/pod", 10)
            .dir("/cg/pod/app", 11)
            .dir("/cg/pod/app/worker", 12)
            .dir("/cg/podx", 20);
        t.process(Path::new("/cg/pod/app"), 42, "curl");
        let ids: Vec<u64> = t
            .subtree(Path::new("/cg/pod"), 100)
            .expect("walk")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, [10, 11, 12], "/cg/podx is not below /cg/pod");
        assert_eq!(t.subtree(Path::new("/cg/pod"), 2).expect("walk").len(), 2);
        assert_eq!(t.procs(Path::new("/cg/pod/app")).expect("procs"), [42]);
        assert_eq!(t.comm(42).expect("comm"), "curl");
        assert!(t.id(Path::new("/cg/gone")).is_err());
        t.remove(Path::new("/cg/pod/app"));
        assert_eq!(t.subtree(Path::new("/cg/pod"), 100).expect("walk").len(), 1);
    }
}
