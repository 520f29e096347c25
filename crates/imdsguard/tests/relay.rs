//! A cluster, not a node: three agents on this machine, each as its own node (its own address
//! 127.0.0.{2,3,4} with Hubble's port 4244, `--node-name`, `--bpf-root` and `--socket-path`),
//! against a real API server holding their three Node objects. What Hubble Relay relies on is
//! checked from the outside, over real gRPC between processes:
//!
//! - the Peer service of one agent announces all three nodes (current set first), then follows
//!   a Node deleted, a Node added and a Node whose address changes;
//! - a client that connects to every announced peer and merges their GetFlows streams by time,
//!   as Relay does, gets every node's flows in time order;
//! - `imdsguard observe` and `imdsguard status --server` reach an agent with the same flags.
//!
//! The same runs in plaintext and with mutual TLS (certificates made here with rcgen, the
//! server's a wildcard for `*.default.hubble-grpc.cilium.io`, as Cilium's chart issues it).
//! The agents replay recorded flows, so no root is needed.

mod common;

use common::ApiServer;
use common::agent::{Agent, TempDir};
use imdsguard_hubble_proto::observer::get_flows_response::ResponseTypes;
use imdsguard_hubble_proto::observer::observer_client::ObserverClient;
use imdsguard_hubble_proto::observer::{GetFlowsRequest, GetFlowsResponse};
use imdsguard_hubble_proto::peer::peer_client::PeerClient;
use imdsguard_hubble_proto::peer::{ChangeNotification, ChangeNotificationType, NotifyRequest};
use imdsguard_hubble_server::client::{ClientOptions, ClientTls};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The agents bind 127.0.0.{2,3,4}:4244: one test at a time.
static HUBBLE_PORT: Mutex<()> = Mutex::new(());

const NODES: [(&str, &str); 3] = [
    ("node-a", "127.0.0.2"),
    ("node-b", "127.0.0.3"),
    ("node-c", "127.0.0.4"),
];

/// The files of a CA, the agents' server certificate and Relay's client certificate.
struct Certs {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_certs(dir: &Path) -> Certs {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hubble-ca.cilium.io");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("key");
    let ca_pem = ca_params.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let issue = |name: &str, usage| {
        let mut p = CertificateParams::new(vec![name.to_owned()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (server, server_key) = issue(
        "*.default.hubble-grpc.cilium.io",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client, client_key) = issue(
        "*.hubble-relay.cilium.io",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    Certs {
        ca: write("ca.crt", &ca_pem),
        server_cert: write("server.crt", &server),
        server_key: write("server.key", &server_key),
        client_cert: write("client.crt", &client),
        client_key: write("client.key", &client_key),
    }
}

/// Three flows per node, at times interleaved across nodes (node-a at 0, 3, 6 s, node-b at 1,
/// 4, 7 s, …), so that only a merge by time puts them in order.
fn flows_file(dir: &Path, index: usize, node: &str) -> PathBuf {
    let mut text = String::new();
    for k in 0..3 {
        let second = k * 3 + index;
        let time = format!("2026-01-01T00:00:0{second}.000Z");
        text += &format!(
            r#"{{"flow":{{"time":"{time}","verdict":"FORWARDED","IP":{{"source":"10.0.{index}.{k}","destination":"169.254.169.254","ipVersion":"IPv4"}},"l4":{{"TCP":{{"source_port":4000{k},"destination_port":80,"flags":{{"SYN":true}}}}}},"source":{{"identity":1000,"namespace":"ns-{node}","pod_name":"pod-{k}"}},"destination":{{"identity":2,"labels":["reserved:world"]}},"Type":"L3_L4","node_name":"{node}","event_type":{{"type":4}},"Summary":"TCP Flags: SYN"}},"node_name":"{node}","time":"{time}"}}"#
        );
        text.push('\n');
    }
    let path = dir.join(format!("{node}.jsonl"));
    std::fs::write(&path, text).expect("write flows");
    path
}

fn node_object(name: &str, ip: &str) -> Node {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"addresses": [
            {"type": "InternalIP", "address": ip},
            {"type": "Hostname", "address": name}
        ]}
    }))
    .expect("node")
}

/// Creates a Node with its address. A full API server drops `status` on create, so it is also
/// written through the status subresource.
async fn create_node(api: &Api<Node>, name: &str, ip: &str) {
    let node = node_object(name, ip);
    api.create(&PostParams::default(), &node)
        .await
        .expect("create node");
    set_address(api, name, ip).await;
}

async fn set_address(api: &Api<Node>, name: &str, ip: &str) {
    let status = serde_json::json!({"status": {"addresses": [
        {"type": "InternalIP", "address": ip},
        {"type": "Hostname", "address": name}
    ]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("node status");
}

/// How to reach one Hubble server; with TLS, as Relay does: our CA, our client certificate, and
/// the server name the peer was announced with.
fn client(addr: &str, certs: Option<&Certs>, server_name: &str) -> ClientOptions {
    match certs {
        Some(c) => ClientOptions::new(addr).with_tls(ClientTls {
            ca_cert_files: vec![c.ca.clone()],
            client_cert_file: Some(c.client_cert.clone()),
            client_key_file: Some(c.client_key.clone()),
            server_name: Some(server_name.to_owned()),
        }),
        None => ClientOptions::new(addr),
    }
}

/// The peers a Notify stream has announced, by name: (address, TLS server name).
type PeerTable = BTreeMap<String, (String, Option<String>)>;

/// Applies notifications until the table equals `want` (10 s), checking that each one makes
/// sense: ADDED for a new name, UPDATED and DELETED for a known one. Returns the types seen.
async fn follow_until(
    stream: &mut tonic::Streaming<ChangeNotification>,
    table: &mut PeerTable,
    want: &PeerTable,
) -> Vec<(String, ChangeNotificationType)> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while table != want {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| panic!("the peers never became {want:?}; they are {table:?}"))
            .expect("Notify stream")
            .expect("Notify stream open");
        let t = ChangeNotificationType::try_from(n.r#type).expect("a known type");
        let entry = (n.address.clone(), n.tls.map(|t| t.server_name));
        match t {
            ChangeNotificationType::PeerAdded => {
                assert!(
                    table.insert(n.name.clone(), entry).is_none(),
                    "ADDED twice: {}",
                    n.name
                )
            }
            ChangeNotificationType::PeerUpdated => {
                assert!(
                    table.insert(n.name.clone(), entry).is_some(),
                    "UPDATED unknown: {}",
                    n.name
                )
            }
            ChangeNotificationType::PeerDeleted => {
                assert!(
                    table.remove(&n.name).is_some(),
                    "DELETED unknown: {}",
                    n.name
                )
            }
            ChangeNotificationType::Unknown => panic!("UNKNOWN notification for {}", n.name),
        }
        seen.push((n.name, t));
    }
    seen
}

fn expected(nodes: &[(&str, &str)], tls: bool) -> PeerTable {
    nodes
        .iter()
        .map(|(name, ip)| {
            let server_name = tls.then(|| format!("{name}.default.hubble-grpc.cilium.io"));
            (name.to_string(), (format!("{ip}:4244"), server_name))
        })
        .collect()
}

fn time_of(r: &GetFlowsResponse) -> (i64, i32) {
    r.time.map_or((0, 0), |t| (t.seconds, t.nanos))
}

/// What Relay does with the peers: one GetFlows per peer (the same request), the streams merged
/// by each response's `time`, taking the earliest head each time.
async fn merged_flows(peers: &PeerTable, certs: Option<&Certs>) -> Vec<GetFlowsResponse> {
    let mut streams = Vec::new();
    for (name, (addr, server_name)) in peers {
        let channel = client(addr, certs, server_name.as_deref().unwrap_or(""))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to {name} at {addr}: {e:?}"));
        let stream = ObserverClient::new(channel)
            .get_flows(GetFlowsRequest {
                number: 100,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("GetFlows from {name}: {e}"))
            .into_inner();
        streams.push(stream);
    }
    let mut heads: Vec<Option<GetFlowsResponse>> = Vec::new();
    for s in &mut streams {
        heads.push(s.message().await.expect("stream"));
    }
    let mut out = Vec::new();
    while let Some(i) = (0..heads.len())
        .filter(|&i| heads[i].is_some())
        .min_by_key(|&i| heads[i].as_ref().map(time_of))
    {
        out.extend(heads[i].take());
        heads[i] = streams[i].message().await.expect("stream");
    }
    out
}

/// Runs the imdsguard binary, off the async runtime.
async fn imdsguard(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_imdsguard"))
            .args(&args)
            .output()
            .expect("run imdsguard")
    })
    .await
    .expect("join")
}

fn tls_flags(certs: &Certs, server_name: &str, client_cert: bool) -> Vec<String> {
    let mut flags = vec![
        "--tls".to_owned(),
        "--tls-ca-cert-files".into(),
        certs.ca.display().to_string(),
        "--tls-server-name".into(),
        server_name.into(),
    ];
    if client_cert {
        flags.extend([
            "--tls-client-cert-file".into(),
            certs.client_cert.display().to_string(),
            "--tls-client-key-file".into(),
            certs.client_key.display().to_string(),
        ]);
    }
    flags
}

fn three_agents_as_relay_sees_them(tls: bool) {
    let _port = HUBBLE_PORT.lock().unwrap_or_else(|e| e.into_inner());
    let Some(kapi) = ApiServer::start() else {
        return;
    };
    let dir = TempDir(std::env::temp_dir().join(imdsguard_netns::unique_name("relay")));
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    let certs = tls.then(|| make_certs(&dir.0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let nodes: Api<Node> = Api::all(kapi.client().await);
        for (name, ip) in NODES {
            create_node(&nodes, name, ip).await;
        }
        let kubeconfig = kapi.kubeconfig().display().to_string();
        let mut agents = Vec::new();
        for (i, (name, ip)) in NODES.iter().enumerate() {
            let own = dir.0.join(name);
            std::fs::create_dir_all(own.join("bpf")).expect("mkdir");
            let mut args = vec![
                "--replay-flows".to_owned(),
                flows_file(&dir.0, i, name).display().to_string(),
                "--replay-keep-time".into(),
                "--kubeconfig".into(),
                kubeconfig.clone(),
                "--node-name".into(),
                name.to_string(),
                "--hubble-listen-address".into(),
                format!("{ip}:4244"),
                "--bpf-root".into(),
                own.join("bpf").display().to_string(),
                "--socket-path".into(),
                own.join("imdsguard.sock").display().to_string(),
            ];
            if let Some(c) = &certs {
                args.extend([
                    "--hubble-tls-cert-file".into(),
                    c.server_cert.display().to_string(),
                    "--hubble-tls-key-file".into(),
                    c.server_key.display().to_string(),
                    "--hubble-tls-client-ca-files".into(),
                    c.ca.display().to_string(),
                ]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let agent = tokio::task::block_in_place(|| Agent::start(&args));
            assert_eq!(agent.addr, format!("{ip}:4244"), "{}", agent.logged());
            agents.push(agent);
        }

        // Relay's first step: the peer service (here node-a's agent) lists every node.
        let peer_name = "hubble-peer.default.hubble-grpc.cilium.io";
        let channel = client("127.0.0.2:4244", certs.as_ref(), peer_name)
            .connect()
            .await
            .expect("connect to node-a's Peer service");
        let mut peers = PeerClient::new(channel.clone());
        let mut stream = peers
            .notify(NotifyRequest {})
            .await
            .expect("Notify")
            .into_inner();
        let mut table = PeerTable::new();
        let want = expected(&NODES, tls);
        let seen = follow_until(&mut stream, &mut table, &want).await;
        assert!(
            seen.iter()
                .all(|(_, t)| *t == ChangeNotificationType::PeerAdded),
            "a new stream starts with the current set, all ADDED: {seen:?}"
        );

        // Relay's second step: every node's flows, merged by time.
        let merged = merged_flows(&table, certs.as_ref()).await;
        let got: Vec<(String, i64)> = merged
            .iter()
            .map(|r| (r.node_name.clone(), time_of(r).0))
            .collect();
        let times: Vec<i64> = got.iter().map(|g| g.1).collect();
        assert_eq!(got.len(), 9, "{got:?}");
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        for (k, (node, _)) in got.iter().enumerate() {
            assert_eq!(node, NODES[k % 3].0, "{got:?}");
            assert!(matches!(
                merged[k].response_types,
                Some(ResponseTypes::Flow(_))
            ));
        }

        // The CLI with the hubble CLI's flags, against node-b.
        let tls_args = |client_cert| match &certs {
            Some(c) => tls_flags(c, "node-b.default.hubble-grpc.cilium.io", client_cert),
            None => Vec::new(),
        };
        let mut observe: Vec<String> = ["observe", "--server", "127.0.0.3:4244", "--last", "10"]
            .map(String::from)
            .to_vec();
        observe.extend(["-o".into(), "jsonpb".into()]);
        observe.extend(tls_args(true));
        let out = imdsguard(observe.clone()).await;
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{printed}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            printed.matches(r#""node_name":"node-b""#).count(),
            6,
            "{printed}"
        );
        let mut status: Vec<String> = ["status", "--server", "127.0.0.3:4244", "-o", "wide"]
            .map(String::from)
            .to_vec();
        status.extend(tls_args(true));
        let out = imdsguard(status).await;
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{printed}");
        let row = printed
            .lines()
            .find(|l| l.starts_with("node-b "))
            .unwrap_or_else(|| panic!("{printed}"));
        assert!(row.contains("Connected"), "{printed}");
        assert!(
            row.ends_with(if tls { "Enabled" } else { "Disabled" }),
            "{printed}"
        );
        if tls {
            // mTLS: no client certificate, no flows; plaintext to a TLS server, no flows.
            let mut without = observe.clone();
            without.truncate(without.len() - 4);
            let out = imdsguard(without).await;
            assert!(
                !out.status.success(),
                "observe without a client certificate"
            );
            let plain = ["observe", "--server", "127.0.0.3:4244", "--last", "1"]
                .map(String::from)
                .to_vec();
            assert!(
                !imdsguard(plain).await.status.success(),
                "plaintext observe"
            );
        }

        // Nodes come and go: the stream follows.
        nodes
            .delete("node-c", &Default::default())
            .await
            .expect("delete node-c");
        let after_delete = expected(&NODES[..2], tls);
        let seen = follow_until(&mut stream, &mut table, &after_delete).await;
        assert_eq!(
            seen,
            [("node-c".to_owned(), ChangeNotificationType::PeerDeleted)]
        );
        create_node(&nodes, "node-d", "127.0.0.5").await;
        let mut with_d = after_delete.clone();
        with_d.extend(expected(&[("node-d", "127.0.0.5")], tls));
        let seen = follow_until(&mut stream, &mut table, &with_d).await;
        assert_eq!(
            seen.first(),
            Some(&("node-d".to_owned(), ChangeNotificationType::PeerAdded)),
            "{seen:?}"
        );
        set_address(&nodes, "node-d", "127.0.0.6").await;
        let mut moved = after_delete.clone();
        moved.extend(expected(&[("node-d", "127.0.0.6")], tls));
        let seen = follow_until(&mut stream, &mut table, &moved).await;
        assert_eq!(
            seen,
            [("node-d".to_owned(), ChangeNotificationType::PeerUpdated)]
        );
        // A new stream, as a restarted Relay opens, gets the set as it is now.
        let mut fresh = peers
            .notify(NotifyRequest {})
            .await
            .expect("Notify")
            .into_inner();
        let mut fresh_table = PeerTable::new();
        follow_until(&mut fresh, &mut fresh_table, &moved).await;
        drop(agents);
    });
}

#[test]
fn three_agents_in_plaintext_announce_the_cluster_and_merge_their_flows() {
    three_agents_as_relay_sees_them(false);
}

#[test]
fn three_agents_with_mutual_tls_announce_the_cluster_and_merge_their_flows() {
    three_agents_as_relay_sees_them(true);
}
