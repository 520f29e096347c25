//! The agent's view of a Kubernetes cluster: the pods of one node, every namespace, and Cilium's
//! policy kinds, kept by kube-rs reflectors, and turned into the engine's inputs (endpoint specs
//! and policy sources) by pure conversions. [`nodes`] watches every Node, for the Hubble Peer
//! service's list of nodes.
//!
//! Pods on the host network are kept apart ([`ClusterObjects::host_network`], endpoints without
//! addresses, which only `--host-network-pods enforce` puts under policy), and every pod's
//! containers ([`PodContainers`]) name the container behind a cgroup.
//!
//! Limits: only `cilium.io/v2` policies and `v2alpha1` CIDR groups are watched; pods without an
//! IP and finished pods are not endpoints. Where two pods claim one IP
//! (an IP reused before the old pod's deletion is seen) the newer pod owns it, so an old pod's
//! identity never carries over.

pub mod apply;
pub mod cluster;
pub mod convert;
pub mod events;
pub mod manifests;
pub mod nodes;

pub use cluster::{Cluster, ClusterError, ClusterOptions, Snapshot, WatchStatus};
pub use convert::{ClusterObjects, PodContainers, host_network_endpoint, pod_endpoint};
pub use kube::Client as KubeClient;
pub use nodes::{NodeInfo, NodeWatch};
