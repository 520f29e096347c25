//! The lab: the seed's node on one Linux machine. Pods are network namespaces with veths; the
//! metadata service is an emulator in its own namespace at 169.254.169.254, reachable only from
//! the lab's pods and from traffic carrying the lab's mark (the proxy's upstream connections):
//! the machine's own route to its real metadata service is never touched.
//!
//! - `topology`: the topology file and the agent endpoints file it yields (pure).
//! - `lab` (Linux): `up`, `down`, `exec`, with a state file so another process can take it down.

#[cfg(target_os = "linux")]
pub mod lab;
pub mod topology;
