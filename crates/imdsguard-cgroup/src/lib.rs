//! Which Kubernetes pod and container a cgroup v2 directory belongs to: the groundwork for naming
//! the container and process behind a flow (a cgroup id is what the kernel can tell us about a
//! socket's owner).
//!
//! - [`ContainerId`]: a pod status's `containerID` (`containerd://…`, `cri-o://…`, `docker://…`).
//! - [`classify`]: what a cgroup path says about its pod and container, for the systemd and the
//!   cgroupfs drivers of containerd, CRI-O and Docker (pure; no I/O).
//! - [`host`] (Linux): where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
//!   on hybrid hosts), a directory's cgroup id, a process's cgroup, and a walk of the hierarchy.
//! - [`CgroupTree`]: the reads the agent needs (ids, subtrees, a cgroup's processes, a process's
//!   name), implemented by [`host::Host`] and by the in-memory [`FakeTree`] for tests.
//!
//! Limits: only cgroup v2 is read; a process in a v1-only hierarchy has no v2 cgroup to name. A
//! container runtime that names its scopes otherwise (Kata, gVisor sandboxes) is not recognised.

mod id;
mod path;
pub mod tree;

#[cfg(target_os = "linux")]
pub mod host;

pub use id::{ContainerId, ContainerIdError, Runtime};
pub use path::{CgroupPlace, classify};
pub use tree::{CgroupTree, FakeTree};
