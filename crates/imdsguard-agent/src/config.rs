//! What the agent is told to do, already parsed and checked: the command line's flags become
//! one of these, and nothing below reads flags or the environment.

use imdsguard_datapath::DenyResponse;
use imdsguard_hubble_server::exporter::ExportOptions;
use imdsguard_hubble_server::tls::ServerTlsFiles;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug)]
pub struct AgentConfig {
    pub node_name: String,
    pub hubble: HubbleConfig,
    /// The web UI's listen address; empty disables it.
    pub ui_listen_address: String,
    /// Recorded flows to serve (demos, UI trials).
    pub replay: Option<ReplayConfig>,
    /// The cluster this agent belongs to, when it has one. Its Node objects are the nodes the
    /// Hubble Peer service announces, whatever the mode (enforcing or replaying); pods and
    /// policies come from it only when `enforce` says [`InputSource::Cluster`].
    pub cluster: Option<ClusterConfig>,
    /// Enforcement through the datapath; None serves flows only.
    pub enforce: Option<EnforceConfig>,
}

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// None: the pod's service account (or $KUBECONFIG, as kubectl finds it).
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug)]
pub struct HubbleConfig {
    /// Hubble's gRPC listener (Go's form: `:4244` is every address); empty disables it.
    pub listen_address: String,
    /// Hubble's unix socket.
    pub socket_path: Option<PathBuf>,
    /// Flows kept in memory.
    pub buffer_capacity: usize,
    /// Prometheus metrics listen address; empty disables it.
    pub metrics_address: String,
    /// The JSON-lines flow export.
    pub export: Option<ExportOptions>,
    /// TLS on the TCP listener (never on the unix socket, as in Cilium); None: plaintext.
    pub tls: Option<ServerTlsFiles>,
    /// The cluster's name (Cilium's --cluster-name): part of the names the Peer service gives
    /// nodes and of the TLS server names Relay verifies.
    pub cluster_name: String,
}

#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub path: PathBuf,
    /// Pause between flows.
    pub interval: Duration,
    /// Start again at the end of the file.
    pub looped: bool,
    /// Keep the recorded timestamps instead of stamping flows with the current time.
    pub keep_time: bool,
}

/// Where the pods and policies come from.
#[derive(Debug, Clone)]
pub enum InputSource {
    /// `--endpoints FILE` (and `--policies DIR`).
    Files {
        policies: Option<PathBuf>,
        endpoints: PathBuf,
    },
    /// The agent's cluster ([`AgentConfig::cluster`], which must be set). Policies in
    /// `policies` (a ConfigMap's files) are in force next to the cluster's.
    Cluster { policies: Option<PathBuf> },
}

#[derive(Debug, Clone)]
pub struct EnforceConfig {
    pub source: InputSource,
    /// The local API's unix socket.
    pub socket_path: PathBuf,
    /// Attach to veths no known pod has (`--unknown-veths guard`).
    pub guard_unknown_veths: bool,
    /// Audit mode for every endpoint (Cilium's --policy-audit-mode).
    pub policy_audit_mode: bool,
    /// The BPF filesystem; pins live under `<bpf_root>/imdsguard/`.
    pub bpf_root: PathBuf,
    /// The L7 proxy's port.
    pub proxy_port: u16,
    /// SO_MARK on the proxy's upstream connections.
    pub proxy_upstream_mark: Option<u32>,
    /// How often inputs are checked besides inotify (at least 10 ms).
    pub reload_interval: Duration,
    /// Where the connect()/sendmsg() hooks attach (a cgroup v2 directory, normally the host's
    /// root); None: no hooks (flows still name containers where the datapath sees a socket).
    pub cgroup_root: Option<PathBuf>,
    /// Whether hostNetwork pods are under their policies (judged at connect()/sendmsg()).
    pub host_network_pods: HostNetworkPods,
    /// How a denial is answered: silently (`drop`) or at once (`reject`).
    pub deny_response: DenyResponse,
}

/// `--host-network-pods`: what becomes of pods that share the node's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HostNetworkPods {
    /// As Cilium: no pod policy applies to them; their flows still name pod and container.
    #[default]
    Ignore,
    /// An imdsguard extension: their pods' policies judge their connects and sends to
    /// metadata addresses at connect()/sendmsg(), by their cgroups.
    Enforce,
}

impl HostNetworkPods {
    pub fn as_str(self) -> &'static str {
        match self {
            HostNetworkPods::Ignore => "ignore",
            HostNetworkPods::Enforce => "enforce",
        }
    }
}
