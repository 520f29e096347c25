//! `imdsguard install`: the CRDs (where Cilium's are missing), RBAC and the DaemonSet, applied
//! with server-side apply, or printed with `--dry-run` for `kubectl apply -f -` or GitOps.

use anyhow::{Context, Result};
use clap::Args;
use imdsguard_k8s::manifests::{InstallValues, render};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Print the manifests instead of applying them.
    #[arg(long)]
    dry_run: bool,
    /// The namespace of the DaemonSet and its service account.
    #[arg(short = 'n', long, default_value = "kube-system")]
    namespace: String,
    /// The agent's image: the repository the Helm chart names, tagged with this binary's version
    /// (as scripts/image tags it).
    #[arg(long, default_value_t = InstallValues::default().image)]
    image: String,
    /// Report denied flows as AUDIT and let them pass, on every node.
    #[arg(long)]
    policy_audit_mode: bool,
    #[arg(long, default_value = ":4244")]
    hubble_listen_address: String,
    /// Prometheus metrics address on each node; empty turns metrics off.
    #[arg(long, default_value = ":9965")]
    hubble_metrics_server: String,
    /// Export flows as JSON lines to this path on each node; empty turns the export off.
    #[arg(long, default_value = "")]
    hubble_export_file_path: String,
    /// Also read policies from this directory in the agent's container (a ConfigMap named
    /// imdsguard-policies is mounted there).
    #[arg(long, default_value = "")]
    policy_directory: String,
    /// hostNetwork pods: ignore (as Cilium) or enforce (judged by their cgroups).
    #[arg(long, default_value = "ignore", value_parser = ["ignore", "enforce"])]
    host_network_pods: String,
    /// A denied connect to a metadata address: drop (as Cilium) or reject (fails at once).
    #[arg(long, default_value = "drop", value_parser = ["drop", "reject"])]
    deny_response: String,
    /// Leave Cilium's CRDs out (they are skipped anyway where they exist).
    #[arg(long)]
    skip_crds: bool,
    /// The cluster to install into (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

pub fn run(args: InstallArgs) -> Result<ExitCode> {
    let values = InstallValues {
        namespace: args.namespace.clone(),
        image: args.image.clone(),
        policy_audit_mode: args.policy_audit_mode,
        hubble_listen_address: args.hubble_listen_address.clone(),
        metrics_address: args.hubble_metrics_server.clone(),
        flow_export_path: args.hubble_export_file_path.clone(),
        policy_directory: args.policy_directory.clone(),
        crds: !args.skip_crds,
        host_network_pods: args.host_network_pods.clone(),
        deny_response: args.deny_response.clone(),
    };
    let text = render(&values);
    if args.dry_run {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    super::block_on(apply(&args, &text))??;
    Ok(ExitCode::SUCCESS)
}

/// The documents of a YAML stream, as JSON values.
async fn apply(args: &InstallArgs, text: &str) -> Result<()> {
    let client = imdsguard_k8s::cluster::connect(args.kubeconfig.as_deref())
        .await
        .context("connecting to the cluster (or use --dry-run to print the manifests)")?;
    imdsguard_k8s::apply::apply(&client, text, |line| println!("{line}")).await?;
    Ok(())
}
