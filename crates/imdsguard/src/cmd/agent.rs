//! `imdsguard agent`: the node agent's flags, turned into the agent's configuration; the agent
//! itself is the `imdsguard-agent` library. With `--endpoints` (and `--policies`) or a cluster it
//! enforces through the eBPF datapath; with `--replay-flows` it serves recorded flows. Whenever
//! it has a cluster (`--kubeconfig`, or a pod's service account), even with `--replay-flows`,
//! its Hubble Peer service announces the cluster's nodes to Relay.

use anyhow::{Context, Result, bail};
use clap::Args;
use imdsguard_agent::logging::{self, LogArgs};
use imdsguard_agent::{
    AgentConfig, ClusterConfig, EnforceConfig, HubbleConfig, InputSource, ReplayConfig,
};
use imdsguard_hubble_proto::flow::FlowFilter;
use imdsguard_hubble_server::exporter::ExportOptions;
use imdsguard_hubble_server::tls::ServerTlsFiles;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tracing::error;

#[derive(Args, Debug)]
pub struct AgentArgs {
    #[command(flatten)]
    enforce: EnforceArgs,
    #[command(flatten)]
    log: LogArgs,
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
    parsed.with_context(|| format!("--{flag}: expected a FlowFilter JSON object or list, e.g. '{{\"verdict\":[\"DROPPED\"]}}'"))
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
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownVeths {
    Guard,
    Ignore,
}

impl EnforceArgs {
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

fn parse_mark(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("{s:?} is not a mark (a number such as 0xa00)"))
}

/// Go-style durations (`10ms`, `1s`), as Cilium's flags take them.
fn duration(flag: &str, text: &str) -> Result<Duration> {
    let ns = imdsguard_flow::timespec::parse_duration(text)
        .with_context(|| format!("invalid --{flag} {text:?}"))?;
    Ok(Duration::from_nanos(ns.max(0) as u64))
}

/// The agent's configuration from its flags; flag combinations that cannot work are refused
/// here, with what to give instead.
fn config(args: AgentArgs) -> Result<AgentConfig> {
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

pub fn run(args: AgentArgs) -> Result<ExitCode> {
    logging::init(&args.log);
    let result = config(args).and_then(|cfg| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(rt.block_on(imdsguard_agent::run(cfg))?)
    });
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            // In the log's format, so that every line a log pipeline reads parses.
            error!(error = format!("{e:#}"), "the agent stopped");
            Ok(ExitCode::from(2))
        }
    }
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

    fn config_of(args: &[&str]) -> Result<AgentConfig> {
        let cli = Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))?;
        config(cli.agent)
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
