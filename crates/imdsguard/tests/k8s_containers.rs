//! Root test: in Kubernetes mode the agent names the container behind a flow by matching the
//! pod's `status.containerStatuses[].containerID` against the cgroup tree. The pod and its
//! namespace come from a private API server (`common::ApiServer`); its network namespace, veth and
//! the stand-in IMDS behind 169.254.169.254 from a lab (reachable only from the lab's namespaces);
//! its containers are cgroups of the systemd driver's shape, made by the test below a cgroup of
//! its own, which is also the agent's `--cgroup-root`. Real clients run in those cgroups and the
//! flows are read back with `imdsguard observe -o json`. Everything is removed on drop.

mod common;

use common::ApiServer;
use common::agent::{Agent, BpfRoot, Seen, TempDir, agent_test, flows, show, status};
use common::lab::Lab;
use imdsguard_lab::lab::{self, LabState};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IMDS: &str = "169.254.169.254";
const INSTANCE: &str = "http://169.254.169.254/metadata/instance?api-version=2021-02-01";

/// A cgroup subtree of the test's own below the host's cgroup v2 root: every process in it (all
/// started by the test) is ended and the directories removed on drop.
struct CgroupTree(PathBuf);

impl Drop for CgroupTree {
    fn drop(&mut self) {
        for problem in imdsguard_lab::cgroups::remove_tree(&self.0) {
            eprintln!("cgroup cleanup: {problem}");
        }
    }
}

/// A 64-hex-digit container ID, unique to this run.
fn container_id(tag: u8) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{tag:02x}{:06x}{nanos:08x}", std::process::id() & 0xff_ffff).repeat(4)
}

fn wait_until<T>(agent: &Agent, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "timed out waiting until {what}; the agent logged:\n{}",
        agent.logged()
    );
}

/// `envoy` (the lab's alias of curl, so that its process is named so) inside the pod's network
/// namespace and the container's cgroup, joined before `ip netns exec`. Its HTTP status and pid.
fn get_in(state: &LabState, netns: &str, cgroup: &Path) -> (String, u32) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "envoy", "-s", "-o", "/dev/null"])
        .args([
            "-w",
            "%{http_code}",
            "--connect-timeout",
            "2",
            "--max-time",
            "4",
        ])
        .args(["-H", "Metadata: true", INSTANCE]);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(state.bin_dir()).chain(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(dirs).expect("PATH"));
    imdsguard_lab::cgroups::join(&mut cmd, cgroup).expect("join the container's cgroup");
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("client");
    // `ip netns exec` executes the client in place: the pid is the client's.
    let pid = child.id();
    let out = child.wait_with_output().expect("client");
    (String::from_utf8_lossy(&out.stdout).into_owned(), pid)
}

#[test]
fn the_agent_names_the_container_of_a_pod_from_its_container_statuses() {
    // The routing guard goes before the lock is released (a tuple drops in order).
    let Some((serial, routing, k)) = agent_test() else {
        return;
    };
    let _guard = (routing, serial);
    let Some(v2) = imdsguard_lab::cgroups::v2_root() else {
        common::skip("no cgroup v2 hierarchy for the pod's containers");
        return;
    };
    let rt = common::runtime();
    let Some(kapi) = ApiServer::start() else {
        return;
    };
    let client = rt.block_on(kapi.client());
    let dir = TempDir(std::env::temp_dir().join(imdsguard_netns::unique_name("k8sct")));
    std::fs::create_dir_all(&dir.0).expect("mkdir");

    // The pod's network: a namespace with a veth routed from the host, and the lab's stand-in
    // IMDS behind 169.254.169.254 for the lab's namespaces only.
    let topology = format!(
        r#"
podCIDR: 10.{k}.36.0/24
namespaces: {{shop: {{}}}}
aliases: {{envoy: curl}}
endpoints:
  - {{name: webapp, namespace: shop, labels: {{app: webapp}}}}
"#
    );
    let lab = Lab::up(&dir.0, "kc", &topology);
    let webapp = lab.state().pod("webapp").expect("webapp").clone();
    let pod_ip = webapp.ipv4.to_string();
    // Nothing is sent before the namespace's route to the metadata address is the pod's eth0.
    let route = imdsguard_netns::run("ip", &["-n", &webapp.netns, "route", "get", IMDS])
        .expect("ip route get");
    assert_eq!(
        imdsguard_netns::route_dev(&route).as_deref(),
        Some("eth0"),
        "{route}"
    );

    // The Pod as the kubelet reports it: running, with an address and two containers' IDs.
    let (proxy_id, app_id) = (container_id(1), container_id(2));
    let uid = rt.block_on(async {
        common::install_crds(&client).await;
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "shop"}})).expect("ns");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "webapp", "namespace": "shop", "labels": {"app": "webapp"}},
            "spec": {"nodeName": "lab-node",
                     "containers": [{"name": "app", "image": "app"},
                                    {"name": "istio-proxy", "image": "proxyv2"}]},
        }))
        .expect("pod");
        let created = pods
            .create(&PostParams::default(), &p)
            .await
            .expect("create pod");
        let uid = created.metadata.uid.expect("the server assigns a uid");
        let running = |name: &str, image: &str, id: &str| {
            json!({"name": name, "image": image, "imageID": "", "ready": true,
                   "restartCount": 0, "started": true,
                   "containerID": format!("containerd://{id}"),
                   "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}})
        };
        let status = json!({"status": {
            "phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
            "containerStatuses": [running("app", "app", &app_id),
                                  running("istio-proxy", "proxyv2", &proxy_id)]}});
        pods.patch_status("webapp", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("pod status");
        // A decision on the flow, so that it is reported.
        let cnp = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("cilium.io", "v2", "CiliumNetworkPolicy"),
            "ciliumnetworkpolicies",
        );
        let policy: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "webapp-imds", "namespace": "shop"},
            "spec": {"endpointSelector": {"matchLabels": {"app": "webapp"}},
                     "egress": [{"toCIDR": [format!("{IMDS}/32")],
                                 "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}
        }))
        .expect("policy");
        Api::<DynamicObject>::namespaced_with(client.clone(), "shop", &cnp)
            .patch(
                "webapp-imds",
                &PatchParams::apply("imdsguard-test").force(),
                &Patch::Apply(&policy),
            )
            .await
            .expect("apply policy");
        uid
    });

    // The containers' cgroups, as the kubelet's systemd driver and containerd name them.
    let cgroups = CgroupTree(v2.join(imdsguard_netns::unique_name("imdsguard-k8sct")));
    let pod_dir = cgroups
        .0
        .join("kubepods.slice/kubepods-besteffort.slice")
        .join(format!(
            "kubepods-besteffort-pod{}.slice",
            uid.replace('-', "_")
        ));
    let proxy_cg = pod_dir.join(format!("cri-containerd-{proxy_id}.scope"));
    let app_cg = pod_dir.join(format!("cri-containerd-{app_id}.scope"));
    for d in [&proxy_cg, &app_cg] {
        std::fs::create_dir_all(d).expect("mkdir cgroup");
    }

    let bpf = BpfRoot(dir.0.join("bpf"));
    std::fs::create_dir_all(&bpf.0).expect("mkdir");
    let bpf_root = bpf.0.to_string_lossy().into_owned();
    let socket = dir.0.join("api.sock").to_string_lossy().into_owned();
    let proxy_port = (18_000 + std::process::id() % 2000).to_string();
    let kubeconfig = kapi.kubeconfig().to_string_lossy().into_owned();
    let cgroup_root = cgroups.0.to_string_lossy().into_owned();
    let mark = format!("{:#x}", lab::LAB_MARK);
    let agent = Agent::start(&[
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
        "--cgroup-root",
        &cgroup_root,
        // This machine's other veths are not this test's to guard.
        "--unknown-veths",
        "ignore",
        "--proxy-upstream-mark",
        &mark,
    ]);
    let named = wait_until(
        &agent,
        "the pod is enforced and its containers named by cgroup",
        || {
            let s = status(Path::new(&bpf_root), Path::new(&socket));
            let ep = s["agent"]["endpoints"]
                .as_array()?
                .iter()
                .find(|e| e["namespace"] == "shop" && e["name"] == "webapp")?
                .clone();
            let containers = s["agent"]["cgroups"]["containers"].as_array()?.clone();
            (ep["attached"] == true && ep["policy"] == "enforcing" && containers.len() == 2)
                .then_some(containers)
        },
    );
    for c in ["istio-proxy", "app"] {
        assert!(
            named
                .iter()
                .any(|n| n["endpoint"] == "shop/webapp" && n["container"] == c),
            "{named:?}"
        );
    }

    let (code, proxy_pid) = wait_until(&agent, "the sidecar reaches the metadata service", || {
        let got = get_in(lab.state(), &webapp.netns, &proxy_cg);
        (got.0 == "200").then_some(got)
    });
    assert_eq!(code, "200");
    let (app_code, app_pid) = get_in(lab.state(), &webapp.netns, &app_cg);
    assert_eq!(app_code, "200");

    let to_imds = format!("{IMDS}:80");
    let from_pod = |f: &Seen| f.src == "shop/webapp" && f.dst == to_imds;
    let mut last = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        last = flows(&agent);
        let has = |pid: u32| last.iter().any(|f| from_pod(f) && f.pid == u64::from(pid));
        if has(proxy_pid) && has(app_pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let by = |pid: u32| -> Vec<&Seen> {
        last.iter()
            .filter(|f| from_pod(f) && f.pid == u64::from(pid))
            .collect()
    };
    let (proxy, app) = (by(proxy_pid), by(app_pid));
    assert!(
        !proxy.is_empty() && !app.is_empty(),
        "no flows of both clients; the flows:\n{}\nthe agent:\n{}",
        show(&last),
        agent.logged()
    );
    for f in &proxy {
        assert_eq!(
            (f.container.as_str(), f.process.as_str()),
            ("istio-proxy", "envoy"),
            "{}",
            f.json
        );
    }
    for f in &app {
        assert_eq!(
            (f.container.as_str(), f.process.as_str()),
            ("app", "envoy"),
            "{}",
            f.json
        );
    }
    eprintln!(
        "{} flow(s) to IMDS named istio-proxy/envoy[{proxy_pid}], {} named app/envoy[{app_pid}]",
        proxy.len(),
        app.len()
    );
    drop(agent);
    drop(bpf);
    let root = cgroups.0.clone();
    drop(cgroups);
    assert!(!root.exists(), "cgroup {} left", root.display());
}
