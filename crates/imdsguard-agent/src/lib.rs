//! The imdsguard node agent as a library. The `imdsguard agent` command flattens
//! [`args::AgentArgs`], turns them into an [`AgentConfig`] and calls [`run`]; everything the
//! agent does lives here, one module per part:
//!
//! - [`inputs`]: where the agent learns what to enforce: files (`--policies`, `--endpoints`) or a
//!   Kubernetes cluster. Both feed one policy repository.
//! - [`reconcile`]: the loop that resolves the repository and writes the datapath's tables,
//!   attaches to pod interfaces and checks the proxy's routing.
//! - [`node_view`]: who is who on this node (pods by address, identities, policies, interfaces),
//!   rebuilt after every change; it names the datapath's flows and answers the L7 proxy.
//! - [`events`]: drains the datapath's ring buffer into flows on a thread of its own, so a slow
//!   policy resolution never delays flows.
//! - [`containers`]: which pod and container a cgroup id belongs to (flows name the container
//!   behind a socket), and the cgroups of hostNetwork pods, which the cgroup hooks judge.
//! - [`sockets`]: the datapath's socket and process by TCP connection, for the proxy's flows.
//! - [`api`]: the local API on a unix socket (status, policy trace), and its client.
//! - [`serve`]: the servers around them: Hubble's gRPC API (TLS when configured), metrics, the
//!   UI, the proxy's listeners, recorded-flow replay.
//! - [`peers`]: the cluster's nodes as the Hubble Peer service announces them to Relay.
//! - [`logging`], [`status`], [`sources`]: the agent's log lines, `imdsguard status`'s report,
//!   and reading manifest files.
//!
//! Limits: enforcement needs Linux with root (or CAP_BPF and CAP_NET_ADMIN); the pinned
//! datapath keeps enforcing while no agent runs, and the agent never unpins it on exit.

pub mod api;
pub mod args;
mod config;
pub mod containers;
mod error;
pub mod events;
pub mod inputs;
pub mod logging;
pub mod node_view;
pub mod peers;
mod proxy;
pub mod reconcile;
mod replay;
pub mod serve;
pub mod sockets;
pub mod sources;
pub mod status;

pub use config::{
    AgentConfig, ClusterConfig, EnforceConfig, HostNetworkPods, HubbleConfig, InputSource,
    ReplayConfig,
};
pub use error::AgentError;
pub use serve::run;
