//! The nodes the Hubble Peer service announces, so that Hubble Relay finds every agent of the
//! cluster as it finds Cilium's: one peer per Node object, at the node's InternalIP and the
//! port of `--hubble-listen-address`, named as Cilium names nodes (`<cluster>/<node>` outside
//! the cluster `default`), with the TLS server name Relay verifies when TLS is on.
//!
//! Without a cluster the agent announces itself alone. A node without a usable address is left
//! out (Relay could not reach it), and this agent is announced even while its own Node object is
//! missing, as Cilium's agent always knows its local node.

use imdsguard_hubble_server::server::{Hub, PeerInfo};
use imdsguard_hubble_server::tls::server_name;
use imdsguard_k8s::{NodeInfo, NodeWatch};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// How nodes become peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    /// The Hubble port every agent listens on (the port of `--hubble-listen-address`); None
    /// when this agent serves no TCP, and then bare IPs are announced (Relay assumes 4244).
    pub port: Option<u16>,
    /// `--cluster-name`.
    pub cluster_name: String,
    /// Whether the agents serve TLS: then each peer carries its TLS server name.
    pub tls: bool,
}

impl PeerSettings {
    pub fn new(listen_address: &str, cluster_name: &str, tls: bool) -> PeerSettings {
        PeerSettings {
            port: listen_port(listen_address),
            cluster_name: if cluster_name.is_empty() {
                "default".into()
            } else {
                cluster_name.into()
            },
            tls,
        }
    }

    /// Cilium's full node name: the cluster's name in front, except for `default`.
    pub fn peer_name(&self, node: &str) -> String {
        if self.cluster_name == "default" {
            node.to_owned()
        } else {
            format!("{}/{node}", self.cluster_name)
        }
    }

    fn tls_server_name(&self, node: &str) -> Option<String> {
        self.tls.then(|| server_name(node, &self.cluster_name))
    }

    /// A node as a peer: its first IPv4 InternalIP, else its first InternalIP, else its first
    /// ExternalIP. None when it has none.
    pub fn peer(&self, node: &NodeInfo) -> Option<PeerInfo> {
        let ip = node
            .internal_ips
            .iter()
            .find(|ip| ip.is_ipv4())
            .or_else(|| node.internal_ips.first())
            .or_else(|| node.external_ips.first())?;
        Some(PeerInfo {
            name: self.peer_name(&node.name),
            address: self.address(*ip),
            tls_server_name: self.tls_server_name(&node.name),
        })
    }

    fn address(&self, ip: IpAddr) -> String {
        match self.port {
            Some(port) => SocketAddr::new(ip, port).to_string(),
            None => ip.to_string(),
        }
    }

    /// This agent as a peer before (or without) its Node object: at the address it was told
    /// to listen on.
    pub fn local(&self, node: &str, listen_address: &str) -> PeerInfo {
        PeerInfo {
            name: self.peer_name(node),
            address: listen_address.to_owned(),
            tls_server_name: self.tls_server_name(node),
        }
    }

    /// Every node with an address, plus this agent if its Node object is not among them.
    pub fn peers(&self, nodes: &[NodeInfo], local: &PeerInfo) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = nodes.iter().filter_map(|n| self.peer(n)).collect();
        if !out.iter().any(|p| p.name == local.name) {
            out.push(local.clone());
        }
        out
    }
}

/// The port of a Go-style listen address (`:4244`, `127.0.0.2:4244`, `[::1]:4244`).
fn listen_port(addr: &str) -> Option<u16> {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// Keeps the hub's peers equal to the cluster's nodes until the runtime stops. Until the first
/// complete listing the hub announces this agent alone.
pub fn follow(hub: Arc<Hub>, nodes: NodeWatch, settings: PeerSettings, local: PeerInfo) {
    let mut rx = nodes.subscribe();
    tokio::spawn(async move {
        // Held so the reflector's task keeps publishing while this one listens.
        let _nodes = nodes;
        loop {
            let current = rx.borrow_and_update().clone();
            if let Some(list) = current {
                let peers = settings.peers(&list, &local);
                tracing::debug!(
                    peers = peers.len(),
                    "hubble: peers from the cluster's nodes"
                );
                hub.peers().set(peers);
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, internal: &[&str], external: &[&str]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            internal_ips: internal.iter().map(|i| i.parse().unwrap()).collect(),
            external_ips: external.iter().map(|i| i.parse().unwrap()).collect(),
            labels: Default::default(),
        }
    }

    #[test]
    fn nodes_become_peers_as_cilium_announces_them() {
        let s = PeerSettings::new(":4244", "", false);
        assert_eq!(s.port, Some(4244));
        let local = s.local("a", ":4244");
        let peers = s.peers(
            &[
                node("a", &["fd00::2", "10.0.0.2"], &[]),
                node("b", &["fd00::3"], &["203.0.113.3"]),
                node("c", &[], &["203.0.113.4"]),
                node("d", &[], &[]),
            ],
            &local,
        );
        let got: Vec<(&str, &str, Option<&str>)> = peers
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.address.as_str(),
                    p.tls_server_name.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", "10.0.0.2:4244", None),
                ("b", "[fd00::3]:4244", None),
                ("c", "203.0.113.4:4244", None),
            ]
        );
    }

    #[test]
    fn cluster_names_and_tls() {
        let s = PeerSettings::new("127.0.0.2:4244", "prod.eu", true);
        let local = s.local("node-x", "127.0.0.2:4244");
        assert_eq!(local.name, "prod.eu/node-x");
        let peers = s.peers(&[node("node-a.internal", &["10.0.0.2"], &[])], &local);
        assert_eq!(peers[0].name, "prod.eu/node-a.internal");
        assert_eq!(
            peers[0].tls_server_name.as_deref(),
            Some("node-a-internal.prod-eu.hubble-grpc.cilium.io")
        );
        // Its own Node object is missing: the agent still announces itself.
        assert_eq!(peers[1], local);
        assert_eq!(PeerSettings::new("", "default", false).port, None);
        let bare = PeerSettings::new("", "default", false);
        assert_eq!(
            bare.peer(&node("a", &["10.0.0.2"], &[])).unwrap().address,
            "10.0.0.2"
        );
    }
}
