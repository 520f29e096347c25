//! `imdsguard agent`'s flags, and the agent's configuration made from them: the binary flattens
//! [`AgentArgs`] into its command line and runs [`crate::run`] with [`AgentArgs::config`]. Flag
//! combinations that cannot work are refused here, with what to give instead.

use crate::logging::LogArgs;
use crate::{
    AgentConfig, AgentError, ClusterConfig, EnforceConfig, HostNetworkPods, HubbleConfig,
    InputSource, ReplayConfig,
};
use clap::Args;
use imdsguard_datapath::DenyResponse;
use imdsguard_hubble_proto::flow::FlowFilter;
use imdsguard_hubble_server::exporter::ExportOptions;
use imdsguard_hubble_server::tls::ServerTlsFiles;
use std::path::PathBuf;
use std::time::Duration;

type Result<T> = std::result::Result<T, AgentError>;

/// A configuration error (says which flag, and what to give instead).
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(AgentError::Config(format!($($arg)*)))
    };
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    #[command(flatten)]
    enforce: EnforceArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// Replay flows recorded with `hubble observe -o jsonpb` (or `imdsguard observe -o json`).
    #[arg(long, value_name = "FILE")]
    replay_flows: Option<PathBuf>,
    /// Pause between replayed flows (a Go-style duration: 10ms, 1s).
    #[arg(long, default_value = "0s")]
    replay_interval: String,
    /// Start the replay again at the end of the file.
    #[arg(long)]
    replay_loop: bool,
    /// Keep the recorded timestamps instead of stamping replayed flows with the current time.
    #[arg(long)]
    replay_keep_time: bool,
    /// Hubble's gRPC listener (Cilium's --hubble-listen-address); empty disables it.
    #[arg(long, default_value = "127.0.0.1:4244")]
    hubble_listen_address: String,
    /// Serve Hubble's TCP listener without TLS (the default for now). Giving
    /// --hubble-tls-cert-file and --hubble-tls-key-file turns TLS on; `--hubble-disable-tls=false`
    /// requires it, as Cilium's agent does by default.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    hubble_disable_tls: Option<bool>,
    /// The Hubble server's certificate (PEM, with its chain); reloaded when the file changes.
    #[arg(long, default_value = "")]
    hubble_tls_cert_file: String,
    /// The Hubble server's private key (PEM); reloaded when the file changes.
    #[arg(long, default_value = "")]
    hubble_tls_key_file: String,
    /// CA certificates (PEM, comma-separated list) that sign client certificates: with them
    /// every client (Relay, the hubble CLI) must present one (mTLS).
    #[arg(long, value_delimiter = ',', value_name = "FILES")]
    hubble_tls_client_ca_files: Vec<PathBuf>,
    /// This cluster's name (Cilium's --cluster-name): the Peer service names nodes
    /// `<cluster>/<node>` outside `default`, and TLS server names are
    /// `<node>.<cluster>.hubble-grpc.cilium.io`.
    #[arg(long, default_value = "default")]
    cluster_name: String,
    /// Hubble's unix socket (Cilium uses /var/run/cilium/hubble.sock); empty disables it.
    #[arg(long, default_value = "")]
    hubble_socket_path: String,
    /// Flows kept in memory (rounded up to 2^n-1, as Cilium's --hubble-event-buffer-capacity).
    #[arg(long, default_value_t = 4095)]
    hubble_event_buffer_capacity: usize,
    /// This node's name (default: $K8S_NODE_NAME, then the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// Serve Prometheus metrics (Hubble's names) at http://ADDR/metrics; empty disables it.
    #[arg(long, default_value = "")]
    hubble_metrics_server: String,
    /// Write every flow as a JSON line (`hubble observe -o jsonpb` format) to this file.
    #[arg(long, default_value = "")]
    hubble_export_file_path: String,
    /// Rotate the export file at this size.
    #[arg(long, default_value_t = 10)]
    hubble_export_file_max_size_mb: u64,
    /// Rotated export files kept.
    #[arg(long, default_value_t = 5)]
    hubble_export_file_max_backups: usize,
    /// Export only flows matching one of these FlowFilters (a JSON object or list).
    #[arg(long, default_value = "")]
    hubble_export_allowlist: String,
    /// Never export flows matching one of these FlowFilters (a JSON object or list).
    #[arg(long, default_value = "")]
    hubble_export_denylist: String,
    /// Serve the web UI (flows, service map, IMDS view) and its JSON API here, e.g.
    /// 127.0.0.1:12000 (`:PORT` is loopback); empty disables it. No authentication: keep it on
    /// loopback.
    #[arg(long, default_value = "")]
    ui_listen_address: String,
}

/// Where a pod's service account token is mounted: with KUBERNETES_SERVICE_HOST, what says the
/// agent runs in a pod of the cluster.
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// A FlowFilter list given as one JSON object or a JSON array of them.
fn filter_list(flag: &str, text: &str) -> Result<Vec<FlowFilter>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let parsed = if text.starts_with('[') {
        serde_json::from_str::<Vec<FlowFilter>>(text)
    } else {
        serde_json::from_str::<FlowFilter>(text).map(|f| vec![f])
    };
    parsed.map_err(|e| {
        AgentError::Config(format!(
            "--{flag}: expected a FlowFilter JSON object or list, e.g. '{{\"verdict\":[\"DROPPED\"]}}' ({e})"
        ))
    })
}

fn node_name(arg: &Option<String>) -> String {
    if let Some(n) = arg {
        return n.clone();
    }
    if let Ok(n) = std::env::var("K8S_NODE_NAME")
        && !n.is_empty()
    {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

#[derive(Args, Debug, Clone)]
pub struct EnforceArgs {
    /// Policies to enforce: a directory (or file) of CiliumNetworkPolicy,
    /// CiliumClusterwideNetworkPolicy and CiliumCIDRGroup manifests, watched for changes.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// The pods of this node (`namespaces:` and `endpoints:`, each endpoint with its
    /// `interface:`), watched for changes. Enables the datapath.
    #[arg(long, value_name = "FILE")]
    pub endpoints: Option<PathBuf>,
    /// The cluster (Cilium's --k8s-kubeconfig-path): its Node objects are the nodes the Hubble
    /// Peer service announces, and, unless --replay-flows is given, pods, namespaces and
    /// policies are enforced from it. In a pod, the service account is used when neither this
    /// nor --endpoints is given.
    #[arg(long, alias = "k8s-kubeconfig-path", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The agent's local API (status, endpoints, policy trace), as Cilium's --socket-path.
    #[arg(long, default_value = "/var/run/imdsguard/imdsguard.sock")]
    pub socket_path: PathBuf,
    /// `guard` attaches to veths no known pod has, so a pod the agent has not heard of yet cannot
    /// reach a metadata address; `ignore` leaves them alone. Default: guard with a cluster;
    /// ignore with --endpoints, whose file names every pod's interface.
    #[arg(long, value_enum)]
    pub unknown_veths: Option<UnknownVeths>,
    /// Report denied flows as AUDIT and let them pass (Cilium's --policy-audit-mode).
    #[arg(long)]
    pub policy_audit_mode: bool,
    /// The BPF filesystem (Cilium's --bpf-root); pins live under <bpf-root>/imdsguard/.
    #[arg(long, default_value = "/sys/fs/bpf")]
    pub bpf_root: PathBuf,
    /// The L7 proxy's port, for policies with HTTP rules.
    #[arg(long, default_value_t = 15001)]
    pub proxy_port: u16,
    /// Mark the proxy's upstream connections (SO_MARK) so policy routing can steer them: the lab
    /// routes this mark to its IMDS emulator (`imdsguard lab up` prints the value).
    #[arg(long, value_parser = parse_mark)]
    pub proxy_upstream_mark: Option<u32>,
    /// How often the policy directory and the endpoints file are checked for changes besides
    /// inotify, which reloads at once (the check catches what inotify cannot see).
    #[arg(long, default_value = "1s")]
    pub reload_interval: String,
    /// Where the connect()/sendmsg() hooks attach (process attribution, hostNetwork pods): a
    /// cgroup v2 directory. Default: the host's cgroup v2 root (/sys/fs/cgroup, or
    /// /sys/fs/cgroup/unified on hybrid hosts; a container's own cgroup namespace does not count);
    /// "" or "none" turns the hooks off.
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<String>,
    /// `enforce` judges hostNetwork pods' connects and sends to metadata addresses against their
    /// pods' policies, by cgroup (an imdsguard extension); `ignore` leaves them out of policy, as
    /// Cilium does.
    #[arg(long, value_enum, default_value = "ignore")]
    pub host_network_pods: HostNetworkPods,
    /// How a denial is answered: `drop` (silent, as Cilium), or `reject`: a denied connect()
    /// fails at once with ECONNREFUSED, and a denied packet gets a TCP RST or an ICMP
    /// unreachable.
    #[arg(long, default_value = "drop", value_name = "drop|reject")]
    pub deny_response: DenyResponse,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownVeths {
    Guard,
    Ignore,
}

/// Whether the cgroup v2 mount exists: `Err` says why not.
pub type CgroupProbe = fn() -> std::io::Result<PathBuf>;

impl EnforceArgs {
    /// The hooks' cgroup: `--cgroup-root`, else what `probe` finds (the host's cgroup v2 mount);
    /// None when turned off or when there is none (the agent logs why).
    pub fn cgroup_root(&self, probe: CgroupProbe) -> Result<Option<PathBuf>> {
        match self.cgroup_root.as_deref().map(str::trim) {
            Some("" | "none") => Ok(None),
            Some(p) => {
                let path = PathBuf::from(p);
                if !path.is_absolute() {
                    bail!(
                        "--cgroup-root {p:?}: give the absolute path of a cgroup v2 directory (e.g. /sys/fs/cgroup), or \"\" to turn the hooks off"
                    );
                }
                Ok(Some(path))
            }
            None => Ok(probe().ok()),
        }
    }

    /// Whether to guard veths no known pod has (see --unknown-veths).
    pub fn guard_unknown_veths(&self) -> bool {
        let default = if self.endpoints.is_some() {
            UnknownVeths::Ignore
        } else {
            UnknownVeths::Guard
        };
        self.unknown_veths.unwrap_or(default) == UnknownVeths::Guard
    }
}

fn parse_mark(s: &str) -> std::result::Result<u32, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("{s:?} is not a mark (a number such as 0xa00)"))
}

/// Go-style durations (`10ms`, `1s`), as Cilium's flags take them.
fn duration(flag: &str, text: &str) -> Result<Duration> {
    let ns = imdsguard_flow::timespec::parse_duration(text)
        .ok_or_else(|| AgentError::Config(format!("invalid --{flag} {text:?}")))?;
    Ok(Duration::from_nanos(ns.max(0) as u64))
}

impl AgentArgs {
    /// The agent's configuration from its flags, with the host's cgroup v2 mount as the hooks'
    /// default root.
    pub fn config(self) -> Result<AgentConfig> {
        config(self, default_cgroup_root)
    }
}

#[cfg(target_os = "linux")]
fn default_cgroup_root() -> std::io::Result<PathBuf> {
    imdsguard_cgroup::host::host_root()
}

#[cfg(not(target_os = "linux"))]
fn default_cgroup_root() -> std::io::Result<PathBuf> {
    Err(std::io::Error::other("cgroup v2 is Linux only"))
}

/// The agent's configuration from its flags; flag combinations that cannot work are refused
/// here, with what to give instead. `probe` finds the default cgroup root.
pub fn config(args: AgentArgs, probe: CgroupProbe) -> Result<AgentConfig> {
    let node = node_name(&args.node_name);
    let interval = duration("replay-interval", &args.replay_interval)?;
    if !(1..=65_535).contains(&args.hubble_event_buffer_capacity) {
        bail!(
            "--hubble-event-buffer-capacity must be between 1 and 65535 (as in Cilium), got {}",
            args.hubble_event_buffer_capacity
        );
    }
    let export = if args.hubble_export_file_path.is_empty() {
        None
    } else {
        Some(ExportOptions {
            path: PathBuf::from(&args.hubble_export_file_path),
            max_bytes: args.hubble_export_file_max_size_mb.saturating_mul(1 << 20),
            max_backups: args.hubble_export_file_max_backups,
            allow: filter_list("hubble-export-allowlist", &args.hubble_export_allowlist)?,
            deny: filter_list("hubble-export-denylist", &args.hubble_export_denylist)?,
        })
    };
    let e = &args.enforce;
    // In a pod with no --endpoints, the pod's service account names the cluster (the
    // DaemonSet's case); --endpoints means the pods come from a file, without a cluster.
    let in_cluster = e.kubeconfig.is_none()
        && e.endpoints.is_none()
        && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && std::path::Path::new(SERVICE_ACCOUNT_TOKEN).exists();
    let cluster = (e.kubeconfig.is_some() || in_cluster).then(|| ClusterConfig {
        kubeconfig: e.kubeconfig.clone(),
    });
    if cluster.is_some() && e.endpoints.is_some() {
        bail!(
            "give either --kubeconfig (pods from the cluster) or --endpoints (pods from a file), not both"
        );
    }
    // --replay-flows serves recorded flows: the cluster then gives the Peer service its nodes
    // and nothing is enforced from it.
    let enforce_cluster = cluster.is_some() && args.replay_flows.is_none();
    let source = match (&e.endpoints, enforce_cluster) {
        (Some(endpoints), _) => Some(InputSource::Files {
            policies: e.policies.clone(),
            endpoints: endpoints.clone(),
        }),
        (None, true) => Some(InputSource::Cluster {
            policies: e.policies.clone(),
        }),
        (None, false) => None,
    };
    if e.policies.is_some() && source.is_none() {
        if args.replay_flows.is_some() {
            bail!(
                "--replay-flows serves recorded flows and enforces nothing from the cluster: --policies needs --endpoints there"
            );
        }
        bail!(
            "--policies needs --endpoints (this node's pods and their interfaces); with a cluster, give --kubeconfig and keep the policies in the cluster"
        );
    }
    let tls = hubble_tls(&args)?;
    check_cluster_name(&args.cluster_name)?;
    let socket_path =
        (!args.hubble_socket_path.is_empty()).then(|| PathBuf::from(&args.hubble_socket_path));
    if args.hubble_listen_address.is_empty()
        && socket_path.is_none()
        && args.ui_listen_address.is_empty()
        && source.is_none()
    {
        bail!(
            "nothing to do: give --kubeconfig or --endpoints to enforce, or --hubble-listen-address, --hubble-socket-path or --ui-listen-address to serve flows"
        );
    }
    let enforce = match source {
        Some(source) => Some(EnforceConfig {
            cgroup_root: {
                let root = e.cgroup_root(probe)?;
                if root.is_none() && e.host_network_pods == HostNetworkPods::Enforce {
                    bail!(
                        "--host-network-pods enforce judges hostNetwork pods with the cgroup hooks, which are off: give --cgroup-root (a cgroup v2 directory, normally the host's /sys/fs/cgroup)"
                    );
                }
                root
            },
            host_network_pods: e.host_network_pods,
            deny_response: e.deny_response,
            source,
            socket_path: e.socket_path.clone(),
            guard_unknown_veths: e.guard_unknown_veths(),
            policy_audit_mode: e.policy_audit_mode,
            bpf_root: e.bpf_root.clone(),
            proxy_port: e.proxy_port,
            proxy_upstream_mark: e.proxy_upstream_mark,
            reload_interval: duration("reload-interval", &e.reload_interval)?,
        }),
        None => None,
    };
    Ok(AgentConfig {
        node_name: node,
        hubble: HubbleConfig {
            listen_address: args.hubble_listen_address,
            socket_path,
            buffer_capacity: args.hubble_event_buffer_capacity,
            metrics_address: args.hubble_metrics_server,
            export,
            tls,
            cluster_name: args.cluster_name,
        },
        ui_listen_address: args.ui_listen_address,
        replay: args.replay_flows.map(|path| ReplayConfig {
            path,
            interval,
            looped: args.replay_loop,
            keep_time: args.replay_keep_time,
        }),
        cluster,
        enforce,
    })
}

/// TLS on Hubble's TCP listener from Cilium's flags: on when a certificate and key are given
/// (or required by `--hubble-disable-tls=false`), off by default and with `--hubble-disable-tls`.
fn hubble_tls(args: &AgentArgs) -> Result<Option<ServerTlsFiles>> {
    let (cert, key, cas) = (
        &args.hubble_tls_cert_file,
        &args.hubble_tls_key_file,
        &args.hubble_tls_client_ca_files,
    );
    let given = !cert.is_empty() || !key.is_empty() || !cas.is_empty();
    if args.hubble_disable_tls == Some(true) {
        if given {
            bail!(
                "--hubble-disable-tls turns TLS off: leave out --hubble-tls-cert-file, --hubble-tls-key-file and --hubble-tls-client-ca-files, or give --hubble-disable-tls=false"
            );
        }
        return Ok(None);
    }
    if !given {
        if args.hubble_disable_tls == Some(false) {
            bail!(
                "TLS is on (--hubble-disable-tls=false) but there is no certificate: give --hubble-tls-cert-file and --hubble-tls-key-file"
            );
        }
        return Ok(None);
    }
    if cert.is_empty() || key.is_empty() {
        bail!("Hubble TLS needs both --hubble-tls-cert-file and --hubble-tls-key-file");
    }
    if args.hubble_listen_address.is_empty() {
        bail!(
            "Hubble TLS is for the TCP listener, and --hubble-listen-address is empty (the unix socket is always plaintext)"
        );
    }
    Ok(Some(ServerTlsFiles {
        cert_file: PathBuf::from(cert),
        key_file: PathBuf::from(key),
        client_ca_files: cas.clone(),
    }))
}

/// Cilium's rule for cluster names: lowercase letters, digits and dashes, starting and ending
/// with a letter or digit, at most 32 characters.
fn check_cluster_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "invalid --cluster-name {name:?}: lowercase letters, digits and '-', at most 32 characters, starting and ending with a letter or digit"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn found() -> std::io::Result<PathBuf> {
        Ok(PathBuf::from("/sys/fs/cgroup/unified"))
    }

    fn missing() -> std::io::Result<PathBuf> {
        Err(std::io::Error::other("no cgroup v2 hierarchy"))
    }

    fn config_with(args: &[&str], probe: CgroupProbe) -> Result<AgentConfig> {
        let cli = Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
            .map_err(|e| AgentError::Config(e.to_string()))?;
        config(cli.agent, probe)
    }

    fn config_of(args: &[&str]) -> Result<AgentConfig> {
        config_with(args, found)
    }

    #[test]
    fn a_cluster_names_the_peers_in_every_mode_and_enforces_unless_replaying() {
        let replay = config_of(&["--replay-flows", "f.jsonl", "--kubeconfig", "kc"]).unwrap();
        assert!(replay.enforce.is_none(), "replaying enforces nothing");
        assert_eq!(
            replay.cluster.and_then(|c| c.kubeconfig),
            Some(PathBuf::from("kc"))
        );
        let enforcing = config_of(&["--kubeconfig", "kc"]).unwrap();
        assert!(matches!(
            enforcing.enforce.map(|e| e.source),
            Some(InputSource::Cluster { policies: None })
        ));
        assert!(enforcing.cluster.is_some());
        let files = config_of(&["--endpoints", "e.yaml"]).unwrap();
        assert!(files.cluster.is_none());
        assert!(config_of(&["--endpoints", "e.yaml", "--kubeconfig", "kc"]).is_err());
        let e = config_of(&[
            "--replay-flows",
            "f",
            "--kubeconfig",
            "kc",
            "--policies",
            "p",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--replay-flows"), "{e}");
        assert!(config_of(&["--replay-flows", "f", "--cluster-name", "Prod"]).is_err());
        let named = config_of(&["--replay-flows", "f", "--cluster-name", "prod-1"]).unwrap();
        assert_eq!(named.hubble.cluster_name, "prod-1");
    }

    #[test]
    fn cgroup_hooks_host_network_pods_and_the_deny_response() {
        let e = |args: &[&str], probe: CgroupProbe| {
            let mut all = vec!["--endpoints", "e.yaml"];
            all.extend_from_slice(args);
            config_with(&all, probe).map(|c| c.enforce.expect("enforcing"))
        };
        let d = e(&[], found).expect("defaults");
        assert_eq!(d.cgroup_root, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(d.host_network_pods, HostNetworkPods::Ignore);
        assert_eq!(d.deny_response, DenyResponse::Drop);
        assert_eq!(e(&[], missing).expect("no v2").cgroup_root, None);
        for off in ["", "none"] {
            assert_eq!(
                e(&["--cgroup-root", off], found).expect("off").cgroup_root,
                None
            );
        }
        let test_made = e(
            &[
                "--cgroup-root",
                "/sys/fs/cgroup/unified/t1",
                "--host-network-pods",
                "enforce",
                "--deny-response",
                "reject",
            ],
            missing,
        )
        .expect("given");
        assert_eq!(
            test_made.cgroup_root,
            Some(PathBuf::from("/sys/fs/cgroup/unified/t1"))
        );
        assert_eq!(test_made.host_network_pods, HostNetworkPods::Enforce);
        assert_eq!(test_made.deny_response, DenyResponse::Reject);
        let err =
            |args: &[&str], probe: CgroupProbe| e(args, probe).expect_err("refused").to_string();
        assert!(err(&["--cgroup-root", "cg"], found).contains("absolute path"));
        assert!(
            err(
                &["--host-network-pods", "enforce", "--cgroup-root", ""],
                found
            )
            .contains("--host-network-pods enforce")
        );
        assert!(err(&["--host-network-pods", "enforce"], missing).contains("give --cgroup-root"));
        assert!(err(&["--deny-response", "icmp"], found).contains("drop"));
        assert!(err(&["--host-network-pods", "sometimes"], found).contains("ignore"));
    }

    #[test]
    fn hubble_tls_follows_ciliums_flags() {
        let r = |extra: &[&str]| {
            let mut args = vec!["--replay-flows", "f"];
            args.extend_from_slice(extra);
            config_of(&args).map(|c| c.hubble.tls)
        };
        assert_eq!(r(&[]).unwrap(), None, "plaintext by default");
        assert_eq!(r(&["--hubble-disable-tls"]).unwrap(), None);
        let tls = r(&[
            "--hubble-tls-cert-file",
            "s.crt",
            "--hubble-tls-key-file",
            "s.key",
            "--hubble-tls-client-ca-files",
            "a.crt,b.crt",
        ])
        .unwrap()
        .expect("TLS on with a certificate");
        assert_eq!(
            tls.client_ca_files,
            [PathBuf::from("a.crt"), PathBuf::from("b.crt")]
        );
        assert!(r(&["--hubble-disable-tls=false"]).is_err(), "TLS required");
        assert!(r(&["--hubble-tls-cert-file", "s.crt"]).is_err(), "no key");
        assert!(
            r(&[
                "--hubble-disable-tls",
                "--hubble-tls-cert-file",
                "s.crt",
                "--hubble-tls-key-file",
                "s.key"
            ])
            .is_err(),
            "off and files"
        );
        assert!(
            r(&[
                "--hubble-disable-tls=false",
                "--hubble-tls-cert-file",
                "s.crt",
                "--hubble-tls-key-file",
                "s.key"
            ])
            .unwrap()
            .is_some()
        );
    }
}
