//! The install: `imdsguard install --dry-run` against the committed manifests and the Helm chart,
//! the DaemonSet's capabilities proven sufficient by running the agent with only those (root),
//! and a server-side apply against a real API server.

mod common;

use common::ApiServer;
use imdsguard_netns::{Pod, can_create_namespaces, unique_name};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn imdsguard(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_imdsguard"))
        .args(args)
        .output()
        .expect("run imdsguard")
}

/// The documents of a YAML stream (`---` separated), as JSON.
fn documents(text: &str) -> Vec<Value> {
    text.split("\n---\n")
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("YAML: {e}\n{d}")))
        .collect()
}

fn dry_run() -> Vec<Value> {
    let out = imdsguard(&["install", "--dry-run"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let committed = std::fs::read_to_string(repo().join("deploy/kubernetes/imdsguard.yaml"))
        .expect("deploy/kubernetes/imdsguard.yaml");
    assert!(
        text == committed,
        "deploy/kubernetes/imdsguard.yaml is stale: regenerate it with `imdsguard install --dry-run > deploy/kubernetes/imdsguard.yaml`"
    );
    documents(&text)
}

fn agent_container(daemonset: &Value) -> &Value {
    &daemonset["spec"]["template"]["spec"]["containers"][0]
}

fn capabilities(daemonset: &Value) -> Vec<String> {
    agent_container(daemonset)["securityContext"]["capabilities"]["add"]
        .as_array()
        .expect("capabilities")
        .iter()
        .map(|c| c.as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn install_dry_run_prints_the_committed_manifests_with_least_privilege() {
    let docs = dry_run();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "DaemonSet"
        ]
    );
    let role = &docs[4];
    for rule in role["rules"].as_array().expect("rules") {
        let verbs: BTreeSet<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let events = rule["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "events");
        let allowed: BTreeSet<&str> = if events {
            ["create", "patch"].into()
        } else {
            ["get", "list", "watch"].into()
        };
        assert!(verbs.is_subset(&allowed), "{rule}");
    }
    let ds = docs.last().expect("the DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let agent = agent_container(ds);
    assert_eq!(agent["securityContext"]["privileged"], false);
    assert_eq!(agent["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(capabilities(ds), ["BPF", "NET_ADMIN", "PERFMON"]);
    let mounts: Vec<&str> = agent["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(mounts.contains(&"/sys/fs/bpf"));

    // Values change the DaemonSet, and CRDs can be left to Cilium.
    let out = imdsguard(&[
        "install",
        "--dry-run",
        "--skip-crds",
        "-n",
        "imds",
        "--policy-audit-mode",
        "--hubble-export-file-path",
        "/var/log/imdsguard/flows.json",
    ]);
    let docs = documents(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(docs[0]["kind"], "ServiceAccount");
    let args = agent_container(docs.last().unwrap())["args"].to_string();
    assert!(
        args.contains("--policy-audit-mode") && args.contains("flows.json"),
        "{args}"
    );
}

/// Every `.Values.a.b` a template reads, as `a.b`.
fn value_paths(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find(".Values.") {
        rest = &rest[i + ".Values.".len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '.'))
            .unwrap_or(rest.len());
        out.push(rest[..end].trim_end_matches('.').to_owned());
    }
    out
}

#[test]
fn the_helm_chart_reads_only_defined_values_and_matches_the_install() {
    let chart = repo().join("deploy/helm/imdsguard");
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart.join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml parses");
    let mut templates = String::new();
    for entry in std::fs::read_dir(chart.join("templates")).expect("templates") {
        templates += &std::fs::read_to_string(entry.expect("entry").path()).expect("read");
    }
    for path in value_paths(&templates) {
        let mut v = &values;
        for key in path.split('.') {
            v = &v[key];
        }
        assert!(!v.is_null(), ".Values.{path} is not in values.yaml");
    }
    // The same capabilities and RBAC as the install.
    let docs = dry_run();
    let want = capabilities(docs.last().unwrap()).join(", ");
    assert!(
        templates.contains(&format!("add: [{want}]")),
        "the chart's capabilities differ from the install's ({want})"
    );
    let rbac = std::fs::read_to_string(chart.join("templates/rbac.yaml"))
        .expect("rbac.yaml")
        .replace("{{ .Release.Namespace }}", "\"kube-system\"");
    let chart_rbac = documents(&rbac);
    assert_eq!(chart_rbac[0]["rules"], docs[4]["rules"]);
    assert_eq!(chart_rbac[1]["subjects"], docs[5]["subjects"]);
    // The hubble-peer Service, as the install has it, leads to the port of the listen address.
    let peer = std::fs::read_to_string(chart.join("templates/hubble-peer-service.yaml"))
        .expect("hubble-peer-service.yaml");
    let install_peer = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "hubble-peer")
        .expect("the install's hubble-peer Service");
    assert_eq!(install_peer["spec"]["ports"][0]["targetPort"], 4244);
    assert_eq!(install_peer["spec"]["internalTrafficPolicy"], "Local");
    for needle in [
        "port: 443",
        "targetPort: {{ include \"imdsguard.port\" .Values.hubble.listenAddress }}",
        "internalTrafficPolicy: Local",
    ] {
        assert!(peer.contains(needle), "{needle}\n{peer}");
    }
    assert!(
        templates.contains(
            "containerPort: {{ include \"imdsguard.port\" .Values.hubble.listenAddress }}"
        ),
        "the DaemonSet's gRPC port follows hubble.listenAddress"
    );
    // The chart's CRDs are the install's (a link to deploy/crds).
    for (name, _) in [("ciliumnetworkpolicies", 0), ("ciliumcidrgroups", 0)] {
        let a = std::fs::read_to_string(chart.join(format!("crds/{name}.yaml"))).expect("crd");
        assert!(a.contains(&format!("name: {name}.cilium.io")));
    }
}

/// The image the install and the chart name: ghcr.io/imdsguard/imdsguard tagged with the crate's
/// version, which is also the chart's appVersion, the Dockerfile's version label and what
/// `imdsguard version` prints (scripts/test checks the image itself).
#[test]
fn one_version_tags_the_image_the_install_and_the_chart_name() {
    let version = env!("CARGO_PKG_VERSION");
    let want = format!("ghcr.io/imdsguard/imdsguard:{version}");
    let images = |ds: &Value| -> Vec<String> {
        let pod = &ds["spec"]["template"]["spec"];
        let mut all = pod["initContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        all.extend(pod["containers"].as_array().cloned().unwrap_or_default());
        all.iter()
            .map(|c| c["image"].as_str().expect("image").to_owned())
            .collect()
    };
    let docs = dry_run();
    let ds = docs.last().unwrap();
    assert!(images(ds).iter().all(|i| *i == want), "{:?}", images(ds));
    // The image holds the binary and its libraries only: every container runs `imdsguard`.
    let pod = &ds["spec"]["template"]["spec"];
    for c in pod["initContainers"]
        .as_array()
        .into_iter()
        .chain(pod["containers"].as_array())
        .flatten()
    {
        let cmd = c["command"][0].as_str().unwrap_or("imdsguard");
        assert!(cmd == "imdsguard" || cmd.ends_with("/imdsguard"), "{c}");
    }
    let chart = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/helm/imdsguard/templates/daemonset.yaml"),
    )
    .expect("chart daemonset");
    assert!(
        !chart.contains("/bin/sh"),
        "the chart runs a shell the image lacks"
    );
    let out = imdsguard(&[
        "install",
        "--dry-run",
        "--image",
        "registry.example/imdsguard:dev",
    ]);
    let ds = documents(&String::from_utf8_lossy(&out.stdout))
        .pop()
        .unwrap();
    assert!(
        images(&ds)
            .iter()
            .all(|i| i == "registry.example/imdsguard:dev"),
        "--image is not used: {:?}",
        images(&ds)
    );

    let out = imdsguard(&["version"]);
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        printed.starts_with(&format!("imdsguard {version} (commit ")),
        "{printed}"
    );
    let flag = imdsguard(&["--version"]);
    assert_eq!(String::from_utf8_lossy(&flag.stdout), printed);

    let chart = repo().join("deploy/helm/imdsguard");
    let meta: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart.join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml parses");
    assert_eq!(meta["appVersion"], version, "the chart's appVersion");
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart.join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml parses");
    assert_eq!(
        format!(
            "{}:{version}",
            values["image"]["repository"].as_str().unwrap()
        ),
        want
    );
    assert_eq!(values["image"]["tag"], "", "the tag defaults to appVersion");
    let daemonset =
        std::fs::read_to_string(chart.join("templates/daemonset.yaml")).expect("daemonset.yaml");
    assert!(daemonset.contains("(default .Chart.AppVersion .Values.image.tag)"));
    // The chart holds the chart and nothing else.
    let mut entries: Vec<String> = std::fs::read_dir(&chart)
        .expect("chart")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            ".helmignore",
            "Chart.yaml",
            "crds",
            "templates",
            "values.yaml"
        ]
    );

    // The Dockerfile: the version label's default, and the agent the DaemonSet runs by default.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile
            .lines()
            .any(|l| l == format!("ARG VERSION={version}")),
        "the Dockerfile's ARG VERSION is not {version}"
    );
    let cmd = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("CMD");
    let cmd: Value = serde_json::from_str(cmd).expect("CMD is a JSON array");
    let agent = agent_container(docs.last().unwrap());
    assert_eq!(
        cmd, agent["args"],
        "the image's CMD and the DaemonSet's args"
    );
    assert_eq!(agent["command"][0], "imdsguard");
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/imdsguard\"]"));
    assert!(dockerfile.contains("ENV PATH=/usr/local/bin"));
}

/// Runs a command with only these capabilities (setpriv, from util-linux).
fn with_capabilities(caps: &[String], program: &str) -> Command {
    let set = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{}", c.to_lowercase())))
        .collect::<Vec<_>>()
        .join(",");
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--inh-caps={set}"),
        &format!("--ambient-caps={set}"),
        &format!("--bounding-set={set}"),
        program,
    ]);
    c
}

struct Cleanup(PathBuf, bool);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let bpf = self.0.join("bpf");
        let _ = std::fs::remove_dir_all(bpf.join("imdsguard"));
        let _ = imdsguard_netns::run("umount", &[&bpf.to_string_lossy()]);
        let _ = std::fs::remove_dir_all(&self.0);
        if self.1 {
            imdsguard_proxy::routing::uninstall(
                imdsguard_proxy::routing::MARK,
                imdsguard_proxy::routing::TABLE,
            );
        }
    }
}

#[test]
fn the_daemonsets_capabilities_are_enough_to_enforce() {
    if !can_create_namespaces() {
        common::skip("needs root");
        return;
    }
    let caps = capabilities(dry_run().last().unwrap());
    let dir = std::env::temp_dir().join(unique_name("caps"));
    std::fs::create_dir_all(dir.join("bpf")).expect("mkdir");
    let _cleanup = Cleanup(
        dir.clone(),
        !imdsguard_proxy::routing::installed(imdsguard_proxy::routing::TABLE),
    );
    // The bpffs is mounted beforehand, as the init container does.
    imdsguard_netns::run(
        "mount",
        &["-t", "bpf", "bpf", &dir.join("bpf").to_string_lossy()],
    )
    .expect("mount bpffs");
    let k = 200 + (std::process::id() % 50) as u8;
    let pod = Pod::create(&unique_name("cap"), Ipv4Addr::new(10, k, 7, 2), None).expect("pod");
    std::fs::write(
        dir.join("endpoints.yaml"),
        format!(
            "endpoints:\n  - {{name: a, labels: {{app: a}}, ip: {}, interface: {}}}\n",
            pod.ipv4, pod.host_if
        ),
    )
    .expect("endpoints");
    let socket = dir.join("api.sock").to_string_lossy().into_owned();
    let bpf_root = dir.join("bpf").to_string_lossy().into_owned();
    let mut agent = with_capabilities(&caps, env!("CARGO_BIN_EXE_imdsguard"))
        .args([
            "agent",
            "--endpoints",
            &dir.join("endpoints.yaml").to_string_lossy(),
        ])
        .args(["--bpf-root", &bpf_root, "--socket-path", &socket])
        .args([
            "--hubble-listen-address",
            "",
            "--proxy-port",
            &(17_000 + k as u16).to_string(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent");
    let start = Instant::now();
    let mut ready = false;
    while start.elapsed() < Duration::from_secs(15) && !ready {
        std::thread::sleep(Duration::from_millis(100));
        ready = with_capabilities(&caps, env!("CARGO_BIN_EXE_imdsguard"))
            .args(["status", "--ready", "--socket-path", &socket])
            .output()
            .is_ok_and(|o| o.status.success());
    }
    // The kernel's view, read with the same capabilities: attached first in both chains.
    let status = with_capabilities(&caps, env!("CARGO_BIN_EXE_imdsguard"))
        .args([
            "status",
            "-o",
            "json",
            "--bpf-root",
            &bpf_root,
            "--socket-path",
            &socket,
        ])
        .output()
        .expect("status");
    let _ = agent.kill();
    let out = agent.wait_with_output().expect("agent output");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(ready, "the agent never became ready with {caps:?}:\n{log}");
    assert!(!log.contains("failed"), "{log}");
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let iface = status["interfaces"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["name"] == pod.host_if.as_str()))
        .unwrap_or_else(|| panic!("{} not attached: {status}\n{log}", pod.host_if));
    for p in iface["programs"].as_array().expect("programs") {
        assert_eq!(p["position"], 0, "{p}");
    }
}

#[test]
fn install_applies_with_server_side_apply_and_leaves_existing_crds_alone() {
    let Some(kapi) = ApiServer::start() else {
        return;
    };
    let kubeconfig = kapi.kubeconfig().to_string_lossy().into_owned();
    // kapilite has no controllers to create kube-system (kube-apiserver makes it itself).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let serves_rbac = rt.block_on(async {
        let client = kapi.client().await;
        let ns: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "kube-system"}}))
                .expect("ns");
        match kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .create(&Default::default(), &ns)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => panic!("create kube-system: {e}"),
        }
        let rbac =
            kube::api::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "ClusterRole");
        kube::discovery::pinned_kind(&client, &rbac).await.is_ok()
    });
    let out = imdsguard(&["install", "--kubeconfig", &kubeconfig]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stdout.contains("customresourcedefinitions.apiextensions.k8s.io/ciliumnetworkpolicies.cilium.io serverside-applied"),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains("serviceaccounts/imdsguard serverside-applied"),
        "{stdout}"
    );
    if serves_rbac {
        // A full kube-apiserver (KUBEBUILDER_ASSETS): the whole install applies.
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(
            stdout.contains("clusterroles.rbac.authorization.k8s.io/imdsguard serverside-applied"),
            "{stdout}"
        );
    } else {
        // kapilite serves no RBAC: the install stops there and says why.
        assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
        assert!(
            stderr.contains("does not serve rbac.authorization.k8s.io/v1 ClusterRole"),
            "{stderr}"
        );
    }
    let again = imdsguard(&["install", "--kubeconfig", &kubeconfig]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.contains("ciliumcidrgroups.cilium.io unchanged (exists; left as it is)"),
        "{stdout}"
    );
}

/// Removes the stand-in for Cilium's interface.
struct CiliumHost;

impl Drop for CiliumHost {
    fn drop(&mut self) {
        let _ = imdsguard_netns::run("ip", &["link", "del", "cilium_host"]);
    }
}

#[test]
fn the_agent_stays_out_of_ciliums_way() {
    if !can_create_namespaces() {
        common::skip("needs root");
        return;
    }
    if Path::new("/sys/class/net/cilium_host").exists() {
        common::skip("Cilium runs here");
        return;
    }
    // Cilium's host interfaces (a veth pair, as Cilium makes them): what the agent looks for.
    imdsguard_netns::run(
        "ip",
        &[
            "link",
            "add",
            "cilium_host",
            "type",
            "veth",
            "peer",
            "name",
            "cilium_net",
        ],
    )
    .expect("cilium_host");
    let _cilium = CiliumHost;
    let out = imdsguard(&[
        "agent",
        "--kubeconfig",
        "/nonexistent",
        "--hubble-listen-address",
        "",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("Cilium is this node's datapath"),
        "{stderr}"
    );
    assert!(stderr.contains("offline tool"), "{stderr}");
}
