//! `imdsguard install`: the CRDs (where Cilium's are missing), RBAC and the DaemonSet, applied
//! with server-side apply, or printed with `--dry-run` for `kubectl apply -f -` or GitOps.

use anyhow::{Context, Result, bail};
use clap::Args;
use imdsguard_k8s::manifests::{InstallValues, render};
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
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
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line == "---" {
            let has_content = current
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
            if has_content {
                let doc: serde_json::Value = serde_saphyr::from_str(&current)
                    .with_context(|| format!("parsing a manifest:\n{current}"))?;
                docs.push(doc);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    Ok(docs)
}

async fn apply(args: &InstallArgs, text: &str) -> Result<()> {
    let client = imdsguard_k8s::cluster::connect(args.kubeconfig.as_deref())
        .await
        .context("connecting to the cluster (or use --dry-run to print the manifests)")?;
    for doc in documents(text)? {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, &kind);
        let (ar, caps) = kube::discovery::pinned_kind(&client, &gvk)
            .await
            .with_context(|| {
                format!("the API server does not serve {api_version} {kind} (needed for {name})")
            })?;
        let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
            Some(ns) if caps.scope == kube::discovery::Scope::Namespaced => {
                Api::namespaced_with(client.clone(), ns, &ar)
            }
            _ => Api::all_with(client.clone(), &ar),
        };
        let what = format!("{}.{}/{name}", ar.plural, ar.group)
            .replace("./", "/")
            .to_lowercase();
        if kind == "CustomResourceDefinition" && api.get_opt(&name).await?.is_some() {
            // Cilium's own (or an earlier install's): never replaced.
            println!("{what} unchanged (exists; left as it is)");
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(doc.clone())
            .with_context(|| format!("{what}: not a Kubernetes object"))?;
        match api
            .patch(
                &name,
                &PatchParams::apply("imdsguard-install").force(),
                &Patch::Apply(&obj),
            )
            .await
        {
            Ok(_) => println!("{what} serverside-applied"),
            Err(e) => bail!("applying {what}: {e}"),
        }
    }
    Ok(())
}
