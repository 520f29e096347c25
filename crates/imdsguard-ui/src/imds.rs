//! The IMDS view: every workload that called a metadata endpoint, with what happened to its calls
//! (verdicts, connections allowed and denied, HTTP methods and paths with their status codes,
//! credential requests with their `resource`) and the policies that decided. The "who talks to
//! IMDS" report neither AKS nor Hubble gives.
//!
//! Policies are read from policy-verdict events and L7 records only: a drop or trace event of the
//! same connection carries no policy names and would otherwise count as unattributed.
//!
//! Who in the pod called: flows that carry imdsguard's process information (the container and
//! process of the socket, `imdsguard_hubble_proto::process`) are also grouped by pod and
//! container within their caller, with the processes seen (comm, pids, uids). Callers stay
//! workloads, so flows without process information make the same report as before.
//!
//! Bounded: at most [`MAX_CALLERS`] callers (more are counted in `truncated`), and per caller at
//! most [`MAX_DISTINCT`] distinct requests, credentials, policies, pods, addresses and
//! containers, [`MAX_PROCESSES`] processes per container and [`MAX_PIDS`] pids and uids per
//! process (more are counted in the caller's `truncated`).

use crate::metadata::{CredentialKind, MetadataService, RequestTarget};
use crate::peer::{PeerKind, Sides};
use crate::servicemap::VerdictCounts;
use imdsguard_flow::flow::{Flow, L7FlowType, Policy, Verdict, layer7};
use imdsguard_flow::names;
use imdsguard_hubble_proto::process;
use imdsguard_hubble_proto::wkt::Timestamp;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

pub const MAX_CALLERS: usize = 1_000;
pub const MAX_DISTINCT: usize = 64;
/// Distinct process names (comm) kept per container.
pub const MAX_PROCESSES: usize = 8;
/// Distinct pids, and uids, kept per process name.
pub const MAX_PIDS: usize = 8;

/// How a policy took part in a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allowed,
    Denied,
    Audited,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PolicyKey {
    kind: String,
    namespace: String,
    name: String,
    decision: Decision,
}

#[derive(Debug, Default, Clone)]
struct Requests {
    verdicts: VerdictCounts,
    codes: BTreeMap<u32, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct CredentialKey {
    kind: CredentialKind,
    resource: String,
    identity: String,
}

#[derive(Debug, Default)]
struct ProcessStats {
    pids: BTreeSet<u32>,
    uids: BTreeSet<u32>,
    flows: u64,
}

#[derive(Debug, Default)]
struct ContainerStats {
    processes: BTreeMap<String, ProcessStats>,
    verdicts: VerdictCounts,
    last_seen: Option<Timestamp>,
}

struct Caller {
    id: String,
    kind: PeerKind,
    label: String,
    namespace: String,
    workload_kind: String,
    pods: BTreeSet<String>,
    ips: BTreeSet<String>,
    identities: BTreeSet<u32>,
    endpoints: BTreeSet<(MetadataService, String, u32)>,
    verdicts: VerdictCounts,
    connections: BTreeMap<Decision, u64>,
    requests: BTreeMap<(String, String), Requests>,
    credentials: BTreeMap<CredentialKey, Requests>,
    policies: BTreeMap<PolicyKey, u64>,
    /// By (pod, container), from flows with process information.
    containers: BTreeMap<(String, String), ContainerStats>,
    /// Policy verdicts that denied with no policy named: nothing allowed the connection.
    default_denied: u64,
    truncated: u64,
    first_seen: Option<Timestamp>,
    last_seen: Option<Timestamp>,
    last: Instant,
}

/// The report, fed one flow at a time (see the module docs).
#[derive(Default)]
pub struct ImdsReport {
    callers: BTreeMap<String, Caller>,
    calls: u64,
    truncated: u64,
}

#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub service: MetadataService,
    pub address: String,
    pub port: u32,
}

#[derive(Debug, Serialize)]
pub struct RequestView {
    pub method: String,
    pub path: String,
    pub count: u64,
    pub verdicts: VerdictCounts,
    /// HTTP status codes of the responses, e.g. `{"200": 3, "403": 1}`.
    pub codes: BTreeMap<u32, u64>,
}

#[derive(Debug, Serialize)]
pub struct CredentialView {
    pub kind: CredentialKind,
    pub resource: String,
    pub identity: String,
    pub count: u64,
    pub verdicts: VerdictCounts,
    pub codes: BTreeMap<u32, u64>,
}

#[derive(Debug, Serialize)]
pub struct PolicyView {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub decision: Decision,
    /// Decisions (policy-verdict events and L7 records) that named this policy.
    pub count: u64,
    /// The policy is in audit mode now (the agent's state, `crate::audit`).
    pub audit_mode: bool,
}

#[derive(Debug, Serialize)]
pub struct ProcessView {
    /// The process name (the kernel's comm: set by the process itself, so never trusted as
    /// markup); empty when the flows named only the container.
    pub name: String,
    pub pids: Vec<u32>,
    pub uids: Vec<u32>,
    pub flows: u64,
}

/// One container of one of the caller's pods (or, for the host, its processes).
#[derive(Debug, Serialize)]
pub struct ContainerView {
    /// The pod's name; empty for callers without pods (the host).
    pub pod: String,
    /// The container's name in its pod; empty when the flows did not say.
    pub container: String,
    pub processes: Vec<ProcessView>,
    /// The container's flows to metadata endpoints, by verdict.
    pub verdicts: VerdictCounts,
    /// See [`VerdictCounts::class`].
    pub class: &'static str,
    pub flows: u64,
    pub last_seen: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
pub struct CallerView {
    /// The service map's node id (`namespace/workload`, `host` …).
    pub id: String,
    pub kind: PeerKind,
    pub workload: String,
    pub namespace: String,
    pub workload_kind: String,
    pub pods: Vec<String>,
    pub ips: Vec<String>,
    pub identities: Vec<u32>,
    pub endpoints: Vec<EndpointView>,
    /// Every flow of this caller to a metadata endpoint, by verdict.
    pub verdicts: VerdictCounts,
    /// See [`VerdictCounts::class`].
    pub class: &'static str,
    /// The caller is (partly) in audit mode: some of its flows were AUDIT (a policy in audit
    /// mode, or the pod's namespace or endpoint in audit mode, let through what it would deny).
    /// The UI shows an AUDIT badge on it. Also set when the agent has one of its pods in audit
    /// mode now (`audit_mode`).
    pub audit: bool,
    /// One of its pods is in audit mode now, as the agent resolved it (`crate::audit`).
    pub audit_mode: bool,
    /// `allowed`, `denied`, `audited`: policy-verdict events (one per connection attempt).
    pub connections: BTreeMap<Decision, u64>,
    pub requests: Vec<RequestView>,
    pub credentials: Vec<CredentialView>,
    pub policies: Vec<PolicyView>,
    /// Who in the pod called, by pod and container; left out of the JSON when no flow carried
    /// process information.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerView>,
    pub default_denied: u64,
    /// Distinct requests, credentials, policies … not kept because of the limits.
    pub truncated: u64,
    pub first_seen: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
}

/// What `GET /api/imds` returns.
#[derive(Debug, Serialize)]
pub struct ImdsView {
    pub callers: Vec<CallerView>,
    /// Flows to metadata endpoints seen since the agent started (including expired callers).
    pub calls_seen: u64,
    /// Flows not counted because [`MAX_CALLERS`] was reached.
    pub truncated: u64,
}

fn insert_capped<T: Ord>(set: &mut BTreeSet<T>, value: T, truncated: &mut u64) {
    insert_limited(set, value, MAX_DISTINCT, truncated);
}

fn insert_limited<T: Ord>(set: &mut BTreeSet<T>, value: T, limit: usize, truncated: &mut u64) {
    if set.len() < limit {
        set.insert(value);
    } else if !set.contains(&value) {
        *truncated += 1;
    }
}

fn entry_capped<'a, K: Ord, V: Default>(
    map: &'a mut BTreeMap<K, V>,
    key: K,
    truncated: &mut u64,
) -> Option<&'a mut V> {
    entry_limited(map, key, MAX_DISTINCT, truncated)
}

fn entry_limited<'a, K: Ord, V: Default>(
    map: &'a mut BTreeMap<K, V>,
    key: K,
    limit: usize,
    truncated: &mut u64,
) -> Option<&'a mut V> {
    if map.len() >= limit && !map.contains_key(&key) {
        *truncated += 1;
        return None;
    }
    Some(map.entry(key).or_default())
}

impl ImdsReport {
    /// Counts `f` (whose sides are `sides`, `Sides::of(f)`) if it is a call to (or an answer
    /// from) a metadata endpoint.
    pub fn observe(&mut self, f: &Flow, sides: &Sides, now: Instant) {
        let Some(service) = sides.callee.metadata else {
            return;
        };
        self.calls += 1;
        let caller = &sides.caller;
        if !self.callers.contains_key(&caller.id) && self.callers.len() >= MAX_CALLERS {
            self.truncated += 1;
            return;
        }
        let c = self
            .callers
            .entry(caller.id.clone())
            .or_insert_with(|| Caller {
                id: caller.id.clone(),
                kind: caller.kind,
                label: caller.label.clone(),
                namespace: caller.namespace.clone(),
                workload_kind: caller.workload_kind.clone(),
                pods: BTreeSet::new(),
                ips: BTreeSet::new(),
                identities: BTreeSet::new(),
                endpoints: BTreeSet::new(),
                verdicts: VerdictCounts::default(),
                connections: BTreeMap::new(),
                requests: BTreeMap::new(),
                credentials: BTreeMap::new(),
                policies: BTreeMap::new(),
                containers: BTreeMap::new(),
                default_denied: 0,
                truncated: 0,
                first_seen: f.time,
                last_seen: None,
                last: now,
            });
        c.last = now;
        c.last_seen = f.time;
        if c.first_seen.is_none() {
            c.first_seen = f.time;
        }
        c.verdicts.add(f.verdict);
        let t = &mut c.truncated;
        if !caller.pod.is_empty() {
            insert_capped(&mut c.pods, caller.pod.clone(), t);
        }
        if !caller.ip.is_empty() {
            insert_capped(&mut c.ips, caller.ip.clone(), t);
        }
        if caller.identity != 0 {
            insert_capped(&mut c.identities, caller.identity, t);
        }
        let address = sides.callee.id.trim_start_matches("metadata:").to_owned();
        insert_capped(&mut c.endpoints, (service, address, sides.port), t);
        // The process information describes the pod's socket, whichever way the flow goes.
        if let Some(p) = process::get(f) {
            let key = (caller.pod.clone(), p.container);
            if let Some(k) = entry_capped(&mut c.containers, key, t) {
                k.verdicts.add(f.verdict);
                k.last_seen = f.time.or(k.last_seen);
                if let Some(stats) = entry_limited(&mut k.processes, p.process, MAX_PROCESSES, t) {
                    stats.flows += 1;
                    if p.pid != 0 {
                        insert_limited(&mut stats.pids, p.pid, MAX_PIDS, t);
                    }
                    if let Some(uid) = p.uid {
                        insert_limited(&mut stats.uids, uid, MAX_PIDS, t);
                    }
                }
            }
        }

        let policy_verdict = f
            .event_type
            .as_ref()
            .is_some_and(|e| e.r#type == names::EVENT_POLICY_VERDICT);
        if policy_verdict {
            let decision = decision_of(f.verdict);
            *c.connections.entry(decision).or_default() += 1;
        }
        if policy_verdict || f.l7.is_some() {
            let decision = decision_of(f.verdict);
            let named = [
                (&f.egress_allowed_by, Decision::Allowed),
                (&f.ingress_allowed_by, Decision::Allowed),
                (&f.egress_denied_by, Decision::Denied),
                (&f.ingress_denied_by, Decision::Denied),
            ];
            let mut any = false;
            for (list, mut d) in named {
                if d == Decision::Allowed && decision == Decision::Audited {
                    d = Decision::Audited;
                }
                for p in list.iter().filter(|p| !p.name.is_empty()) {
                    any = true;
                    if let Some(n) = entry_capped(&mut c.policies, policy_key(p, d), t) {
                        *n += 1;
                    }
                }
            }
            if !any && policy_verdict && decision == Decision::Denied {
                c.default_denied += 1;
            }
        }

        let Some(l7) = &f.l7 else { return };
        let Some(layer7::Record::Http(http)) = &l7.record else {
            return;
        };
        let target = RequestTarget::parse(&http.url);
        let response = l7.r#type == L7FlowType::Response as i32;
        let count = |r: &mut Requests| {
            if response {
                if http.code != 0 {
                    *r.codes.entry(http.code).or_default() += 1;
                }
            } else {
                r.verdicts.add(f.verdict);
            }
        };
        let key = (http.method.to_ascii_uppercase(), target.path.clone());
        if let Some(r) = entry_capped(&mut c.requests, key, t) {
            count(r);
        }
        if let Some(cred) = target.credential_request(&http.method) {
            let key = CredentialKey {
                kind: cred.kind,
                resource: cred.resource,
                identity: cred.identity,
            };
            if let Some(r) = entry_capped(&mut c.credentials, key, t) {
                count(r);
            }
        }
    }

    /// Drops callers idle for longer than `window`.
    pub fn expire(&mut self, now: Instant, window: Duration) {
        self.callers
            .retain(|_, c| now.saturating_duration_since(c.last) <= window);
    }

    /// The report; with `namespace`, only that namespace's workloads.
    pub fn view(&self, namespace: Option<&str>) -> ImdsView {
        let callers = self
            .callers
            .values()
            .filter(|c| namespace.is_none_or(|ns| c.namespace == ns))
            .map(|c| CallerView {
                id: c.id.clone(),
                kind: c.kind,
                workload: c.label.clone(),
                namespace: c.namespace.clone(),
                workload_kind: c.workload_kind.clone(),
                pods: c.pods.iter().cloned().collect(),
                ips: c.ips.iter().cloned().collect(),
                identities: c.identities.iter().copied().collect(),
                endpoints: c
                    .endpoints
                    .iter()
                    .map(|(service, address, port)| EndpointView {
                        service: *service,
                        address: address.clone(),
                        port: *port,
                    })
                    .collect(),
                verdicts: c.verdicts,
                class: c.verdicts.class(),
                audit: c.verdicts.get(Verdict::Audit) > 0
                    || c.connections.contains_key(&Decision::Audited),
                audit_mode: false,
                connections: c.connections.clone(),
                requests: c
                    .requests
                    .iter()
                    .map(|((method, path), r)| RequestView {
                        method: method.clone(),
                        path: path.clone(),
                        count: r.verdicts.total(),
                        verdicts: r.verdicts,
                        codes: r.codes.clone(),
                    })
                    .collect(),
                credentials: c
                    .credentials
                    .iter()
                    .map(|(k, r)| CredentialView {
                        kind: k.kind,
                        resource: k.resource.clone(),
                        identity: k.identity.clone(),
                        count: r.verdicts.total(),
                        verdicts: r.verdicts,
                        codes: r.codes.clone(),
                    })
                    .collect(),
                policies: c
                    .policies
                    .iter()
                    .map(|(k, n)| PolicyView {
                        kind: k.kind.clone(),
                        namespace: k.namespace.clone(),
                        name: k.name.clone(),
                        decision: k.decision,
                        count: *n,
                        audit_mode: false,
                    })
                    .collect(),
                containers: c
                    .containers
                    .iter()
                    .map(|((pod, container), k)| ContainerView {
                        pod: pod.clone(),
                        container: container.clone(),
                        processes: k
                            .processes
                            .iter()
                            .map(|(name, p)| ProcessView {
                                name: name.clone(),
                                pids: p.pids.iter().copied().collect(),
                                uids: p.uids.iter().copied().collect(),
                                flows: p.flows,
                            })
                            .collect(),
                        verdicts: k.verdicts,
                        class: k.verdicts.class(),
                        flows: k.verdicts.total(),
                        last_seen: k.last_seen,
                    })
                    .collect(),
                default_denied: c.default_denied,
                truncated: c.truncated,
                first_seen: c.first_seen,
                last_seen: c.last_seen,
            })
            .collect();
        ImdsView {
            callers,
            calls_seen: self.calls,
            truncated: self.truncated,
        }
    }
}

fn decision_of(verdict: i32) -> Decision {
    match Verdict::try_from(verdict) {
        Ok(Verdict::Dropped | Verdict::Error) => Decision::Denied,
        Ok(Verdict::Audit) => Decision::Audited,
        _ => Decision::Allowed,
    }
}

fn policy_key(p: &Policy, decision: Decision) -> PolicyKey {
    PolicyKey {
        kind: p.kind.clone(),
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        decision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::seed_flows;
    use serde_json::json;

    #[test]
    fn the_seed_answers_who_talks_to_imds() {
        let mut report = ImdsReport::default();
        let now = Instant::now();
        for f in seed_flows() {
            report.observe(&f, &Sides::of(&f), now);
        }
        let v = report.view(None);
        assert_eq!(v.calls_seen, 12);
        let got = serde_json::to_value(&v).unwrap();
        let callers = got["callers"].as_array().unwrap();
        let ids: Vec<&str> = callers.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["go-webapp/go-webapp", "host", "logging/fluent-bit"]);

        let webapp = &callers[0];
        assert_eq!(webapp["workload_kind"], "Deployment");
        assert_eq!(
            webapp["pods"],
            json!(["go-webapp-847857f68-2qlnd", "go-webapp-8568cffcd4-l5s48"])
        );
        assert_eq!(webapp["verdicts"], json!({"FORWARDED": 4, "DROPPED": 2}));
        assert_eq!(webapp["class"], "mixed");
        assert_eq!(webapp["connections"], json!({"allowed": 1, "denied": 1}));
        assert_eq!(
            webapp["policies"],
            json!([{"kind": "CiliumClusterwideNetworkPolicy", "namespace": "", "name": "azure-imds-deny", "decision": "denied", "count": 1, "audit_mode": false}])
        );
        assert_eq!(
            webapp["endpoints"],
            json!([{"service": "imds", "address": "169.254.169.254", "port": 80}])
        );
        // The first connection was allowed before any policy existed: nothing named.
        assert_eq!(webapp["default_denied"], 0);
        assert_eq!(webapp["requests"], json!([]));

        let host = &callers[1];
        assert_eq!(host["kind"], "host");
        assert_eq!(host["connections"], json!({}));

        let fluent = &callers[2];
        assert_eq!(fluent["namespace"], "logging");
        assert_eq!(fluent["workload_kind"], "DaemonSet");
        assert_eq!(
            fluent["requests"],
            json!([{"method": "GET", "path": "/metadata/identity/oauth2/token", "count": 1,
                    "verdicts": {"FORWARDED": 1}, "codes": {"200": 1}}])
        );
        assert_eq!(
            fluent["credentials"],
            json!([{"kind": "azure-managed-identity", "resource": "https://api.kusto.windows.net",
                    "identity": "", "count": 1, "verdicts": {"FORWARDED": 1}, "codes": {"200": 1}}])
        );
        assert_eq!(
            fluent["policies"],
            json!([{"kind": "CiliumClusterwideNetworkPolicy", "namespace": "", "name": "azure-imds-allow", "decision": "allowed", "count": 1, "audit_mode": false}])
        );
        assert_eq!(fluent["first_seen"], "2025-07-15T21:58:44.291Z");
        assert_eq!(fluent["last_seen"], "2025-07-15T21:58:44.300Z");

        assert_eq!(report.view(Some("logging")).callers.len(), 1);
    }

    #[test]
    fn denials_without_a_policy_name_and_audits() {
        use imdsguard_flow::flow::{CiliumEventType, Endpoint, Ip};
        let pv = |verdict: Verdict, denied_by: Vec<Policy>, allowed_by: Vec<Policy>| Flow {
            verdict: verdict as i32,
            event_type: Some(CiliumEventType {
                r#type: names::EVENT_POLICY_VERDICT,
                sub_type: 0,
            }),
            ip: Some(Ip {
                source: "10.0.0.5".into(),
                destination: "fd00:ec2::254".into(),
                ..Default::default()
            }),
            source: Some(Endpoint {
                namespace: "team".into(),
                pod_name: "job-1".into(),
                ..Default::default()
            }),
            egress_denied_by: denied_by,
            egress_allowed_by: allowed_by,
            ..Default::default()
        };
        let allow = Policy {
            name: "imds-allow".into(),
            namespace: "team".into(),
            kind: "CiliumNetworkPolicy".into(),
            ..Default::default()
        };
        let mut report = ImdsReport::default();
        let now = Instant::now();
        for f in [
            pv(Verdict::Dropped, vec![], vec![]),
            pv(Verdict::Audit, vec![], vec![allow.clone()]),
        ] {
            report.observe(&f, &Sides::of(&f), now);
        }
        // Not a metadata flow: ignored.
        let mut other = pv(Verdict::Forwarded, vec![], vec![]);
        other.ip.as_mut().unwrap().destination = "10.9.9.9".into();
        report.observe(&other, &Sides::of(&other), now);
        let v = report.view(None);
        assert_eq!(v.calls_seen, 2);
        let c = &v.callers[0];
        assert_eq!(c.id, "team/job-1");
        assert_eq!(c.default_denied, 1);
        assert_eq!(
            c.connections
                .iter()
                .map(|(d, n)| (*d, *n))
                .collect::<Vec<_>>(),
            [(Decision::Denied, 1), (Decision::Audited, 1)]
        );
        assert_eq!(c.policies.len(), 1);
        assert_eq!(c.policies[0].decision, Decision::Audited);
        // The AUDIT badge's key, in the JSON API too.
        assert!(c.audit);
        assert_eq!(serde_json::to_value(c).unwrap()["audit"], true);
        assert_eq!(c.endpoints[0].address, "fd00:ec2::254");

        report.expire(now + Duration::from_secs(10), Duration::from_secs(5));
        assert!(report.view(None).callers.is_empty());
    }

    #[test]
    fn callers_and_their_details_are_bounded() {
        use imdsguard_flow::flow::{Endpoint, Http, Ip, Layer7};
        let call = |pod: usize, path: usize| Flow {
            verdict: 1,
            ip: Some(Ip {
                source: "10.0.0.5".into(),
                destination: "169.254.169.254".into(),
                ..Default::default()
            }),
            source: Some(Endpoint {
                namespace: "ns".into(),
                pod_name: format!("p{pod}"),
                ..Default::default()
            }),
            l7: Some(Layer7 {
                r#type: L7FlowType::Request as i32,
                latency_ns: 0,
                record: Some(layer7::Record::Http(Http {
                    method: "GET".into(),
                    url: format!("http://169.254.169.254/latest/meta-data/x{path}"),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        let mut report = ImdsReport::default();
        let now = Instant::now();
        for i in 0..MAX_CALLERS + 5 {
            {
                let f = call(i, 0);
                report.observe(&f, &Sides::of(&f), now);
            }
        }
        for j in 0..MAX_DISTINCT + 3 {
            {
                let f = call(0, j);
                report.observe(&f, &Sides::of(&f), now);
            }
        }
        let v = report.view(None);
        assert_eq!(v.callers.len(), MAX_CALLERS);
        assert_eq!(v.truncated, 5);
        let p0 = v.callers.iter().find(|c| c.id == "ns/p0").unwrap();
        assert_eq!(p0.requests.len(), MAX_DISTINCT);
        assert_eq!(p0.truncated, 3);
    }

    #[test]
    fn callers_show_who_in_the_pod_called() {
        use crate::testdata::{HOSTILE_COMM, attributed_seed_flows};
        let mut report = ImdsReport::default();
        let now = Instant::now();
        for f in attributed_seed_flows() {
            report.observe(&f, &Sides::of(&f), now);
        }
        let v = report.view(None);
        let got = serde_json::to_value(&v).unwrap();
        let callers = got["callers"].as_array().unwrap();
        // Callers are still workloads.
        let ids: Vec<&str> = callers.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["go-webapp/go-webapp", "host", "logging/fluent-bit"]);
        let webapp = &callers[0];
        assert_eq!(
            webapp["containers"],
            json!([
                {"pod": "go-webapp-847857f68-2qlnd", "container": "istio-proxy",
                 "processes": [{"name": "envoy", "pids": [4242], "uids": [1337], "flows": 4}],
                 "verdicts": {"FORWARDED": 4}, "class": "allowed", "flows": 4,
                 "last_seen": "2025-07-15T21:49:39.668Z"},
                {"pod": "go-webapp-8568cffcd4-l5s48", "container": "istio-proxy",
                 "processes": [{"name": HOSTILE_COMM, "pids": [5151], "uids": [0], "flows": 2}],
                 "verdicts": {"DROPPED": 2}, "class": "denied", "flows": 2,
                 "last_seen": webapp["containers"][1]["last_seen"]},
            ])
        );
        // The rest of the caller is what it was without process information.
        let mut plain = ImdsReport::default();
        for f in seed_flows() {
            plain.observe(&f, &Sides::of(&f), now);
        }
        let plain = serde_json::to_value(plain.view(None)).unwrap();
        let mut without = webapp.clone();
        without.as_object_mut().unwrap().remove("containers");
        assert_eq!(without, plain["callers"][0]);
        // Callers whose flows carry nothing have no `containers` at all.
        assert!(callers[2].get("containers").is_none(), "{}", callers[2]);
        assert_eq!(got["callers"][1], plain["callers"][1]);
    }

    #[test]
    fn containers_and_processes_are_bounded() {
        use imdsguard_flow::flow::{Endpoint, Ip};
        use imdsguard_hubble_proto::process::{ProcessInfo, set};
        let call = |container: String, process: String, pid: u32| {
            let mut f = Flow {
                verdict: 1,
                ip: Some(Ip {
                    source: "10.0.0.5".into(),
                    destination: "169.254.169.254".into(),
                    ..Default::default()
                }),
                source: Some(Endpoint {
                    namespace: "ns".into(),
                    pod_name: "p".into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            set(
                &mut f,
                &ProcessInfo {
                    container,
                    process,
                    pid,
                    uid: None,
                },
            );
            f
        };
        let mut report = ImdsReport::default();
        let now = Instant::now();
        for i in 0..MAX_DISTINCT + 2 {
            let f = call(format!("c{i}"), "sh".into(), 1);
            report.observe(&f, &Sides::of(&f), now);
        }
        for i in 0..MAX_PROCESSES + 3 {
            let f = call("c0".into(), format!("p{i}"), 1);
            report.observe(&f, &Sides::of(&f), now);
        }
        for pid in 0..MAX_PIDS as u32 + 4 {
            let f = call("c0".into(), "sh".into(), 100 + pid);
            report.observe(&f, &Sides::of(&f), now);
        }
        let v = report.view(None);
        let c = &v.callers[0];
        assert_eq!(c.containers.len(), MAX_DISTINCT);
        let c0 = &c.containers[0];
        assert_eq!(c0.container, "c0");
        assert_eq!(c0.processes.len(), MAX_PROCESSES);
        let sh = c0.processes.iter().find(|p| p.name == "sh").unwrap();
        assert_eq!(sh.pids.len(), MAX_PIDS);
        // Not kept: 2 containers, 4 process names (`sh` took one place) and 5 pids (pid 1
        // took one place).
        assert_eq!(c.truncated, 2 + 4 + 5);
    }
}
