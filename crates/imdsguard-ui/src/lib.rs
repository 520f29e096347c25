//! The agent's web UI (`imdsguard agent --ui-listen-address`): one page with a live flow table,
//! a service map and the IMDS view, and the JSON API it is built on (docs/ui.md). The page is
//! three hand-written files embedded in the binary; it loads nothing from elsewhere.
//!
//! - `metadata`, `peer`, `table`, `servicemap`, `imds`: pure logic over flows (what a metadata
//!   call is, the map's nodes, the table's columns and search, the map, the IMDS report).
//! - `server`: the HTTP endpoints over the hub's flow ring buffer.
//!
//! Limits: no authentication and no TLS (bind it to loopback and reach it through an SSH or
//! `kubectl port-forward` tunnel); one node's flows only; the map and the IMDS view count from
//! when the agent started, forgetting what has been idle for an hour.

pub mod imds;
pub mod metadata;
pub mod peer;
pub mod server;
pub mod servicemap;
pub mod table;

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
}
