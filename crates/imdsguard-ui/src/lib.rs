//! The agent's web UI (`imdsguard agent --ui-listen-address`): one page with a live flow table,
//! a service map and the IMDS view, and the JSON API it is built on (docs/ui.md). The page is
//! three hand-written files embedded in the binary; it loads nothing from elsewhere.
//!
//! - `metadata`, `peer`, `table`, `servicemap`, `imds`: pure logic over flows (what a metadata
//!   call is, the map's nodes, the table's columns and search, the map, the IMDS report).
//! - `audit`: what the agent has in audit mode now, laid over the IMDS view.
//! - `server`: the HTTP endpoints over the hub's flow ring buffer.
//!
//! Limits: no authentication and no TLS (bind it to loopback and reach it through an SSH or
//! `kubectl port-forward` tunnel); one node's flows only; the map and the IMDS view count from
//! when the agent started, forgetting what has been idle for an hour.

pub mod audit;
pub mod imds;
pub mod metadata;
pub mod peer;
pub mod server;
pub mod servicemap;
pub mod table;

pub use audit::{AuditModes, AuditSource, PolicyName};
pub use server::UiServer;

#[cfg(test)]
mod testdata {
    use imdsguard_hubble_proto::flow::Flow;
    use imdsguard_hubble_proto::observer::GetFlowsResponse;
    use imdsguard_hubble_proto::observer::get_flows_response::ResponseTypes;

    /// The seed's twelve flows (tests/flows/seed.jsonl), in order.
    pub fn seed_flows() -> Vec<Flow> {
        include_str!("../../../tests/flows/seed.jsonl")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| {
                match serde_json::from_str::<GetFlowsResponse>(l)
                    .expect("seed line")
                    .response_types
                {
                    Some(ResponseTypes::Flow(f)) => Some(f),
                    _ => None,
                }
            })
            .collect()
    }

    /// A process name a hostile process could give itself (15 bytes at most, as comm).
    pub const HOSTILE_COMM: &str = "<img src=x>";

    /// The seed as imdsguard records it: the first webapp pod's flows carry its sidecar
    /// (`istio-proxy/envoy[4242]`, uid 1337, with a socket cookie and cgroup id); the second
    /// pod's sidecar runs a process with a hostile name; the rest carry nothing.
    pub fn attributed_seed_flows() -> Vec<Flow> {
        use imdsguard_hubble_proto::process::{self, ProcessInfo};
        let mut flows = seed_flows();
        for f in &mut flows {
            let pod = f
                .source
                .as_ref()
                .map(|s| s.pod_name.clone())
                .unwrap_or_default();
            let p = match pod.as_str() {
                "go-webapp-847857f68-2qlnd" => ProcessInfo {
                    container: "istio-proxy".into(),
                    process: "envoy".into(),
                    pid: 4242,
                    uid: Some(1337),
                },
                "go-webapp-8568cffcd4-l5s48" => ProcessInfo {
                    container: "istio-proxy".into(),
                    process: HOSTILE_COMM.into(),
                    pid: 5151,
                    uid: Some(0),
                },
                _ => continue,
            };
            process::set(f, &p);
            f.socket_cookie = 1 << 40 | 7;
            f.cgroup_id = 120;
        }
        flows
    }
}
