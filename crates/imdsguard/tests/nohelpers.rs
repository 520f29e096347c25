//! The agent needs only its binary and the kernel: routes, rules, neighbours and links go through
//! rtnetlink, the datapath through bpf(2), and no program (`ip`, `bridge`, `tc`, `mount`, a
//! shell) is ever started. Each test runs the agent with an empty environment whose PATH names
//! an empty folder, under `strace -D -f` watching execve and execveat, makes it do its work
//! (enforce, proxy HTTP rules, reload policies, attach to a new pod, find pods' interfaces from
//! their addresses), and then checks that the one program executed was the agent itself.
//!
//! Root: the agent loads its datapath. The pods are network namespaces the test sets up with
//! iproute2 (tests may); only the agent is traced.

mod common;

use common::ApiServer;
use common::agent::{Agent, BpfRoot, TempDir, agent_test, curl, eventually, upstream, write};
use imdsguard_netns::{Pod, Process, unique_name};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The agent under strace, and where the trace goes.
struct Traced {
    log: PathBuf,
}

impl Traced {
    /// `imdsguard agent <args>` with nothing in its environment but `PATH=<empty folder>`, as
    /// the direct child of the test (`strace -D` traces from a grandchild), so `Agent` kills
    /// the agent itself.
    fn command(dir: &Path, args: &[String]) -> (Traced, Command) {
        let strace = ["/usr/bin/strace", "/bin/strace"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("strace is not installed (scripts/prereqs.sh installs it)");
        let empty = dir.join("empty-path");
        std::fs::create_dir_all(&empty).expect("mkdir");
        let log = dir.join("execve.log");
        let mut cmd = Command::new(strace);
        cmd.args(["-D", "-f", "--seccomp-bpf", "-qq"])
            .args([
                "-e",
                "trace=execve,execveat",
                "-e",
                "signal=none",
                "-s",
                "256",
            ])
            .arg("-o")
            .arg(&log)
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_imdsguard"))
            .arg("agent")
            .args(args)
            .env_clear()
            .env("PATH", &empty);
        (Traced { log }, cmd)
    }

    /// The agent's one execve (its own start) is all the trace holds: no program was started,
    /// nor tried (a failed execve counts), by any of its threads or children.
    fn assert_only_the_agent_ran(&self, agent: &Agent) {
        let trace = std::fs::read_to_string(&self.log).expect("the strace log");
        let execs: Vec<&str> = trace.lines().filter(|l| l.contains("execve")).collect();
        // `<pid> execve("<path>", [<argv>], <envp>) = 0`, the pid padded with spaces.
        let own = |line: &str| {
            line.split_once(' ').is_some_and(|(pid, call)| {
                pid == agent.child.id().to_string()
                    && call
                        .trim_start()
                        .starts_with(&format!("execve(\"{}\", ", env!("CARGO_BIN_EXE_imdsguard")))
                    && call.ends_with("= 0")
            })
        };
        assert!(
            execs.len() == 1 && own(execs[0]),
            "the agent started programs (or the trace missed its own start); execs:\n{}\n\
             agent log:\n{}",
            execs.join("\n"),
            agent.logged()
        );
    }
}

fn http(from: &Pod, url: &str) -> (u16, String) {
    let out = from
        .ns
        .exec(
            "curl",
            &["-s", "--max-time", "3", "-w", "\n%{http_code}", url],
        )
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The server pod: a plain HTTP server on 8080 and the IMDS stand-in on 80.
fn servers(s: &Pod) -> (Process, Process) {
    let files =
        s.ns.spawn(
            "python3",
            &["-m", "http.server", "8080", "--bind", "0.0.0.0"],
        )
        .expect("server");
    (files, upstream(s, None, None))
}

fn policy(name: &str, app: &str, egress: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n\
         metadata: {{name: {name}, namespace: default}}\n\
         spec:\n  endpointSelector: {{matchLabels: {{app: {app}}}}}\n{egress}"
    )
}

fn deny(server: Ipv4Addr) -> String {
    format!("  egressDeny:\n    - toCIDR: [{server}/32]\n")
}

fn allow_8080(server: Ipv4Addr) -> String {
    format!(
        "  egress:\n    - toCIDR: [{server}/32]\n      \
         toPorts: [{{ports: [{{port: \"8080\", protocol: TCP}}]}}]\n"
    )
}

fn allow_metadata_gets(server: Ipv4Addr) -> String {
    format!(
        "  egress:\n    - toCIDR: [{server}/32]\n      \
         toPorts: [{{ports: [{{port: \"80\", protocol: TCP}}], \
         rules: {{http: [{{method: GET, path: \"/metadata/.*\"}}]}}}}]\n"
    )
}

fn endpoint(name: &str, pod: &Pod) -> String {
    format!(
        "  - {{name: {name}, labels: {{app: {name}}}, ip: {}, interface: {}}}\n",
        pod.ipv4, pod.host_if
    )
}

#[test]
fn the_agent_enforces_and_proxies_without_starting_a_program() {
    let Some((_serial, _routing, k)) = agent_test() else {
        return;
    };
    let a = Pod::create(&unique_name("nha"), Ipv4Addr::new(10, k, 30, 2), None).expect("pod a");
    let b = Pod::create(&unique_name("nhb"), Ipv4Addr::new(10, k, 30, 3), None).expect("pod b");
    let c = Pod::create(&unique_name("nhc"), Ipv4Addr::new(10, k, 30, 4), None).expect("pod c");
    let s = Pod::create(&unique_name("nhs"), Ipv4Addr::new(10, k, 30, 5), None).expect("server");
    let _servers = servers(&s);
    eventually("the test servers answer", || {
        curl(&a, s.ipv4) && http(&c, &format!("http://{}/x", s.ipv4)).0 == 200
    });

    let dir = TempDir(std::env::temp_dir().join(unique_name("nhdir")));
    let policies = dir.0.join("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    write(
        &policies.join("a.yaml"),
        &policy("a-denied", "a", &deny(s.ipv4)),
    );
    write(
        &policies.join("b.yaml"),
        &policy("b-allowed", "b", &allow_8080(s.ipv4)),
    );
    write(
        &policies.join("c.yaml"),
        &policy("c-metadata", "c", &allow_metadata_gets(s.ipv4)),
    );
    let endpoints = dir.0.join("endpoints.yaml");
    let listed = format!(
        "endpoints:\n{}{}{}",
        endpoint("a", &a),
        endpoint("b", &b),
        endpoint("c", &c)
    );
    write(&endpoints, &listed);
    let bpf = BpfRoot(dir.0.join("bpf"));
    let args: Vec<String> = [
        "--policies",
        &policies.to_string_lossy(),
        "--endpoints",
        &endpoints.to_string_lossy(),
        "--bpf-root",
        &bpf.0.to_string_lossy(),
        "--socket-path",
        &dir.0.join("api.sock").to_string_lossy(),
        "--hubble-listen-address",
        "127.0.0.1:0",
        "--proxy-port",
        &(18000 + std::process::id() % 1000).to_string(),
        "--node-name",
        "nohelpers-node",
        "--reload-interval",
        "100ms",
    ]
    .map(str::to_owned)
    .to_vec();
    let (traced, cmd) = Traced::command(&dir.0, &args);
    let agent = Agent::start_with(cmd);
    for pod in [&a, &b, &c] {
        agent.wait_log(&format!("attached to {}", pod.host_if));
    }

    // Enforcement: a is denied the server, b is allowed.
    assert!(!curl(&a, s.ipv4), "a reached the protected server");
    assert!(curl(&b, s.ipv4), "b could not reach the server");
    // The proxy (its policy routing installed over rtnetlink): c's allowed path is answered by
    // the upstream, any other path by the proxy's 403.
    let instance = format!("http://{}/metadata/instance", s.ipv4);
    assert_eq!(
        http(&c, &instance),
        (200, "upstream saw GET /metadata/instance".to_owned()),
        "agent log:\n{}",
        agent.logged()
    );
    assert_eq!(http(&c, &format!("http://{}/other", s.ipv4)).0, 403);

    // A policy reload, and a pod that comes after the agent: still no program.
    write(
        &policies.join("a.yaml"),
        &policy("a-allowed", "a", &allow_8080(s.ipv4)),
    );
    eventually("a can reach the server", || curl(&a, s.ipv4));
    let d = Pod::create(&unique_name("nhd"), Ipv4Addr::new(10, k, 30, 6), None).expect("pod d");
    write(
        &policies.join("d.yaml"),
        &policy("d-denied", "d", &deny(s.ipv4)),
    );
    write(&endpoints, &format!("{listed}{}", endpoint("d", &d)));
    agent.wait_log(&format!("attached to {}", d.host_if));
    eventually("d is denied", || !curl(&d, s.ipv4));

    traced.assert_only_the_agent_ran(&agent);
    drop(agent);
    drop(bpf);
}

/// A pod as the scheduler and kubelet leave it: on a node, running, with an IP.
async fn k8s_pod(client: &kube::Client, name: &str, node: &str, ip: Ipv4Addr) {
    use k8s_openapi::api::core::v1::Pod as KPod;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    let api: Api<KPod> = Api::namespaced(client.clone(), "default");
    let p: KPod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app"}]},
    }))
    .expect("pod");
    api.create(&PostParams::default(), &p)
        .await
        .expect("create pod");
    let status = serde_json::json!({"status": {"phase": "Running", "podIP": ip.to_string(),
                                               "podIPs": [{"ip": ip.to_string()}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status");
}

async fn k8s_setup(client: &kube::Client, pods: &[(&str, Ipv4Addr)], server: Ipv4Addr) {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{
        Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
    };
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    for entry in std::fs::read_dir(&dir).expect("deploy/crds") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("CRD YAML");
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
    }
    // Established before first use.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // kapilite has no namespace controller to create `default`.
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    for (name, ip) in pods {
        k8s_pod(client, name, "nohelpers-node", *ip).await;
    }
    let cnp = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v2", "CiliumNetworkPolicy"),
        "ciliumnetworkpolicies",
    );
    let obj: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "w-denied", "namespace": "default"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "w"}},
                 "egressDeny": [{"toCIDR": [format!("{server}/32")]}]}
    }))
    .expect("policy");
    Api::<DynamicObject>::namespaced_with(client.clone(), "default", &cnp)
        .patch(
            "w-denied",
            &PatchParams::apply("imdsguard-test").force(),
            &Patch::Apply(&obj),
        )
        .await
        .expect("apply");
}

/// In Kubernetes mode pods come with addresses only: the agent finds each one's interface from
/// the route to it (`host_interfaces`, over rtnetlink), still without a program.
#[test]
fn the_agent_finds_pods_interfaces_without_starting_a_program() {
    let Some((_serial, _routing, k)) = agent_test() else {
        return;
    };
    let Some(kapi) = ApiServer::start() else {
        return;
    };
    let w = Pod::create(&unique_name("nhw"), Ipv4Addr::new(10, k, 31, 2), None).expect("pod w");
    let l = Pod::create(&unique_name("nhl"), Ipv4Addr::new(10, k, 31, 3), None).expect("pod l");
    let s = Pod::create(&unique_name("nht"), Ipv4Addr::new(10, k, 31, 5), None).expect("server");
    let _servers = servers(&s);
    eventually("the test server answers", || curl(&w, s.ipv4));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(kapi.client());
    rt.block_on(k8s_setup(&client, &[("w", w.ipv4), ("l", l.ipv4)], s.ipv4));

    let dir = TempDir(std::env::temp_dir().join(unique_name("nhk8s")));
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    let bpf = BpfRoot(dir.0.join("bpf"));
    let args: Vec<String> = [
        "--kubeconfig",
        &kapi.kubeconfig().to_string_lossy(),
        "--node-name",
        "nohelpers-node",
        "--bpf-root",
        &bpf.0.to_string_lossy(),
        "--socket-path",
        &dir.0.join("api.sock").to_string_lossy(),
        "--hubble-listen-address",
        "127.0.0.1:0",
        "--proxy-port",
        &(19000 + std::process::id() % 1000).to_string(),
        // This machine's other veths are not this test's to guard.
        "--unknown-veths",
        "ignore",
    ]
    .map(str::to_owned)
    .to_vec();
    let (traced, cmd) = Traced::command(&dir.0, &args);
    let agent = Agent::start_with(cmd);
    // Found from the pods' addresses alone.
    for pod in [&w, &l] {
        agent.wait_log(&format!("attached to {}", pod.host_if));
    }
    eventually("w is denied the server", || !curl(&w, s.ipv4));
    assert!(curl(&l, s.ipv4), "l could not reach the server");

    traced.assert_only_the_agent_ran(&agent);
    drop(agent);
    drop(bpf);
}
