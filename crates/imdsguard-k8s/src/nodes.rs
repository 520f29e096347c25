//! The cluster's Node objects, for the Hubble Peer service: every node's name, addresses and
//! labels, kept by a reflector and published as a whole set after each change.
//!
//! Independent of [`crate::Cluster`]: an agent that only serves flows (`--replay-flows`) still
//! announces the cluster's nodes, without watching pods or policies.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeMap;
use std::net::IpAddr;
use tokio::sync::watch;

/// One node as the Peer service needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// `status.addresses` of type InternalIP, in the object's order.
    pub internal_ips: Vec<IpAddr>,
    /// `status.addresses` of type ExternalIP, in the object's order.
    pub external_ips: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
}

impl NodeInfo {
    pub fn from_node(node: &Node) -> Option<NodeInfo> {
        let name = node.metadata.name.clone()?;
        let mut info = NodeInfo {
            name,
            internal_ips: Vec::new(),
            external_ips: Vec::new(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
        };
        let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for a in addresses.into_iter().flatten() {
            // An address that does not parse (a hostname in the wrong field) is not reachable
            // as an IP: left out rather than announced.
            let Ok(ip) = a.address.trim().parse::<IpAddr>() else {
                continue;
            };
            match a.type_.as_str() {
                "InternalIP" => info.internal_ips.push(ip),
                "ExternalIP" => info.external_ips.push(ip),
                _ => {}
            }
        }
        Some(info)
    }
}

/// The running Node reflector. Cheap to clone.
#[derive(Clone)]
pub struct NodeWatch {
    store: Store<Node>,
    /// None until the first complete listing; then every node, by name.
    rx: watch::Receiver<Option<Vec<NodeInfo>>>,
}

impl NodeWatch {
    /// Starts watching every Node on the current tokio runtime. Errors are retried with
    /// client-go's backoff and logged once per distinct error; the last listing stays.
    pub fn start(client: Client) -> NodeWatch {
        let writer: Writer<Node> = Writer::default();
        let store = writer.as_reader();
        let (tx, rx) = watch::channel(None);
        let stream = reflector::reflector(
            writer,
            watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff(),
        );
        let reader = store.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut synced = false;
            let mut last_error: Option<String> = None;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(e) => {
                        last_error = None;
                        synced |= matches!(e, watcher::Event::InitDone);
                        // During a (re)listing the store holds a partial set: wait for its end.
                        if !synced
                            || matches!(e, watcher::Event::Init | watcher::Event::InitApply(_))
                        {
                            continue;
                        }
                        let nodes = snapshot(&reader);
                        tx.send_if_modified(|cur| {
                            if cur.as_ref() == Some(&nodes) {
                                return false;
                            }
                            *cur = Some(nodes);
                            true
                        });
                    }
                    Err(e) => {
                        let text = e.to_string();
                        if last_error.as_deref() != Some(&text) {
                            tracing::warn!(error = %text, "kubernetes: cannot watch nodes; retrying");
                            last_error = Some(text);
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        NodeWatch { store, rx }
    }

    /// The nodes after the first complete listing, then after every change.
    pub fn subscribe(&self) -> watch::Receiver<Option<Vec<NodeInfo>>> {
        self.rx.clone()
    }

    /// How many Node objects the reflector holds now.
    pub fn len(&self) -> usize {
        self.store.state().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn snapshot(store: &Store<Node>) -> Vec<NodeInfo> {
    let mut nodes: Vec<NodeInfo> = store
        .state()
        .iter()
        .filter_map(|n| NodeInfo::from_node(n))
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_by_type() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "ExternalIP", "address": "203.0.113.7"},
                {"type": "InternalIP", "address": "10.0.0.7"},
                {"type": "InternalIP", "address": "fd00::7"},
                {"type": "InternalIP", "address": "not-an-ip"}
            ]}
        }))
        .expect("node");
        let info = NodeInfo::from_node(&node).expect("named");
        assert_eq!(info.name, "n1");
        assert_eq!(
            info.internal_ips,
            [
                "10.0.0.7".parse::<IpAddr>().unwrap(),
                "fd00::7".parse().unwrap()
            ]
        );
        assert_eq!(
            info.external_ips,
            ["203.0.113.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(info.labels["topology.kubernetes.io/zone"], "z1");
    }
}
