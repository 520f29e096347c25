//! Rollout through the Kubernetes API (a private API server per test, docs/kubernetes.md): a
//! Namespace labelled `policy.imdsguard.io/audit-mode=true` puts its pods in audit mode and a
//! policy annotated `policy.imdsguard.io/audit-mode: "true"` is listed as in audit mode, in the
//! agent's status (root: the agent loads its datapath); and `policy lint --kubeconfig` finds an
//! audit annotation that the cluster's pods make moot (IG1801, no root).

mod common;

use common::ApiServer;
use imdsguard_netns::{can_create_namespaces, unique_name};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LABEL: &str = "policy.imdsguard.io/audit-mode";

async fn namespace(client: &Client, name: &str, labels: Value) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("ns");
    let api = Api::<Namespace>::all(client.clone());
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => panic!("create namespace {name}: {e}"),
    }
}

/// Sets (or, with `null`, removes) the audit label of a namespace.
async fn label_namespace(client: &Client, name: &str, value: Value) {
    let patch = json!({"metadata": {"labels": {LABEL: value}}});
    Api::<Namespace>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label namespace");
}

/// A pod as the scheduler and kubelet leave it: on a node, running, with an IP.
async fn pod(client: &Client, ns: &str, name: &str, node: &str, ip: &str, labels: Value) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app"}]},
    }))
    .expect("pod");
    api.create(&PostParams::default(), &p)
        .await
        .expect("create pod");
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status");
}

async fn apply_ccnp(client: &Client, obj: Value) {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v2", "CiliumClusterwideNetworkPolicy"),
        "ciliumclusterwidenetworkpolicies",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let name = obj["metadata"]["name"].as_str().expect("name").to_owned();
    let obj: DynamicObject = serde_json::from_value(obj).expect("object");
    api.patch(
        &name,
        &PatchParams::apply("imdsguard-test").force(),
        &Patch::Apply(&obj),
    )
    .await
    .expect("apply");
}

/// The audited deny of the rollout: IMDS for every pod outside kube-system.
fn audited_deny() -> Value {
    json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "imds-deny-rollout", "annotations": {LABEL: "true"}},
        "spec": {
            "endpointSelector": {"matchExpressions": [{
                "key": "k8s:io.kubernetes.pod.namespace", "operator": "NotIn",
                "values": ["kube-system"]}]},
            "enableDefaultDeny": {"egress": false, "ingress": false},
            "egressDeny": [{"toCIDR": ["169.254.169.254/32"]}]
        }
    })
}

/// A private bpffs and the agent's socket; the agent, SIGKILLed on drop.
struct NodeAgent {
    dir: PathBuf,
    child: Child,
}

impl NodeAgent {
    fn start(kapi: &ApiServer, node: &str) -> NodeAgent {
        let dir = std::env::temp_dir().join(unique_name("rollout"));
        std::fs::create_dir_all(dir.join("bpf")).expect("mkdir");
        let child = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
            .args([
                "agent",
                "--kubeconfig",
                &kapi.kubeconfig().to_string_lossy(),
            ])
            .args(["--node-name", node, "--bpf-root"])
            .arg(dir.join("bpf"))
            .arg("--socket-path")
            .arg(dir.join("api.sock"))
            .args(["--hubble-listen-address", "", "--unknown-veths", "ignore"])
            .args([
                "--proxy-port",
                &(18_000 + std::process::id() % 2000).to_string(),
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("start the agent");
        NodeAgent { dir, child }
    }

    /// The agent's view (`agent` of `imdsguard status -o json`).
    fn status(&self) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
            .args(["status", "-o", "json", "--bpf-root"])
            .arg(self.dir.join("bpf"))
            .arg("--socket-path")
            .arg(self.dir.join("api.sock"))
            .output()
            .expect("status");
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)["agent"].clone()
    }

    fn eventually(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status();
            if f(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting until {what}: {s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let bpf = self.dir.join("bpf");
        let _ = std::fs::remove_dir_all(bpf.join("imdsguard"));
        let _ = imdsguard_netns::run("umount", &[&bpf.to_string_lossy()]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn audit_of(status: &Value, key: &str) -> Option<bool> {
    status["endpoints"]
        .as_array()?
        .iter()
        .find(|e| format!("{}/{}", e["namespace"], e["name"]).replace('"', "") == key)?["audit"]
        .as_bool()
}

#[test]
fn a_namespace_label_and_a_policy_annotation_put_pods_and_policies_in_audit_mode() {
    if !can_create_namespaces() {
        common::skip("needs root (the agent loads its datapath)");
        return;
    }
    let _routing = common::agent::ProxyRouting::take();
    let rt = common::runtime();
    let Some(kapi) = ApiServer::start() else {
        return;
    };
    let client = rt.block_on(kapi.client());
    rt.block_on(async {
        common::install_crds(&client).await;
        namespace(&client, "default", json!({})).await;
        namespace(&client, "rollout", json!({LABEL: "true"})).await;
        namespace(&client, "enforced", json!({})).await;
        pod(
            &client,
            "rollout",
            "web-1",
            "node-a",
            "10.252.0.5",
            json!({"app": "web"}),
        )
        .await;
        pod(
            &client,
            "enforced",
            "api-1",
            "node-a",
            "10.252.0.6",
            json!({"app": "api"}),
        )
        .await;
        apply_ccnp(&client, audited_deny()).await;
    });
    let agent = NodeAgent::start(&kapi, "node-a");
    let s = agent.eventually("both pods are known", |s| {
        s["ready"] == true && s["endpoints"].as_array().is_some_and(|e| e.len() == 2)
    });
    assert_eq!(audit_of(&s, "rollout/web-1"), Some(true), "{s}");
    assert_eq!(audit_of(&s, "enforced/api-1"), Some(false), "{s}");
    assert_eq!(
        s["audit_policies"],
        json!(["CiliumClusterwideNetworkPolicy imds-deny-rollout"]),
        "the annotation reaches the agent: {s}"
    );
    // The label goes: the namespace's pods enforce.
    rt.block_on(label_namespace(&client, "rollout", Value::Null));
    agent.eventually("the namespace enforces", |s| {
        audit_of(s, "rollout/web-1") == Some(false)
    });
    // And comes back on another namespace.
    rt.block_on(label_namespace(&client, "enforced", json!("true")));
    agent.eventually("the other namespace audits", |s| {
        audit_of(s, "enforced/api-1") == Some(true)
    });
}

#[test]
fn lint_finds_an_audit_that_the_clusters_pods_make_moot() {
    let rt = common::runtime();
    let Some(kapi) = ApiServer::start() else {
        return;
    };
    let client = rt.block_on(kapi.client());
    rt.block_on(async {
        namespace(&client, "rollout", json!({LABEL: "true"})).await;
        pod(
            &client,
            "rollout",
            "web-1",
            "node-a",
            "10.252.0.5",
            json!({"app": "web"}),
        )
        .await;
    });
    let dir = std::env::temp_dir().join(unique_name("rollout-lint"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let policy = |name: &str, app: &str| {
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: {name}\n  namespace: rollout\n  annotations: {{{LABEL}: \"true\"}}\nspec:\n  endpointSelector: {{matchLabels: {{app: {app}}}}}\n  enableDefaultDeny: {{egress: false}}\n  egressDeny: [{{toCIDR: [169.254.169.254/32]}}]\n"
        )
    };
    std::fs::write(dir.join("typo.yaml"), policy("deny-typo", "webb")).expect("write");
    std::fs::write(dir.join("web.yaml"), policy("deny-web", "web")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(["policy", "lint", "-o", "json", "--kubeconfig"])
        .arg(kapi.kubeconfig())
        .arg(&dir)
        .output()
        .expect("lint");
    let _ = std::fs::remove_dir_all(&dir);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    let moot: Vec<&Value> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["code"] == "IG1801")
        .collect();
    // The typo selects no pod of the cluster: its audit reports nothing. deny-web selects web-1.
    assert_eq!(moot.len(), 1, "{report}");
    assert_eq!(moot[0]["object"], "CiliumNetworkPolicy rollout/deny-typo");
    assert!(
        moot[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("selects no pod of the cluster"),
        "{}",
        moot[0]
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a warning fails lint by default"
    );
}
