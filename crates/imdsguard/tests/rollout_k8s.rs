//! Rollout through the Kubernetes API (a private API server per test, docs/kubernetes.md): a
//! Namespace labelled `policy.imdsguard.io/audit-mode=true` puts its pods in audit mode and a
//! policy annotated `policy.imdsguard.io/audit-mode: "true"` is listed as in audit mode, in the
//! agent's status (root: the agent loads its datapath); real pods of a lab, named through the API
//! server, pass as AUDIT under both and `policy whatif` over the agent's flows says what enforcing
//! would break (root); and `policy lint --kubeconfig` finds an audit annotation that the cluster's
//! pods make moot (IG1801, no root).

mod common;

use common::ApiServer;
use imdsguard_netns::unique_name;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
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

/// Server-side applies a CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy.
async fn apply_policy(client: &Client, obj: Value) {
    let kind = obj["kind"].as_str().expect("kind").to_owned();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v2", &kind),
        // ciliumnetworkpolicies, ciliumclusterwidenetworkpolicies
        &kind.to_lowercase().replace("policy", "policies"),
    );
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
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
        common::agent::status(&self.dir.join("bpf"), &self.dir.join("api.sock"))["agent"].clone()
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
    // Root, and one agent test at a time on the machine (the routing guard goes first).
    let Some((serial, routing, _)) = common::agent::agent_test() else {
        return;
    };
    let _guard = (routing, serial);
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
        apply_policy(&client, audited_deny()).await;
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

/// A deny of the metadata address for the pods labelled `app`, in audit mode by annotation when
/// `audit`; namespaced when `namespace` is given.
fn imds_deny(kind: &str, namespace: Option<&str>, name: &str, app: &str, audit: bool) -> Value {
    let mut metadata = json!({"name": name});
    if let Some(ns) = namespace {
        metadata["namespace"] = ns.into();
    }
    if audit {
        metadata["annotations"] = json!({LABEL: "true"});
    }
    json!({
        "apiVersion": "cilium.io/v2", "kind": kind, "metadata": metadata,
        "spec": {
            "endpointSelector": {"matchLabels": {"app": app}},
            "enableDefaultDeny": {"egress": false, "ingress": false},
            "egressDeny": [{"toCIDR": ["169.254.169.254/32"]}]
        }
    })
}

/// The rollout in a cluster, end to end (root): real pods of a lab, named by a private API server,
/// call the stand-in IMDS. The namespace `rollout` is labelled for audit and its pod's deny is an
/// ordinary policy; `shop/api-1`'s deny is a clusterwide policy annotated for audit; `shop/pay-1`'s
/// deny enforces. The first two pass as AUDIT, the third is DROPPED; then `policy whatif` over the
/// agent's flows, with the two audited denies as enforcing candidates, names exactly the two
/// pods' calls as breaking and exits 1 with `--fail-on-break`.
#[test]
fn audited_calls_from_a_cluster_pass_and_whatif_says_what_enforcing_would_break() {
    use common::agent::{Agent, Seen, TempDir, agent_test, flows, show};
    let Some((serial, routing, k)) = agent_test() else {
        return;
    };
    let _guard = (routing, serial);
    let rt = common::runtime();
    let Some(kapi) = ApiServer::start() else {
        return;
    };
    let client = rt.block_on(kapi.client());
    let dir = TempDir(std::env::temp_dir().join(unique_name("rollout-whatif")));
    std::fs::create_dir_all(dir.0.join("candidates")).expect("mkdir");
    let lab = common::lab::Lab::up(
        &dir.0,
        "rw",
        &format!(
            r#"
podCIDR: 10.{k}.37.0/24
namespaces: {{rollout: {{}}, shop: {{}}}}
endpoints:
  - {{name: web-1, namespace: rollout, labels: {{app: web}}}}
  - {{name: api-1, namespace: shop, labels: {{app: api}}}}
  - {{name: pay-1, namespace: shop, labels: {{app: pay}}}}
"#
        ),
    );
    let pods = [
        ("rollout", "web-1", "web"),
        ("shop", "api-1", "api"),
        ("shop", "pay-1", "pay"),
    ];
    for (_, name, _) in pods {
        let record = lab.state().pod(name).expect("lab pod");
        // Nothing is sent before the pod's route to the metadata address is its own eth0.
        let route = imdsguard_netns::run(
            "ip",
            &["-n", &record.netns, "route", "get", "169.254.169.254"],
        )
        .expect("ip route get");
        assert_eq!(
            imdsguard_netns::route_dev(&route).as_deref(),
            Some("eth0"),
            "{route}"
        );
    }
    rt.block_on(async {
        common::install_crds(&client).await;
        namespace(&client, "default", json!({})).await;
        namespace(&client, "rollout", json!({LABEL: "true"})).await;
        namespace(&client, "shop", json!({})).await;
        for (ns, name, app) in pods {
            let ip = lab.state().pod(name).expect("lab pod").ipv4.to_string();
            pod(&client, ns, name, "lab-node", &ip, json!({"app": app})).await;
        }
        let cnp = "CiliumNetworkPolicy";
        let ccnp = "CiliumClusterwideNetworkPolicy";
        apply_policy(
            &client,
            imds_deny(cnp, Some("rollout"), "web-imds", "web", false),
        )
        .await;
        apply_policy(&client, imds_deny(ccnp, None, "api-imds", "api", true)).await;
        apply_policy(
            &client,
            imds_deny(cnp, Some("shop"), "pay-imds", "pay", false),
        )
        .await;
    });

    let bpf = common::agent::BpfRoot(dir.0.join("bpf"));
    std::fs::create_dir_all(&bpf.0).expect("mkdir");
    let bpf_root = bpf.0.to_string_lossy().into_owned();
    let socket = dir.0.join("api.sock").to_string_lossy().into_owned();
    let kubeconfig = kapi.kubeconfig().to_string_lossy().into_owned();
    let cgroup_root = lab
        .state()
        .cgroup_root
        .as_ref()
        .map(|c| c.to_string_lossy().into_owned());
    let proxy_port = (18_000 + std::process::id() % 2000).to_string();
    let mark = format!("{:#x}", imdsguard_lab::lab::LAB_MARK);
    let mut args = vec![
        "--kubeconfig",
        &kubeconfig,
        "--node-name",
        "lab-node",
        "--bpf-root",
        &bpf_root,
        "--socket-path",
        &socket,
        "--hubble-listen-address",
        "127.0.0.1:0",
        "--proxy-port",
        &proxy_port,
        // This machine's other veths are not this test's to guard.
        "--unknown-veths",
        "ignore",
        "--proxy-upstream-mark",
        &mark,
    ];
    if let Some(root) = &cgroup_root {
        args.extend(["--cgroup-root", root]);
    }
    let agent = Agent::start(&args);
    let status = || common::agent::status(&bpf.0, Path::new(&socket))["agent"].clone();
    let start = Instant::now();
    let s = loop {
        let s = status();
        let ready = s["endpoints"].as_array().is_some_and(|e| {
            e.len() == 3
                && e.iter()
                    .all(|e| e["attached"] == true && e["policy"] == "enforcing")
        });
        if ready
            && s["audit_policies"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
        {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the pods were never enforced: {s}\nthe agent:\n{}",
            agent.logged()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(audit_of(&s, "rollout/web-1"), Some(true), "{s}");
    assert_eq!(audit_of(&s, "shop/api-1"), Some(false), "{s}");
    assert_eq!(audit_of(&s, "shop/pay-1"), Some(false), "{s}");
    assert_eq!(
        s["audit_policies"],
        json!(["CiliumClusterwideNetworkPolicy api-imds"])
    );

    // The audited calls reach the metadata service; the enforced one is dropped.
    let instance = "http://169.254.169.254/metadata/instance?api-version=2021-02-01";
    assert_eq!(
        lab.http_status("web-1", instance),
        200,
        "namespace in audit"
    );
    assert_eq!(lab.http_status("api-1", instance), 200, "policy in audit");
    assert_eq!(lab.http_status("pay-1", instance), 0, "enforced deny");
    let verdict_of = |seen: &[Seen], pod: &str| -> Vec<String> {
        let mut v: Vec<String> = seen
            .iter()
            .filter(|f| f.src == pod && f.dst == "169.254.169.254:80")
            .map(|f| f.verdict.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen = flows(&agent);
        if verdict_of(&seen, "rollout/web-1").contains(&"AUDIT".to_owned())
            && verdict_of(&seen, "shop/api-1").contains(&"AUDIT".to_owned())
            && verdict_of(&seen, "shop/pay-1").contains(&"DROPPED".to_owned())
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for (pod, want) in [
        ("rollout/web-1", "AUDIT"),
        ("shop/api-1", "AUDIT"),
        ("shop/pay-1", "DROPPED"),
    ] {
        let got = verdict_of(&seen, pod);
        assert!(
            got.contains(&want.to_owned())
                && !got.iter().any(|v| v == "DROPPED" && want == "AUDIT"),
            "{pod}: {got:?}, want {want}\n{}",
            show(&seen)
        );
    }

    // What enforcing the two audited denies would break: the candidates are the same policies
    // without the annotation (whatif judges annotated candidates as enforced too).
    let candidates = dir.0.join("candidates");
    let yaml = |v: Value| serde_json::to_string_pretty(&v).expect("json");
    std::fs::write(
        candidates.join("web.yaml"),
        yaml(imds_deny(
            "CiliumNetworkPolicy",
            Some("rollout"),
            "web-imds",
            "web",
            false,
        )),
    )
    .expect("write");
    std::fs::write(
        candidates.join("api.yaml"),
        yaml(imds_deny(
            "CiliumClusterwideNetworkPolicy",
            None,
            "api-imds",
            "api",
            true,
        )),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(["policy", "whatif", "--server", &agent.addr])
        .arg(&candidates)
        .arg("--fail-on-break")
        .output()
        .expect("whatif");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "something breaks: exit 1\n{text}{err}"
    );
    let changes: Vec<&str> = text
        .split("Changes:")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("→ DENIED"))
        .collect();
    // Each audited pod: its AUDIT policy-verdicts and the forwarded packets of the same calls.
    for (pod, policy) in [
        ("rollout/web-1", "rollout/web-imds"),
        ("shop/api-1", "api-imds"),
    ] {
        for before in ["allowed", "AUDITED"] {
            let want = format!("{pod} → 169.254.169.254:80: {before} → DENIED ({policy})");
            assert!(changes.iter().any(|l| l.contains(&want)), "{want}\n{text}");
        }
    }
    assert_eq!(changes.len(), 4, "{text}");
    // pay-1's calls were dropped already: nothing of it breaks.
    assert!(!changes.iter().any(|l| l.contains("pay")), "{text}");
    assert!(
        text.contains("Enforcing these policies would deny"),
        "{text}"
    );
    drop(agent);
    drop(bpf);
    lab.down_and_check();
}
