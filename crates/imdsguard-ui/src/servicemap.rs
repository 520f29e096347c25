//! The service map: who talks to whom, built flow by flow. Nodes are [`Peer`]s (workloads grouped
//! by namespace, plus host, world, CIDR, reserved and metadata nodes); an edge goes from caller
//! to callee and counts its flows by verdict, with the ports seen.
//!
//! Bounded: at most [`MAX_NODES`] nodes and [`MAX_EDGES`] edges (flows that would add more are
//! counted in `truncated`), at most [`MAX_PODS`] pod names per node and [`MAX_PORTS`] ports per
//! edge; [`ServiceMap::expire`] drops what has been idle for the window.

use crate::peer::{Peer, PeerKind, Sides};
use imdsguard_flow::flow::{Flow, Verdict};
use imdsguard_hubble_proto::wkt::Timestamp;
use serde::Serialize;
use serde::ser::SerializeMap;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

pub const MAX_NODES: usize = 2_000;
pub const MAX_EDGES: usize = 10_000;
pub const MAX_PODS: usize = 16;
pub const MAX_PORTS: usize = 16;

/// Flows counted by verdict; serialized as `{"FORWARDED": 3, "DROPPED": 1}` (zeros left out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerdictCounts([u64; 8]);

impl VerdictCounts {
    pub fn add(&mut self, verdict: i32) {
        let i = usize::try_from(verdict).unwrap_or(0).min(7);
        self.0[i] += 1;
    }

    pub fn get(&self, v: Verdict) -> u64 {
        self.0[v as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// How a line or badge is coloured: `denied` (only drops or errors), `mixed` (drops and
    /// passes), `audit` (audited, never dropped), `allowed`, or `none` (no verdict yet).
    pub fn class(&self) -> &'static str {
        let denied = self.get(Verdict::Dropped) + self.get(Verdict::Error);
        let passed = self.get(Verdict::Forwarded)
            + self.get(Verdict::Redirected)
            + self.get(Verdict::Translated)
            + self.get(Verdict::Traced);
        match (denied > 0, passed > 0, self.get(Verdict::Audit) > 0) {
            (true, true, _) => "mixed",
            (true, false, _) => "denied",
            (false, _, true) => "audit",
            (false, true, false) => "allowed",
            (false, false, false) => "none",
        }
    }
}

impl Serialize for VerdictCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (i, n) in self.0.iter().enumerate() {
            if *n > 0 {
                let name =
                    Verdict::try_from(i as i32).map_or("VERDICT_UNKNOWN", |v| v.as_str_name());
                m.serialize_entry(name, n)?;
            }
        }
        m.end()
    }
}

struct NodeState {
    peer: Peer,
    pods: BTreeSet<String>,
    identities: BTreeSet<u32>,
    flows: u64,
    last: Instant,
    last_time: Option<Timestamp>,
}

struct EdgeState {
    ports: BTreeSet<(&'static str, u32)>,
    verdicts: VerdictCounts,
    l7: u64,
    last_verdict: i32,
    last: Instant,
    last_time: Option<Timestamp>,
}

/// The map, fed one flow at a time (see the module docs).
#[derive(Default)]
pub struct ServiceMap {
    nodes: HashMap<String, NodeState>,
    edges: HashMap<(String, String), EdgeState>,
    seen: u64,
    truncated: u64,
}

#[derive(Debug, Serialize)]
pub struct MapNode {
    pub id: String,
    pub kind: PeerKind,
    pub label: String,
    pub group: String,
    pub namespace: String,
    pub workload_kind: String,
    pub pods: Vec<String>,
    pub identities: Vec<u32>,
    /// Flows in which this node took part.
    pub flows: u64,
    pub last_seen: Option<Timestamp>,
    /// One of its pods is in audit mode now, as the agent resolved it (`crate::audit`).
    pub audit_mode: bool,
}

#[derive(Debug, Serialize)]
pub struct MapEdge {
    pub source: String,
    pub target: String,
    /// `TCP/80`, `UDP/53`, `ICMPv4` …
    pub ports: Vec<String>,
    pub flows: u64,
    pub verdicts: VerdictCounts,
    /// See [`VerdictCounts::class`].
    pub class: &'static str,
    pub last_verdict: &'static str,
    /// Flows with an L7 record (proxied HTTP or DNS).
    pub l7: u64,
    pub last_seen: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
pub struct MapGroup {
    pub id: String,
    /// `namespace`, `host`, `world`, `cidr`, `cluster` or `metadata`.
    pub kind: &'static str,
    pub nodes: usize,
}

/// What `GET /api/map` returns.
#[derive(Debug, Serialize)]
pub struct MapView {
    pub groups: Vec<MapGroup>,
    pub nodes: Vec<MapNode>,
    pub edges: Vec<MapEdge>,
    /// Flows added since the agent started (including expired ones).
    pub flows_seen: u64,
    /// Flows that were not added because a limit was reached.
    pub truncated: u64,
}

impl ServiceMap {
    /// Adds `f`, whose sides are `sides` (`Sides::of(f)`).
    pub fn observe(&mut self, f: &Flow, sides: &Sides, now: Instant) {
        self.seen += 1;
        let need_nodes = [&sides.caller, &sides.callee]
            .iter()
            .filter(|p| !self.nodes.contains_key(&p.id))
            .count();
        let key = (sides.caller.id.clone(), sides.callee.id.clone());
        if self.nodes.len() + need_nodes > MAX_NODES
            || (!self.edges.contains_key(&key) && self.edges.len() >= MAX_EDGES)
        {
            self.truncated += 1;
            return;
        }
        for peer in [&sides.caller, &sides.callee] {
            let node = self
                .nodes
                .entry(peer.id.clone())
                .or_insert_with(|| NodeState {
                    peer: peer.clone(),
                    pods: BTreeSet::new(),
                    identities: BTreeSet::new(),
                    flows: 0,
                    last: now,
                    last_time: None,
                });
            node.flows += 1;
            node.last = now;
            node.last_time = f.time;
            if !peer.pod.is_empty() && node.pods.len() < MAX_PODS {
                node.pods.insert(peer.pod.clone());
            }
            if peer.identity != 0 && node.identities.len() < MAX_PODS {
                node.identities.insert(peer.identity);
            }
        }
        let edge = self.edges.entry(key).or_insert_with(|| EdgeState {
            ports: BTreeSet::new(),
            verdicts: VerdictCounts::default(),
            l7: 0,
            last_verdict: 0,
            last: now,
            last_time: None,
        });
        edge.verdicts.add(f.verdict);
        edge.last_verdict = f.verdict;
        edge.last = now;
        edge.last_time = f.time;
        if f.l7.is_some() {
            edge.l7 += 1;
        }
        if !sides.protocol.is_empty() && edge.ports.len() < MAX_PORTS {
            edge.ports.insert((sides.protocol, sides.port));
        }
    }

    /// Drops edges idle for longer than `window`, then nodes left without an edge.
    pub fn expire(&mut self, now: Instant, window: Duration) {
        self.edges
            .retain(|_, e| now.saturating_duration_since(e.last) <= window);
        let mut used = BTreeSet::new();
        for (a, b) in self.edges.keys() {
            used.insert(a.as_str());
            used.insert(b.as_str());
        }
        self.nodes.retain(|id, _| used.contains(id.as_str()));
    }

    /// The namespaces of the workloads on the map, sorted.
    pub fn namespaces(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self
            .nodes
            .values()
            .filter(|n| n.peer.kind == PeerKind::Workload)
            .map(|n| n.peer.namespace.as_str())
            .collect();
        set.into_iter().map(str::to_owned).collect()
    }

    /// The map, sorted by group and label; with `namespace`, only the edges touching a workload
    /// of that namespace and their nodes.
    pub fn view(&self, namespace: Option<&str>) -> MapView {
        let touches = |id: &str| {
            namespace.is_none_or(|ns| {
                self.nodes
                    .get(id)
                    .is_some_and(|n| n.peer.kind == PeerKind::Workload && n.peer.namespace == ns)
            })
        };
        let mut edges: Vec<MapEdge> = self
            .edges
            .iter()
            .filter(|((a, b), _)| touches(a) || touches(b))
            .map(|((a, b), e)| MapEdge {
                source: a.clone(),
                target: b.clone(),
                ports: e
                    .ports
                    .iter()
                    .map(|(proto, port)| match port {
                        0 => (*proto).to_owned(),
                        p => format!("{proto}/{p}"),
                    })
                    .collect(),
                flows: e.verdicts.total(),
                verdicts: e.verdicts,
                class: e.verdicts.class(),
                last_verdict: Verdict::try_from(e.last_verdict)
                    .map_or("VERDICT_UNKNOWN", |v| v.as_str_name()),
                l7: e.l7,
                last_seen: e.last_time,
            })
            .collect();
        edges.sort_by(|x, y| (&x.source, &x.target).cmp(&(&y.source, &y.target)));
        let used: BTreeSet<&str> = edges
            .iter()
            .flat_map(|e| [e.source.as_str(), e.target.as_str()])
            .collect();
        let mut nodes: Vec<MapNode> = self
            .nodes
            .iter()
            .filter(|(id, _)| namespace.is_none() || used.contains(id.as_str()))
            .map(|(id, n)| MapNode {
                id: id.clone(),
                kind: n.peer.kind,
                label: n.peer.label.clone(),
                group: n.peer.group.clone(),
                namespace: n.peer.namespace.clone(),
                workload_kind: n.peer.workload_kind.clone(),
                pods: n.pods.iter().cloned().collect(),
                identities: n.identities.iter().copied().collect(),
                flows: n.flows,
                last_seen: n.last_time,
                audit_mode: false,
            })
            .collect();
        nodes.sort_by(|x, y| (&x.group, &x.label, &x.id).cmp(&(&y.group, &y.label, &y.id)));
        let mut groups: Vec<MapGroup> = Vec::new();
        for n in &nodes {
            match groups.last_mut() {
                Some(g) if g.id == n.group => g.nodes += 1,
                _ => groups.push(MapGroup {
                    id: n.group.clone(),
                    kind: match n.kind {
                        PeerKind::Workload => "namespace",
                        PeerKind::Host => "host",
                        PeerKind::Reserved => "cluster",
                        PeerKind::Cidr => "cidr",
                        PeerKind::Fqdn | PeerKind::World => "world",
                        PeerKind::Metadata => "metadata",
                    },
                    nodes: 1,
                }),
            }
        }
        MapView {
            groups,
            nodes,
            edges,
            flows_seen: self.seen,
            truncated: self.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::seed_flows;

    #[test]
    fn the_seed_as_a_map() {
        let mut map = ServiceMap::default();
        let now = Instant::now();
        for f in seed_flows() {
            map.observe(&f, &Sides::of(&f), now);
        }
        let v = map.view(None);
        let ids: Vec<&str> = v.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "go-webapp/go-webapp",
                "host",
                "logging/fluent-bit",
                "metadata:169.254.169.254"
            ]
        );
        let groups: Vec<(&str, &str, usize)> = v
            .groups
            .iter()
            .map(|g| (g.id.as_str(), g.kind, g.nodes))
            .collect();
        assert_eq!(
            groups,
            [
                ("go-webapp", "namespace", 1),
                ("host", "host", 1),
                ("logging", "namespace", 1),
                ("metadata", "metadata", 1)
            ]
        );
        let webapp = &v.nodes[0];
        assert_eq!(
            webapp.pods,
            ["go-webapp-847857f68-2qlnd", "go-webapp-8568cffcd4-l5s48"]
        );
        assert_eq!(webapp.workload_kind, "Deployment");
        let edges: Vec<(&str, &str, u64, &str, &str)> = v
            .edges
            .iter()
            .map(|e| {
                (
                    e.source.as_str(),
                    e.target.as_str(),
                    e.flows,
                    e.class,
                    e.ports.join(","),
                )
            })
            .map(|(a, b, n, c, p)| (a, b, n, c, if p == "TCP/80" { "TCP/80" } else { "?" }))
            .collect();
        // Every flow of the seed goes to IMDS, the fluent-bit response (client as source, a reply)
        // included.
        assert_eq!(
            edges,
            [
                (
                    "go-webapp/go-webapp",
                    "metadata:169.254.169.254",
                    6,
                    "mixed",
                    "TCP/80"
                ),
                ("host", "metadata:169.254.169.254", 1, "allowed", "TCP/80"),
                (
                    "logging/fluent-bit",
                    "metadata:169.254.169.254",
                    5,
                    "allowed",
                    "TCP/80"
                ),
            ]
        );
        assert_eq!(v.edges[0].verdicts.get(Verdict::Dropped), 2);
        assert_eq!(v.edges[2].l7, 2);
        assert_eq!(
            serde_json::to_value(v.edges[0].verdicts).unwrap(),
            serde_json::json!({"FORWARDED": 4, "DROPPED": 2})
        );
        assert_eq!(v.flows_seen, 12);

        assert_eq!(map.namespaces(), ["go-webapp", "logging"]);
        let only = map.view(Some("logging"));
        assert_eq!(only.edges.len(), 1);
        assert_eq!(only.nodes.len(), 2);
    }

    #[test]
    fn replies_are_turned_around() {
        use imdsguard_flow::flow::{Endpoint, Ip};
        let flow = |src: &str, dst: &str, reply: bool| Flow {
            verdict: 1,
            ip: Some(Ip {
                source: src.into(),
                destination: dst.into(),
                ..Default::default()
            }),
            source: Some(Endpoint {
                namespace: if src == "10.0.0.1" { "a" } else { "b" }.into(),
                pod_name: if src == "10.0.0.1" {
                    "client"
                } else {
                    "server"
                }
                .into(),
                ..Default::default()
            }),
            destination: Some(Endpoint {
                namespace: if dst == "10.0.0.1" { "a" } else { "b" }.into(),
                pod_name: if dst == "10.0.0.1" {
                    "client"
                } else {
                    "server"
                }
                .into(),
                ..Default::default()
            }),
            is_reply: Some(pbjson_types::BoolValue { value: reply }),
            ..Default::default()
        };
        let mut map = ServiceMap::default();
        let now = Instant::now();
        {
            let f = flow("10.0.0.1", "10.0.0.2", false);
            map.observe(&f, &Sides::of(&f), now);
        }
        {
            let f = flow("10.0.0.2", "10.0.0.1", true);
            map.observe(&f, &Sides::of(&f), now);
        }
        let v = map.view(None);
        assert_eq!(v.edges.len(), 1);
        assert_eq!(
            (
                v.edges[0].source.as_str(),
                v.edges[0].target.as_str(),
                v.edges[0].flows
            ),
            ("a/client", "b/server", 2)
        );
    }

    #[test]
    fn limits_and_expiry() {
        use imdsguard_flow::flow::{Endpoint, Ip};
        let mut map = ServiceMap::default();
        let start = Instant::now();
        for i in 0..(MAX_NODES + 10) {
            let f = Flow {
                verdict: 1,
                ip: Some(Ip {
                    source: format!("10.1.{}.{}", i / 250, i % 250),
                    destination: "169.254.169.254".into(),
                    ..Default::default()
                }),
                source: Some(Endpoint {
                    namespace: "ns".into(),
                    pod_name: format!("pod-{i}"),
                    ..Default::default()
                }),
                ..Default::default()
            };
            map.observe(&f, &Sides::of(&f), start + Duration::from_secs(i as u64));
        }
        let v = map.view(None);
        assert_eq!(v.nodes.len(), MAX_NODES);
        assert_eq!(v.edges.len(), MAX_NODES - 1);
        assert_eq!(v.truncated, 11);
        // Edges last seen more than 100 s before the last flow go, and their lone nodes too.
        map.expire(
            start + Duration::from_secs(MAX_NODES as u64 + 10),
            Duration::from_secs(100),
        );
        let v = map.view(None);
        assert!(v.edges.len() <= 101, "{}", v.edges.len());
        assert_eq!(v.nodes.len(), v.edges.len() + 1);
    }
}
