//! The agent against a real API server, measured (scripts/bench-k8s runs it, as root):
//! - pod create → the pod's endpoint entry enforcing in the kernel's map, p50/p99 over 200 pods;
//! - policy apply → every pod of the node at a new policy revision, p50/p99 over 50 applies;
//! - the agent's memory with 10,000 pods in the cluster and 110 on its node.
//!
//! Usage: k8s_bench KUBECONFIG IMDSGUARD_BINARY WORKDIR

use imdsguard_datapath::abi::EP_READY;
use imdsguard_datapath::loader::inspect;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const NODE: &str = "bench-node";

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{what}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms[ms.len() - 1]
    );
}

/// The kernel's endpoint entries: address → (enforcing, policy revision).
fn kernel(bpf: &Path) -> HashMap<IpAddr, (bool, u32)> {
    inspect(bpf)
        .map(|s| {
            s.endpoints
                .into_iter()
                .map(|(ip, e)| (ip, (e.flags & EP_READY != 0, e.generation)))
                .collect()
        })
        .unwrap_or_default()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn pod_json(ns: &str, name: &str, node: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app"}]},
    }))
    .expect("pod")
}

async fn create_running(api: &Api<Pod>, ns: &str, name: &str, node: &str, ip: IpAddr, app: &str) {
    api.create(&PostParams::default(), &pod_json(ns, name, node, app))
        .await
        .expect("create pod");
    let status = json!({"status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
}

fn policy(cidr: &str) -> serde_json::Value {
    json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "bench"},
        "spec": {"endpointSelector": {}, "enableDefaultDeny": {"egress": false, "ingress": false},
                 "egressDeny": [{"toCIDR": [cidr]}]}
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, kubeconfig, binary, work] = &args[..] else {
        eprintln!("usage: k8s_bench KUBECONFIG IMDSGUARD_BINARY WORKDIR");
        std::process::exit(2);
    };
    let work = PathBuf::from(work);
    let bpf = work.join("bpf");
    let client = imdsguard_k8s::cluster::connect(Some(Path::new(kubeconfig)))
        .await
        .expect("client");
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for (_, text) in imdsguard_k8s::manifests::CRDS {
        let crd = serde_saphyr::from_str(text).expect("CRD");
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for i in 0..20 {
        let ns = serde_json::from_value(json!({"metadata": {"name": format!("ns{i}"), "labels": {"team": format!("t{}", i % 4)}}})).expect("ns");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("ns");
    }
    let ccnp = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v2", "CiliumClusterwideNetworkPolicy"),
        "ciliumclusterwidenetworkpolicies",
    );
    let policies: Api<DynamicObject> = Api::all_with(client.clone(), &ccnp);
    let apply = |v: serde_json::Value| {
        let policies = policies.clone();
        async move {
            let obj: DynamicObject = serde_json::from_value(v).expect("policy");
            policies
                .patch(
                    "bench",
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(&obj),
                )
                .await
                .expect("apply");
        }
    };
    apply(policy("10.9.0.0/32")).await;

    let mut agent = Agent(
        Command::new(binary)
            .args(["agent", "--kubeconfig", kubeconfig, "--node-name", NODE])
            .args(["--bpf-root", &bpf.to_string_lossy()])
            .args(["--socket-path", &work.join("api.sock").to_string_lossy()])
            .args(["--hubble-listen-address", "", "--unknown-veths", "ignore"])
            .args(["--proxy-port", "15333"])
            .stderr(std::fs::File::create(work.join("agent.log")).expect("agent log"))
            .spawn()
            .expect("agent"),
    );
    let pid = agent.0.id();
    let start = Instant::now();
    while inspect(&bpf).is_err() && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The baseline: when a plain watch (what any controller sees) gets each pod with its IP.
    let seen: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    {
        let (seen, pods) = (seen.clone(), Api::<Pod>::all(client.clone()));
        let params = kube::api::WatchParams::default().fields(&format!("spec.nodeName={NODE}"));
        let version = pods
            .list_metadata(&kube::api::ListParams::default())
            .await
            .expect("list")
            .metadata
            .resource_version
            .unwrap_or_default();
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut stream = pods.watch(&params, &version).await.expect("watch").boxed();
            while let Some(event) = stream.next().await {
                let (Ok(kube::api::WatchEvent::Added(p)) | Ok(kube::api::WatchEvent::Modified(p))) =
                    event
                else {
                    continue;
                };
                let has_ip = p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some();
                if let (true, Some(name)) = (has_ip, p.metadata.name) {
                    seen.lock()
                        .expect("seen")
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        });
    }

    // Pod create → enforcing in the kernel.
    let mut create_ms = Vec::new();
    let mut watch_ms = Vec::new();
    for i in 0..200u32 {
        let ns = format!("ns{}", i % 20);
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let ip: IpAddr = format!("10.60.{}.{}", i / 250, i % 250 + 1)
            .parse()
            .expect("ip");
        let t0 = Instant::now();
        create_running(
            &api,
            &ns,
            &format!("p{i}"),
            NODE,
            ip,
            &format!("app{}", i % 10),
        )
        .await;
        loop {
            if kernel(&bpf).get(&ip).is_some_and(|(ready, _)| *ready) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "pod {i} never enforced"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        create_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        if let Some(at) = seen.lock().expect("seen").get(&format!("p{i}")) {
            watch_ms.push(at.duration_since(t0).as_secs_f64() * 1e3);
        }
    }
    let mut slowest: Vec<(usize, f64)> = create_ms.iter().copied().enumerate().collect();
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
    eprintln!("slowest pod creates (index, ms): {:?}", &slowest[..5]);
    report(
        "pod create -> endpoint enforcing in the kernel map",
        create_ms,
    );
    if !watch_ms.is_empty() {
        report(
            "baseline: pod create -> a plain watch sees the pod with its IP",
            watch_ms,
        );
    }

    // Policy apply → every pod of the node at a new revision.
    let mut apply_ms = Vec::new();
    for i in 0..50u32 {
        let before = kernel(&bpf);
        let t0 = Instant::now();
        apply(policy(&format!("10.9.{}.{}/32", i / 250, i % 250 + 1))).await;
        loop {
            let now = kernel(&bpf);
            if before
                .iter()
                .all(|(ip, (_, g))| now.get(ip).is_some_and(|(_, n)| n != g))
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "apply {i} never enforced"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        apply_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    report(
        "policy apply -> all 200 pods at the new revision in the kernel",
        apply_ms,
    );

    // Memory: 10,000 pods in the cluster, 110 of them on this node.
    let mut tasks = tokio::task::JoinSet::new();
    let created = Instant::now();
    for chunk in 0..32u32 {
        let client = client.clone();
        tasks.spawn(async move {
            for j in (chunk..9_890).step_by(32) {
                let ns = format!("ns{}", j % 20);
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                let node = format!("node-{}", j % 90);
                let ip: IpAddr = format!("10.70.{}.{}", j / 250, j % 250 + 1)
                    .parse()
                    .expect("ip");
                create_running(
                    &api,
                    &ns,
                    &format!("o{j}"),
                    &node,
                    ip,
                    &format!("app{}", j % 10),
                )
                .await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    // 90 more are deleted from this node's 200, leaving 110.
    for i in 110..200u32 {
        let ns = format!("ns{}", i % 20);
        Api::<Pod>::namespaced(client.clone(), &ns)
            .delete(&format!("p{i}"), &Default::default())
            .await
            .expect("delete");
    }
    eprintln!(
        "created 9,890 pods on other nodes in {:.1} s",
        created.elapsed().as_secs_f64()
    );
    let settle = Instant::now();
    while kernel(&bpf).len() != 110 && settle.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "agent memory, 10,000 pods in the cluster and {} on its node: VmRSS {:.1} MiB, VmHWM (peak) {:.1} MiB",
        kernel(&bpf).len(),
        rss_kib(pid, "VmRSS:") as f64 / 1024.0,
        rss_kib(pid, "VmHWM:") as f64 / 1024.0
    );
    let _ = agent.0.kill();
    // The agent's own account: resolve and write, per change.
    let log = std::fs::read_to_string(work.join("agent.log")).unwrap_or_default();
    // "… in W ms (resolve R ms; inputs read in I ms)"
    let number = |text: &str, after: &str| -> Option<f64> {
        text.split(after).nth(1)?.split(" ms").next()?.parse().ok()
    };
    let writes: Vec<[f64; 3]> = log
        .lines()
        .filter(|l| l.starts_with("datapath: "))
        .filter_map(|l| {
            Some([
                number(l, " ipcache entries in ")?,
                number(l, "(resolve ")?,
                number(l, "inputs read in ")?,
            ])
        })
        .collect();
    for (i, what) in [
        "agent: resolve and write the tables, per change",
        "agent: of which resolve",
        "agent: read the cluster's objects, per change",
    ]
    .iter()
    .enumerate()
    {
        if !writes.is_empty() {
            report(what, writes.iter().map(|w| w[i]).collect());
        }
    }
}
