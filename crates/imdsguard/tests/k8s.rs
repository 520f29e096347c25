//! The agent against a real Kubernetes API server (a private one per test, see docs/kubernetes.md:
//! `IMDSGUARD_TEST_APISERVER` or `KUBEBUILDER_ASSETS`), with objects created through kube-rs. Root:
//! the agent writes its real datapath (pinned under a private bpffs). What the agent computes is
//! read through its API (`imdsguard status -o json`), and traces ask its live engine.

mod common;

use common::ApiServer;
use common::lab::Lab;
use imdsguard_netns::{can_create_namespaces, unique_name};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One agent at a time: they share the proxy's ip rule.
static SERIAL: Mutex<()> = Mutex::new(());

/// A private bpffs for the agent's pins, and the agent's socket, removed on drop.
struct Node {
    dir: PathBuf,
}

impl Node {
    fn new() -> Node {
        let dir = std::env::temp_dir().join(unique_name("k8snode"));
        std::fs::create_dir_all(dir.join("bpf")).expect("mkdir");
        Node { dir }
    }

    fn bpf_root(&self) -> String {
        self.dir.join("bpf").to_string_lossy().into_owned()
    }

    fn socket(&self) -> String {
        self.dir.join("api.sock").to_string_lossy().into_owned()
    }

    /// `imdsguard status -o json`: the agent's view (`agent`) and the kernel's (the rest).
    fn status(&self) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
            .args(["status", "-o", "json", "--bpf-root", &self.bpf_root()])
            .args(["--socket-path", &self.socket()])
            .output()
            .expect("status");
        // Null until the agent has pinned its maps.
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The agent's live verdict for one flow.
    fn trace(&self, src: &str, dst: &str, dport: u16) -> Value {
        let mut s = std::os::unix::net::UnixStream::connect(self.socket()).expect("api socket");
        use std::io::{Read, Write};
        write!(
            s,
            "GET /v1/policy/trace?src={src}&dst={dst}&dport={dport} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("read");
        let json = body.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(json).unwrap_or_else(|e| panic!("trace answer {body:?}: {e}"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let bpf = self.dir.join("bpf");
        let _ = std::fs::remove_dir_all(bpf.join("imdsguard"));
        let _ = imdsguard_netns::run("umount", &[&bpf.to_string_lossy()]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The agent process; SIGKILLed on drop.
struct Agent {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    fn start(kapi: &ApiServer, node: &Node, node_name: &str) -> Agent {
        // This machine's other veths are not this test's to guard.
        Agent::start_with(kapi, node, node_name, &["--unknown-veths", "ignore"])
    }

    fn start_with(kapi: &ApiServer, node: &Node, node_name: &str, extra: &[&str]) -> Agent {
        let proxy_port = (16_000 + std::process::id() % 2000).to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
            .args([
                "agent",
                "--kubeconfig",
                &kapi.kubeconfig().to_string_lossy(),
            ])
            .args(["--node-name", node_name, "--bpf-root", &node.bpf_root()])
            .args([
                "--socket-path",
                &node.socket(),
                "--hubble-listen-address",
                "",
            ])
            .args(["--proxy-port", &proxy_port])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        let log = common::stderr_lines(&mut child);
        Agent { child, log }
    }

    fn logged(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn eventually<T>(agent: &Agent, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "timed out waiting until {what}; the agent logged:\n{}",
        agent.logged()
    );
}

fn cilium(kind: &str, version: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("cilium.io", version, kind), plural)
}

async fn namespace(client: &Client, name: &str, labels: Value) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("ns");
    let api = Api::<Namespace>::all(client.clone());
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        // kube-apiserver (KUBEBUILDER_ASSETS) makes default and kube-system itself.
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let patch = json!({"metadata": {"labels": ns.metadata.labels}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("label namespace");
        }
        Err(e) => panic!("create namespace {name}: {e}"),
    }
}

/// A pod as the scheduler and kubelet leave it: on a node, running, with an IP.
async fn pod(client: &Client, ns: &str, name: &str, node: &str, ip: &str, labels: Value) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "serviceAccountName": format!("{name}-sa"),
                 "containers": [{"name": "app", "image": "app"}]},
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

async fn apply(client: &Client, ar: &ApiResource, ns: Option<&str>, obj: Value) {
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
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

fn ccnp() -> ApiResource {
    cilium(
        "CiliumClusterwideNetworkPolicy",
        "v2",
        "ciliumclusterwidenetworkpolicies",
    )
}

/// The seed's CIDR group: IMDS's address.
async fn imds_group(client: &Client) {
    let ccg = cilium("CiliumCIDRGroup", "v2alpha1", "ciliumcidrgroups");
    let group = json!({
        "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumCIDRGroup",
        "metadata": {"name": "azure-imds"},
        "spec": {"externalCIDRs": ["169.254.169.254/32"]}
    });
    apply(client, &ccg, None, group).await;
}

fn deny_imds(except: &[&str]) -> Value {
    json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "azure-imds-deny"},
        "spec": {
            "endpointSelector": {"matchExpressions": [{
                "key": "k8s:io.kubernetes.pod.namespace", "operator": "NotIn", "values": except}]},
            "enableDefaultDeny": {"egress": false, "ingress": false},
            "egressDeny": [{"toCIDRSet": [{"cidrGroupRef": "azure-imds"}]}]
        }
    })
}

fn endpoint<'a>(status: &'a Value, key: &str) -> Option<&'a Value> {
    status["agent"]["endpoints"].as_array()?.iter().find(|e| {
        format!(
            "{}/{}",
            e["namespace"].as_str().unwrap_or_default(),
            e["name"].as_str().unwrap_or_default()
        ) == key
    })
}

/// The kernel's endpoint entry for an address: its identity.
fn map_identity(status: &Value, ip: &str) -> Option<u64> {
    status["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["ip"] == ip)
        .and_then(|e| e["identity"].as_u64())
}

fn verdict(trace: &Value) -> String {
    trace["verdict"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn the_agent_follows_pods_namespaces_and_policies_from_the_api_server() {
    if !can_create_namespaces() {
        common::skip("needs root (the agent loads its datapath)");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _routing = common::agent::ProxyRouting::take();
    let rt = common::runtime();
    let Some(kapi) = ApiServer::start() else {
        return;
    };
    let client = rt.block_on(kapi.client());
    let ccnp = ccnp();
    rt.block_on(async {
        common::install_crds(&client).await;
        // kapilite has no namespace controller to create `default`, where Events of
        // cluster-scoped objects go.
        namespace(&client, "default", json!({})).await;
        namespace(&client, "go-webapp", json!({"team": "web"})).await;
        namespace(&client, "logging", json!({"team": "observability"})).await;
        pod(
            &client,
            "go-webapp",
            "web-1",
            "node-a",
            "10.251.0.5",
            json!({"app": "web"}),
        )
        .await;
        pod(
            &client,
            "logging",
            "fluent-bit-1",
            "node-a",
            "10.251.0.6",
            json!({"app": "fluent-bit"}),
        )
        .await;
        pod(
            &client,
            "go-webapp",
            "web-elsewhere",
            "node-b",
            "10.251.1.5",
            json!({"app": "web"}),
        )
        .await;
        imds_group(&client).await;
        apply(&client, &ccnp, None, deny_imds(&["kube-system", "logging"])).await;
    });

    let node = Node::new();
    let agent = Agent::start(&kapi, &node, "node-a");
    let status = eventually(
        &agent,
        "the agent is ready with both pods of node-a",
        || {
            let s = node.status();
            (s["agent"]["ready"] == true && s["agent"]["endpoints"].as_array()?.len() == 2)
                .then_some(s)
        },
    );
    // Pods of other nodes are not endpoints here.
    assert!(endpoint(&status, "go-webapp/web-elsewhere").is_none());
    let web = endpoint(&status, "go-webapp/web-1").expect("web-1");
    let labels: Vec<&str> = web["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for l in [
        "k8s:app=web",
        "k8s:io.kubernetes.pod.namespace=go-webapp",
        "k8s:io.cilium.k8s.policy.serviceaccount=web-1-sa",
        "k8s:io.cilium.k8s.namespace.labels.team=web",
    ] {
        assert!(labels.contains(&l), "{l} not in {labels:?}");
    }
    assert_eq!(web["policy"], "enforcing");
    // The kernel holds the same identity for the pod's address.
    assert_eq!(
        map_identity(&status, "10.251.0.5"),
        web["identity"].as_u64()
    );
    assert_eq!(
        verdict(&node.trace("go-webapp/web-1", "169.254.169.254", 80)),
        "DENIED"
    );
    assert_eq!(
        verdict(&node.trace("logging/fluent-bit-1", "169.254.169.254", 80)),
        "ALLOWED"
    );

    // A policy edit: go-webapp joins the exceptions.
    rt.block_on(apply(
        &client,
        &ccnp,
        None,
        deny_imds(&["kube-system", "logging", "go-webapp"]),
    ));
    eventually(&agent, "the edit is in force", || {
        (verdict(&node.trace("go-webapp/web-1", "169.254.169.254", 80)) == "ALLOWED").then_some(())
    });

    // An invalid edit is reported, as an Event too, and the last good version stays.
    let mut bad = deny_imds(&["kube-system"]);
    bad["spec"]["egressDeny"][0]["toPorts"] =
        json!([{"ports": [{"port": "99999", "protocol": "TCP"}]}]);
    rt.block_on(apply(&client, &ccnp, None, bad));
    let status = eventually(&agent, "the invalid policy is reported", || {
        let s = node.status();
        (!s["agent"]["policy_errors"].as_array()?.is_empty()).then_some(s)
    });
    let error = status["agent"]["policy_errors"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("CiliumClusterwideNetworkPolicy/azure-imds-deny"),
        "{error}"
    );
    assert!(
        error.contains("spec.egressDeny[0].toPorts[0].ports[0].port"),
        "{error}"
    );
    assert_eq!(
        verdict(&node.trace("go-webapp/web-1", "169.254.169.254", 80)),
        "ALLOWED"
    );
    let events = eventually(&agent, "a Warning Event names the policy", || {
        let list = rt
            .block_on(Api::<Event>::namespaced(client.clone(), "default").list(&Default::default()))
            .ok()?;
        let found: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("azure-imds-deny"))
            .collect();
        (!found.is_empty()).then_some(found)
    });
    assert_eq!(events[0].reason.as_deref(), Some("PolicyInvalid"));
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    assert!(
        events[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("toPorts")
    );
    rt.block_on(apply(
        &client,
        &ccnp,
        None,
        deny_imds(&["kube-system", "logging"]),
    ));
    eventually(&agent, "the fixed policy is in force", || {
        let s = node.status();
        (s["agent"]["policy_errors"].as_array()?.is_empty()
            && verdict(&node.trace("go-webapp/web-1", "169.254.169.254", 80)) == "DENIED")
            .then_some(())
    });

    // Pod IP reuse: a new pod gets web-1's address before web-1's deletion is seen. The
    // address belongs to the new pod, with the new pod's identity, in the engine and the kernel.
    std::thread::sleep(Duration::from_millis(1100)); // creation times have one-second steps
    rt.block_on(pod(
        &client,
        "go-webapp",
        "api-1",
        "node-a",
        "10.251.0.5",
        json!({"app": "api"}),
    ));
    let status = eventually(&agent, "the reused address moves to the new pod", || {
        let s = node.status();
        endpoint(&s, "go-webapp/api-1").map(|_| s.clone())
    });
    let api_identity = endpoint(&status, "go-webapp/api-1").unwrap()["identity"].as_u64();
    assert_ne!(api_identity, web["identity"].as_u64());
    assert!(
        endpoint(&status, "go-webapp/web-1").is_none(),
        "web-1 kept the address"
    );
    assert_eq!(map_identity(&status, "10.251.0.5"), api_identity);
    rt.block_on(async {
        Api::<Pod>::namespaced(client.clone(), "go-webapp")
            .delete("web-1", &DeleteParams::default())
            .await
            .expect("delete web-1")
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = node.status();
    assert_eq!(
        map_identity(&status, "10.251.0.5"),
        api_identity,
        "web-1's deletion removed api-1's entry"
    );

    // A deleted namespace: its pods lose the namespace's labels (as in Cilium), and once the
    // namespace controller has removed them they are gone from the engine and the kernel.
    rt.block_on(async {
        Api::<Namespace>::all(client.clone())
            .delete("logging", &DeleteParams::default())
            .await
            .expect("delete namespace")
    });
    eventually(&agent, "fluent-bit lost the namespace labels", || {
        let s = node.status();
        let labels = endpoint(&s, "logging/fluent-bit-1")?["labels"].clone();
        (!labels.to_string().contains("namespace.labels.team")).then_some(())
    });
    rt.block_on(async {
        Api::<Pod>::namespaced(client.clone(), "logging")
            .delete("fluent-bit-1", &DeleteParams::default())
            .await
            .expect("delete pod")
    });
    eventually(&agent, "fluent-bit is gone", || {
        let s = node.status();
        (endpoint(&s, "logging/fluent-bit-1").is_none() && map_identity(&s, "10.251.0.6").is_none())
            .then_some(())
    });
}

#[test]
fn an_api_outage_keeps_enforcement_and_a_restarted_agent_waits_for_a_full_view() {
    if !can_create_namespaces() {
        common::skip("needs root (the agent loads its datapath)");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _routing = common::agent::ProxyRouting::take();
    let rt = common::runtime();
    let Some(kapi) = ApiServer::start() else {
        return;
    };
    let client = rt.block_on(kapi.client());
    let ccnp = ccnp();
    rt.block_on(async {
        common::install_crds(&client).await;
        namespace(&client, "go-webapp", json!({})).await;
        pod(
            &client,
            "go-webapp",
            "web-1",
            "node-a",
            "10.252.0.5",
            json!({"app": "web"}),
        )
        .await;
        imds_group(&client).await;
        apply(&client, &ccnp, None, deny_imds(&["kube-system"])).await;
    });
    drop(client);
    let node = Node::new();
    // Policies shipped as files (the chart's ConfigMap) count next to the cluster's.
    let files = node.dir.join("policies");
    std::fs::create_dir_all(&files).expect("mkdir");
    std::fs::write(
        files.join("extra.yaml"),
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: from-a-file}\nspec:\n  endpointSelector: {}\n  enableDefaultDeny: {egress: false}\n  egressDeny: [{toCIDR: [10.9.9.9/32]}]\n",
    )
    .expect("policy file");
    let mut agent = Agent::start_with(
        &kapi,
        &node,
        "node-a",
        &[
            "--unknown-veths",
            "ignore",
            "--policies",
            &files.to_string_lossy(),
        ],
    );
    eventually(&agent, "the agent is ready", || {
        let s = node.status();
        (s["agent"]["ready"] == true && endpoint(&s, "go-webapp/web-1").is_some()).then_some(())
    });
    assert_eq!(
        verdict(&node.trace("go-webapp/web-1", "10.9.9.9", 443)),
        "DENIED"
    );
    assert_eq!(
        verdict(&node.trace("go-webapp/web-1", "10.9.9.8", 443)),
        "ALLOWED"
    );

    // The API server goes away in the middle of the watch.
    kapi.down();
    eventually(&agent, "the watches report the outage", || {
        let s = node.status();
        let failing = s["agent"]["watches"]
            .as_array()?
            .iter()
            .any(|w| w["errors"].as_u64() > Some(0));
        failing.then_some(())
    });
    assert_eq!(
        verdict(&node.trace("go-webapp/web-1", "169.254.169.254", 80)),
        "DENIED"
    );

    // A crashed agent restarted during the outage leaves the pinned state alone until it has a
    // complete view again.
    drop(agent);
    let before = node.status();
    let identity = map_identity(&before, "10.252.0.5").expect("the kernel still has web-1");
    agent = Agent::start(&kapi, &node, "node-a");
    eventually(&agent, "the new agent answers, not ready", || {
        let s = node.status();
        (s["agent"]["ready"] == false).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(map_identity(&node.status(), "10.252.0.5"), Some(identity));

    // The API server returns; the agent lists again and follows new events.
    kapi.up();
    let client = rt.block_on(kapi.client());
    eventually(&agent, "the agent is ready again", || {
        (node.status()["agent"]["ready"] == true).then_some(())
    });
    rt.block_on(pod(
        &client,
        "go-webapp",
        "web-2",
        "node-a",
        "10.252.0.7",
        json!({"app": "web"}),
    ));
    eventually(
        &agent,
        "the pod created after the outage is enforced",
        || {
            let s = node.status();
            (endpoint(&s, "go-webapp/web-2")?["policy"] == "enforcing"
                && map_identity(&s, "10.252.0.7").is_some())
            .then_some(())
        },
    );
    assert_eq!(map_identity(&node.status(), "10.252.0.5"), Some(identity));
}

#[test]
fn the_lab_enforces_pods_and_policies_that_come_from_the_api_server() {
    if !can_create_namespaces() {
        common::skip("needs root (the lab and the datapath)");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _routing = common::agent::ProxyRouting::take();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let examples = repo.join("examples/azure-imds");
    let text = std::fs::read_to_string(examples.join("lab.yaml")).expect("lab.yaml");
    let topology =
        imdsguard_lab::topology::parse(&imdsguard_manifest::Source::new("lab.yaml", text))
            .expect("topology");
    let rt = common::runtime();
    let Some(kapi) = ApiServer::start() else {
        return;
    };
    let client = rt.block_on(kapi.client());
    let node = Node::new();
    let lab = Lab::up_parsed(&node.dir, "kl", &topology, 0xa00);
    let alloy = lab
        .state()
        .pods
        .iter()
        .find(|p| p.namespace == "grafana-alloy")
        .expect("alloy")
        .clone();
    let create_pod = |name: &str| {
        let record = lab.state().pod(name).expect("lab pod");
        let spec = &topology
            .pods
            .iter()
            .find(|p| p.endpoint.spec.name == name)
            .expect("topology pod")
            .endpoint
            .spec;
        let labels: serde_json::Map<String, Value> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        rt.block_on(pod(
            &client,
            &record.namespace,
            name,
            "lab-node",
            &record.ipv4.to_string(),
            Value::Object(labels),
        ));
    };
    rt.block_on(async {
        common::install_crds(&client).await;
        for (ns, _) in &topology.namespaces {
            namespace(&client, ns, json!({})).await;
        }
        for file in [
            "cidrgroup.yaml",
            "azure-imds-deny.yaml",
            "azure-imds-allow.yaml",
        ] {
            let text = std::fs::read_to_string(examples.join(file)).expect("policy");
            let obj: Value = serde_saphyr::from_str(&text).expect("policy YAML");
            let (kind, plural) = match obj["kind"].as_str() {
                Some("CiliumCIDRGroup") => ("CiliumCIDRGroup", "ciliumcidrgroups"),
                _ => (
                    "CiliumClusterwideNetworkPolicy",
                    "ciliumclusterwidenetworkpolicies",
                ),
            };
            let version = obj["apiVersion"].as_str().unwrap_or("cilium.io/v2");
            let version = version.trim_start_matches("cilium.io/");
            apply(&client, &cilium(kind, version, plural), None, obj.clone()).await;
        }
    });
    // Every pod is in the API but Alloy: its veth exists, its Pod object has not come yet.
    for p in lab.state().pods.iter().filter(|p| p.name != alloy.name) {
        create_pod(&p.name);
    }
    let agent = Agent::start_with(
        &kapi,
        &node,
        "lab-node",
        &["--unknown-veths", "guard", "--proxy-upstream-mark", "0xa00"],
    );
    let known = lab.state().pods.len() - 1;
    eventually(
        &agent,
        "every known pod is enforced and Alloy's veth guarded",
        || {
            let s = node.status();
            let eps = s["agent"]["endpoints"].as_array()?;
            let guarded = s["agent"]["guarded_interfaces"].to_string();
            (eps.len() == known
                && eps
                    .iter()
                    .all(|e| e["attached"] == true && e["policy"] == "enforcing")
                && guarded.contains(&format!("\"{}\"", alloy.netns)))
            .then_some(())
        },
    );
    let instance = "http://169.254.169.254/metadata/instance?api-version=2021-02-01";
    let token = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F";
    // The seed: go-webapp (its sidecar) is denied; Fluent Bit gets its token through the proxy.
    assert_eq!(lab.http_status("go-webapp-847857f68-2qlnd", instance), 0);
    assert_eq!(lab.http_status("fluent-bit-qg7vq", token), 200);
    // A pod the agent has not heard of cannot reach IMDS: its veth is guarded.
    assert_eq!(lab.http_status(&alloy.name, instance), 0);
    // Once its Pod object arrives, its namespace's exception applies.
    create_pod(&alloy.name);
    eventually(&agent, "Alloy is enforced", || {
        let s = node.status();
        (endpoint(&s, &format!("grafana-alloy/{}", alloy.name))?["attached"] == true).then_some(())
    });
    assert_eq!(lab.http_status(&alloy.name, instance), 200);
    drop(agent);
}

#[test]
fn policy_lint_checks_namespaces_against_a_live_cluster() {
    let rt = common::runtime();
    let Some(kapi) = ApiServer::start() else {
        return;
    };
    let client = rt.block_on(kapi.client());
    rt.block_on(async {
        for ns in ["kube-system", "logging", "go-webapp"] {
            namespace(&client, ns, json!({})).await;
        }
    });
    let deny = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/azure-imds/azure-imds-deny.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(["policy", "lint", "-o", "json", "--kubeconfig"])
        .arg(kapi.kubeconfig())
        .arg(&deny)
        .output()
        .expect("lint");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let unknown: Vec<String> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["code"] == "IG1701")
        .map(|f| f["message"].to_string())
        .collect();
    // The cluster has no grafana-alloy namespace: the exception names nothing.
    assert_eq!(unknown.len(), 1, "{report}");
    assert!(unknown[0].contains("grafana-alloy"), "{unknown:?}");
}
