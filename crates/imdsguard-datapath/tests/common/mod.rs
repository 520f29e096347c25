//! What the datapath's root tests share: the private pin tree, the test's subnets, the policy
//! repository over its pods, the protected "metadata" server, attaching to a pod's veth, reading
//! events, and HTTP from inside a pod. Nothing here sends a packet outside the test's namespaces.
#![allow(dead_code)]

use imdsguard_datapath::abi::{self, Event};
use imdsguard_datapath::loader::{Attachment, Datapath, DatapathError, EventReader, unpin_all};
use imdsguard_datapath::sync::SyncOptions;
use imdsguard_manifest::Source;
use imdsguard_netns::{Pod, unique_name};
use imdsguard_policy::{DecodeOptions, EndpointSpec, EngineOptions, Repository, decode_source};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The test's pin tree on a private bpffs (the datapath mounts it on first open), removed with
/// everything pinned in it (programs, maps, hooks) whatever happens.
pub struct Pins(pub PathBuf);

impl Pins {
    pub fn new(tag: &str) -> Pins {
        Pins(std::env::temp_dir().join(unique_name(tag)))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = unpin_all(&self.0);
        let _ = imdsguard_netns::run("umount", &[&self.0.to_string_lossy()]);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Says that the calling test is skipped and why (imdsguard_netns::skip_test).
pub fn skip(reason: &str) {
    imdsguard_netns::skip_test(env!("CARGO_CRATE_NAME"), reason);
}

/// 10.<k>.<n>.0/24 for the n-th lab of this process, k in `base..base + spread` by process id:
/// host routes must not collide between parallel tests, runs or test files (each file its base).
pub fn subnet(base: u8, spread: u8) -> (u8, u8) {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
    (
        base + (std::process::id() % u32::from(spread)) as u8,
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    )
}

/// A pod's addresses, IPv4 first.
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let mut ips = vec![IpAddr::from(pod.ipv4)];
    ips.extend(pod.ipv6.map(IpAddr::from));
    ips
}

/// `policies` (SERVER and SERVER6 replaced by the server's addresses) over the endpoints
/// `(name, ips)`, each labelled `app=<name>` in namespace `default`, resolved.
pub fn repository(server: &Pod, policies: &str, endpoints: &[(&str, Vec<IpAddr>)]) -> Repository {
    let mut text = policies.to_owned();
    if let Some(v6) = server.ipv6 {
        text = text.replace("SERVER6", &v6.to_string());
    }
    let text = text.replace("SERVER", &server.ipv4.to_string());
    let decoded = decode_source(
        &Source::new("policies.yaml", text),
        &DecodeOptions::default(),
    );
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    let mut repo = Repository::new(EngineOptions::default());
    repo.load(&decoded);
    for (name, ips) in endpoints {
        repo.upsert_endpoint(EndpointSpec {
            name: (*name).to_owned(),
            namespace: "default".to_owned(),
            labels: vec![("app".to_owned(), (*name).to_owned())],
            ips: ips.clone(),
            ..Default::default()
        });
    }
    repo.resolve();
    repo
}

/// The sync options that make the test's server a protected ("metadata") address, both families.
pub fn protect(server: &Pod) -> SyncOptions {
    SyncOptions {
        protected: pod_ips(server)
            .into_iter()
            .map(ipnet::IpNet::from)
            .collect(),
        ..Default::default()
    }
}

/// Attaches to a pod's interface and says which pod is behind it (its addresses), as the agent
/// does.
pub fn attach(dp: &mut Datapath, pod: &Pod) -> Result<Vec<Attachment>, DatapathError> {
    dp.attach_pod(&pod.host_if, abi::IfaceInfo::new(&pod_ips(pod), 0, 0))
}

/// The events in the ring now: the programs submit without a wake-up, so they are all there.
pub fn drain(reader: &mut EventReader) -> Vec<Event> {
    let mut out = Vec::new();
    reader.drain(|e| out.push(e));
    out
}

/// Whether `from` gets an HTTP answer from `to`:8080 within 2 s.
pub fn http_ok(from: &Pod, to: IpAddr) -> bool {
    let url = match to {
        IpAddr::V4(v4) => format!("http://{v4}:8080/"),
        IpAddr::V6(v6) => format!("http://[{v6}]:8080/"),
    };
    from.ns
        .exec("curl", &["-s", "-o", "/dev/null", "--max-time", "2", &url])
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Waits until `from` reaches the server's HTTP port (before any program is attached).
pub fn wait_for_http(from: &Pod, server: &Pod) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_ok(from, server.ipv4.into()) {
        assert!(Instant::now() < deadline, "the test server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}
