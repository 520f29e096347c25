//! The lab: the seed's node on one Linux machine. Pods are network namespaces with veths; the
//! metadata service is an emulator in its own namespace at the metadata address
//! (imdsguard-metadata's `IMDS_V4`), reachable only from the lab's pods and from traffic carrying
//! the lab's mark (the proxy's upstream connections): the machine's own route to its real
//! metadata service is never touched.
//!
//! - `topology`: the topology file and the agent endpoints file it yields (pure).
//! - `lab` (Linux): `up`, `down`, `exec`, `status_report`, with a state file so another process
//!   can take it down.
//! - `cgroups` (Linux): the lab's cgroup v2 subtree, one directory per pod and container, which
//!   the agent's cgroup hooks attach at.
//! - `demo` (Linux): the seed's story end to end, with the agent and `observe` run from the
//!   imdsguard binary.
//!
//! Limits: IPv4 only, one node, and the emulator plays one cloud at a time.

#[cfg(target_os = "linux")]
pub mod cgroups;
#[cfg(target_os = "linux")]
pub mod demo;
#[cfg(target_os = "linux")]
pub mod lab;
pub mod topology;
