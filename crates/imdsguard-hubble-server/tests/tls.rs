//! The Hubble server over TLS with real handshakes on loopback: mutual TLS accepts clients with
//! a certificate from the client CA and refuses the others, the server is known by Cilium's
//! `<node>.<cluster>.hubble-grpc.cilium.io` names, and rotated certificate files (server
//! certificate, key and client CA) take over without a restart. Certificates are made here
//! with rcgen. Also: the Peer service follows the set the agent gives it.

use imdsguard_hubble_proto::peer::peer_client::PeerClient;
use imdsguard_hubble_proto::peer::{ChangeNotification, ChangeNotificationType, NotifyRequest};
use imdsguard_hubble_server::client::{ClientOptions, ClientTls};
use imdsguard_hubble_server::server::{Hub, HubOptions, PeerInfo, router};
use imdsguard_hubble_server::tls::{ServerTls, ServerTlsFiles, server_name};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CA that issues server and client certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let pem = params.self_signed(&key).expect("CA").pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate and its key, for `names` (DNS names), as a server or a client.
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("x"));
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("imdsguard-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        Dir(d)
    }

    /// Writes through a rename, as Kubernetes swaps a Secret's files: never half a file.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const WILDCARD: &str = "*.default.hubble-grpc.cilium.io";

async fn serve_tls(files: ServerTlsFiles) -> (Arc<Hub>, Arc<ServerTls>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let hub = Hub::with_options(HubOptions {
        capacity: 15,
        node_name: "node-a".into(),
        address: addr.clone(),
        metrics: None,
        exporter: None,
        tls_server_name: Some(server_name("node-a", "default")),
    });
    let tls = ServerTls::load(files).expect("load TLS files");
    let r = router(hub.clone()).await;
    let incoming = tls.clone().incoming(listener);
    tokio::spawn(async move { r.serve_with_incoming(incoming).await });
    (hub, tls, addr)
}

fn client(addr: &str, ca: &Path, cert: Option<(&Path, &Path)>, name: &str) -> ClientOptions {
    let mut o = ClientOptions::new(addr).with_tls(ClientTls {
        ca_cert_files: vec![ca.to_owned()],
        client_cert_file: cert.map(|c| c.0.to_owned()),
        client_key_file: cert.map(|c| c.1.to_owned()),
        server_name: Some(name.into()),
    });
    o.connect_timeout = Duration::from_secs(2);
    o
}

/// Whether a ServerStatus and GetNodes go through.
async fn works(o: &ClientOptions) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(5), o.status_and_nodes())
        .await
        .map_err(|_| "timed out".to_owned())?
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn mutual_tls_accepts_certified_clients_only() {
    let dir = Dir::new("mtls");
    let ca = Ca::new("hubble-ca");
    let (cert, key) = ca.issue(&[WILDCARD], ExtendedKeyUsagePurpose::ServerAuth);
    let (ccert, ckey) = ca.issue(
        &["*.hubble-relay.cilium.io"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let ca_file = dir.write("ca.crt", &ca.pem);
    let files = ServerTlsFiles {
        cert_file: dir.write("server.crt", &cert),
        key_file: dir.write("server.key", &key),
        client_ca_files: vec![ca_file.clone()],
    };
    let (ccert, ckey) = (
        dir.write("client.crt", &ccert),
        dir.write("client.key", &ckey),
    );
    let (_hub, _tls, addr) = serve_tls(files).await;
    let name = server_name("node-a", "default");

    let ok = client(&addr, &ca_file, Some((&ccert, &ckey)), &name);
    works(&ok).await.expect("a client with a certificate");
    let (_, nodes) = ok.status_and_nodes().await.unwrap();
    let tls = nodes.unwrap().nodes[0].tls.clone().unwrap();
    assert!(tls.enabled);
    assert_eq!(tls.server_name, "node-a.default.hubble-grpc.cilium.io");

    // The `tls://` form of the address, as the hubble CLI takes it.
    let mut prefixed = ok.clone();
    prefixed.server = format!("tls://{addr}");
    works(&prefixed).await.expect("tls:// address");

    let no_cert = client(&addr, &ca_file, None, &name);
    assert!(works(&no_cert).await.is_err(), "no client certificate");
    let other_ca = Ca::new("other");
    let (ocert, okey) = other_ca.issue(&["relay"], ExtendedKeyUsagePurpose::ClientAuth);
    let (ocert, okey) = (dir.write("o.crt", &ocert), dir.write("o.key", &okey));
    let foreign = client(&addr, &ca_file, Some((&ocert, &okey)), &name);
    assert!(
        works(&foreign).await.is_err(),
        "a client CA we do not trust"
    );
    let wrong_name = client(
        &addr,
        &ca_file,
        Some((&ccert, &ckey)),
        "node-a.other.example",
    );
    assert!(
        works(&wrong_name).await.is_err(),
        "a name the certificate lacks"
    );
    let mut plaintext = ClientOptions::new(&addr);
    plaintext.connect_timeout = Duration::from_secs(2);
    assert!(
        works(&plaintext).await.is_err(),
        "plaintext to a TLS server"
    );
}

/// Polls `f` until it is true (10 s).
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn rotated_files_take_over_without_a_restart() {
    let dir = Dir::new("reload");
    let (ca1, ca2) = (Ca::new("ca-one"), Ca::new("ca-two"));
    let (cert1, key1) = ca1.issue(&[WILDCARD], ExtendedKeyUsagePurpose::ServerAuth);
    let (c1, k1) = ca1.issue(&["relay"], ExtendedKeyUsagePurpose::ClientAuth);
    let ca1_file = dir.write("ca1.crt", &ca1.pem);
    let ca2_file = dir.write("ca2.crt", &ca2.pem);
    let (c1, k1) = (dir.write("c1.crt", &c1), dir.write("c1.key", &k1));
    let (c2, k2) = ca2.issue(&["relay"], ExtendedKeyUsagePurpose::ClientAuth);
    let (c2, k2) = (dir.write("c2.crt", &c2), dir.write("c2.key", &k2));
    let files = ServerTlsFiles {
        cert_file: dir.write("server.crt", &cert1),
        key_file: dir.write("server.key", &key1),
        client_ca_files: vec![dir.write("client-ca.crt", &ca1.pem)],
    };
    let (_hub, tls, addr) = serve_tls(files).await;
    let _reloader = tls.spawn_reloader(Duration::from_millis(50));
    let name = server_name("node-a", "default");
    let old = client(&addr, &ca1_file, Some((&c1, &k1)), &name);
    let new = client(&addr, &ca2_file, Some((&c2, &k2)), &name);
    works(&old).await.expect("before the rotation");
    assert!(works(&new).await.is_err());

    // Half a rotation (the new certificate, the old key) loads nothing: the old pair serves on.
    let (cert2, key2) = ca2.issue(&[WILDCARD], ExtendedKeyUsagePurpose::ServerAuth);
    dir.write("server.crt", &cert2);
    assert!(
        tls.reload_if_changed().is_err(),
        "a certificate without its key"
    );
    works(&old).await.expect("the old pair stays in force");

    // The key and the client CA follow: new connections get the new files.
    dir.write("server.key", &key2);
    dir.write("client-ca.crt", &ca2.pem);
    until("the rotated certificates serve", async || {
        works(&new).await.is_ok()
    })
    .await;
    assert!(works(&old).await.is_err(), "the old CA no longer verifies");
}

async fn next(s: &mut tonic::Streaming<ChangeNotification>) -> (String, String, i32) {
    let n = tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("a notification in time")
        .expect("stream")
        .expect("open");
    (n.name, n.address, n.r#type)
}

#[tokio::test]
async fn notify_sends_the_current_set_then_changes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let hub = Hub::new(15, "node-a", "127.0.0.1:4244");
    let r = router(hub.clone()).await;
    tokio::spawn(async move {
        r.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    let (added, deleted, updated) = (
        ChangeNotificationType::PeerAdded as i32,
        ChangeNotificationType::PeerDeleted as i32,
        ChangeNotificationType::PeerUpdated as i32,
    );
    let mut peer = PeerClient::connect(addr.clone()).await.unwrap();
    let mut s = peer.notify(NotifyRequest {}).await.unwrap().into_inner();
    assert_eq!(
        next(&mut s).await,
        ("node-a".into(), "127.0.0.1:4244".into(), added)
    );
    let p = |name: &str, ip: &str| PeerInfo {
        name: name.into(),
        address: format!("{ip}:4244"),
        tls_server_name: None,
    };
    hub.peers()
        .set([p("node-a", "10.0.0.1"), p("node-b", "10.0.0.2")]);
    assert_eq!(
        next(&mut s).await,
        ("node-a".into(), "10.0.0.1:4244".into(), updated)
    );
    assert_eq!(
        next(&mut s).await,
        ("node-b".into(), "10.0.0.2:4244".into(), added)
    );
    hub.peers().set([p("node-b", "10.0.0.2")]);
    assert_eq!(
        next(&mut s).await,
        ("node-a".into(), "10.0.0.1:4244".into(), deleted)
    );
    // A new stream starts from the current set.
    let mut s2 = peer.notify(NotifyRequest {}).await.unwrap().into_inner();
    assert_eq!(
        next(&mut s2).await,
        ("node-b".into(), "10.0.0.2:4244".into(), added)
    );
}
