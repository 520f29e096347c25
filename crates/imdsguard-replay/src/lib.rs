//! `imdsguard replay`: what-if analysis. Flows recorded with Hubble (`hubble observe -o jsonpb`) or
//! with imdsguard are judged again under candidate policies, and the changes are counted per
//! workload, destination and HTTP route: "go-webapp/… → 169.254.169.254:80 GET /metadata/instance:
//! allowed → DENIED (azure-imds-deny), 214 flows".
//!
//! Flows that carry imdsguard's process information (`Flow.extensions`, see
//! `imdsguard_hubble_proto::process`) are also grouped by the container that sent them:
//! "go-webapp/go-webapp-847857f68-2qlnd [istio-proxy] → …". Flows without it group as before.
//!
//! Each flow becomes a [`imdsguard_policy::FlowQuery`]: the source and destination pods as the flow
//! names them (with the labels it carries, unless the caller's repository already knows the pod),
//! reserved identities by number, everything else by address, so CIDR identities come from the
//! candidate policies; the port and protocol; and for HTTP flows the method, path and headers.
//! Flows in, a [`Report`] out: the only I/O goes through the flow reader and the writers the
//! caller hands to [`Replay::read`] and to the report's printers ([`Report::write_text`],
//! [`Report::write_json`]). Limits: replies and L7 responses follow their request and are
//! counted, not judged; non-HTTP L7 flows (DNS, Kafka) are judged at L3/L4 only; the HTTP host
//! comes from the flow's URL, not from the request's Host header, which Hubble does not record.

mod flowquery;
mod input;
mod run;
mod text;
pub mod whatif;

use flowquery::{Observed, Query, Skip};
use imdsguard_flow::flow::Flow;
use imdsguard_hubble_proto::wkt::Timestamp;
use imdsguard_policy::{
    DropReason, FlowVerdict, PolicyKind, PolicyRef, Repository, Verdict, verdict::DirectionVerdict,
};
use rustc_hash::FxHashMap;
use std::fmt;

pub use run::{FileOptions, ReplayError, replay_file};
pub use text::{Inputs, TextOptions};

/// What happened to a flow, or would happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Outcome {
    #[serde(rename = "allowed")]
    Allowed,
    /// Dropped at L3/L4.
    #[serde(rename = "DENIED")]
    Denied,
    /// Let through at L3/L4, refused by the proxy with 403.
    #[serde(rename = "HTTP 403")]
    HttpDenied,
    /// Would have been dropped; audit mode let it through.
    #[serde(rename = "AUDITED")]
    Audited,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "DENIED",
            Outcome::HttpDenied => "HTTP 403",
            Outcome::Audited => "AUDITED",
        }
    }

    fn refused(self) -> bool {
        matches!(self, Outcome::Denied | Outcome::HttpDenied)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How flows are grouped by their source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    /// `namespace/pod`.
    #[default]
    Pod,
    /// `namespace/workload` (the flow's first workload, else the pod).
    Workload,
}

/// Flows with the same source, destination, HTTP route and change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct GroupKey {
    pub source: String,
    /// The container in the source pod that sent the flows, when they say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub destination: String,
    /// `METHOD /path` without the query, for HTTP flows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    pub before: Outcome,
    pub after: Outcome,
    /// The policies that decide the new verdict, or what decides it (`default deny`, `no policy`).
    pub decided_by: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Group {
    #[serde(flatten)]
    pub key: GroupKey,
    pub flows: u64,
    pub changed: bool,
    /// The drop reason of the new verdict, as Hubble names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<&'static str>,
    /// The match type of the new verdict (`L3-Only`, `L3-L4`, …).
    pub match_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<Timestamp>,
    /// One full request target of the group, query included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example_url: Option<String>,
}

/// Flows not judged, and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// Replies and L7 responses: they follow their connection's or request's verdict.
    pub replies: u64,
    /// Dropped for a reason that is not policy (a checksum, a missing route …).
    pub not_policy_drops: u64,
    /// No IP addresses or no L4 header (ARP, fragments …), or a verdict Hubble calls unknown or error.
    pub unjudgeable: u64,
}

impl Skipped {
    pub fn total(&self) -> u64 {
        self.replies + self.not_policy_drops + self.unjudgeable
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Totals {
    pub flows: u64,
    pub judged: u64,
    pub skipped: Skipped,
    pub changed: u64,
    pub newly_denied: u64,
    pub newly_allowed: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub totals: Totals,
    /// Changed groups first, each part by flows, most first.
    pub groups: Vec<Group>,
}

/// The new verdict of one query, computed once and reused for every flow that asks it.
#[derive(Debug, Clone)]
struct Judged {
    after: Outcome,
    decided_by: String,
    drop_reason: Option<&'static str>,
    match_type: &'static str,
}

/// Judges flows one at a time and keeps the counts.
pub struct Replay {
    repo: Repository,
    group_by: GroupBy,
    totals: Totals,
    groups: FxHashMap<GroupKey, Group>,
    cache: FxHashMap<Query, Judged>,
    /// Pods added from flows since the last resolve.
    unresolved: bool,
}

/// Past this many distinct queries the cache starts over (recorded traffic repeats a few queries
/// very often; a flood of distinct URLs must not grow memory without bound).
const CACHE_LIMIT: usize = 1 << 18;

impl Replay {
    /// `repo` holds the candidate policies and the pods the caller knows (resolved or not); pods
    /// that appear only in flows are added as they come.
    pub fn new(repo: Repository, group_by: GroupBy) -> Replay {
        Replay {
            repo,
            group_by,
            totals: Totals::default(),
            groups: FxHashMap::default(),
            cache: FxHashMap::default(),
            unresolved: true,
        }
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Judges one recorded flow.
    pub fn observe(&mut self, flow: &Flow) {
        self.totals.flows += 1;
        let o: Observed = match flowquery::observe(flow, self.group_by) {
            Ok(o) => o,
            Err(skip) => {
                match skip {
                    Skip::Reply => self.totals.skipped.replies += 1,
                    Skip::NotPolicyDrop => self.totals.skipped.not_policy_drops += 1,
                    Skip::Unjudgeable => self.totals.skipped.unjudgeable += 1,
                }
                return;
            }
        };
        self.totals.judged += 1;
        let judged = match self.cache.get(&o.query) {
            Some(j) => j.clone(),
            None => {
                let j = self.judge(flow, &o);
                if self.cache.len() >= CACHE_LIMIT {
                    self.cache.clear();
                }
                self.cache.insert(o.query.clone(), j.clone());
                j
            }
        };
        let changed = judged.after != o.before;
        if changed {
            self.totals.changed += 1;
            if judged.after.refused() && !o.before.refused() {
                self.totals.newly_denied += 1;
            } else if !judged.after.refused() && o.before.refused() {
                self.totals.newly_allowed += 1;
            }
        }
        let key = GroupKey {
            source: o.source_label,
            container: imdsguard_hubble_proto::process::get(flow)
                .map(|p| p.container)
                .filter(|c| !c.is_empty()),
            destination: o.destination_label,
            http: o.route,
            before: o.before,
            after: judged.after,
            decided_by: judged.decided_by,
        };
        let group = self.groups.entry(key).or_insert_with_key(|k| Group {
            key: k.clone(),
            flows: 0,
            changed,
            drop_reason: judged.drop_reason,
            match_type: judged.match_type,
            first: None,
            last: None,
            example_url: None,
        });
        group.flows += 1;
        if let Some(t) = flow.time {
            if group.first.is_none_or(|f| t < f) {
                group.first = Some(t);
            }
            if group.last.is_none_or(|l| t > l) {
                group.last = Some(t);
            }
        }
        if group.example_url.is_none() {
            group.example_url = o.url;
        }
    }

    fn judge(&mut self, flow: &Flow, o: &Observed) -> Judged {
        for pod in flowquery::pods(flow, &o.query) {
            // A pod the caller's endpoints describe keeps that description.
            if self
                .repo
                .endpoint_identity(&pod.namespace, &pod.name)
                .is_none()
            {
                self.repo.upsert_endpoint(pod);
                self.unresolved = true;
            }
        }
        if self.unresolved {
            self.repo.resolve();
            self.unresolved = false;
        }
        let q = o.query.flow_query();
        match self.repo.evaluate(&q) {
            Ok(v) => judged(&v, q.http.is_some()),
            // Only an unknown pod fails, and every pod of the query was just added.
            Err(e) => Judged {
                after: o.before,
                decided_by: format!("not judged: {e}"),
                drop_reason: None,
                match_type: "none",
            },
        }
    }

    pub fn report(&self) -> Report {
        let mut groups: Vec<Group> = self.groups.values().cloned().collect();
        groups.sort_by(|a, b| {
            b.changed
                .cmp(&a.changed)
                .then(b.flows.cmp(&a.flows))
                .then_with(|| a.key.cmp(&b.key))
        });
        Report {
            totals: self.totals.clone(),
            groups,
        }
    }
}

fn short_name(p: &PolicyRef) -> String {
    match p.kind {
        PolicyKind::CiliumNetworkPolicy => format!("{}/{}", p.namespace, p.name),
        PolicyKind::CiliumClusterwideNetworkPolicy => p.name.to_string(),
    }
}

fn names(refs: &[PolicyRef]) -> String {
    refs.iter().map(short_name).collect::<Vec<_>>().join(", ")
}

/// The outcome of a verdict and what decided it.
fn judged(v: &FlowVerdict, http: bool) -> Judged {
    let sides: Vec<&DirectionVerdict> = [v.egress.as_ref(), v.ingress.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let deciding = v.deciding();
    let (after, decided_by) = match v.verdict {
        Verdict::Denied | Verdict::Audited => {
            let after = if v.verdict == Verdict::Denied {
                Outcome::Denied
            } else {
                Outcome::Audited
            };
            let by = match deciding {
                Some(d) if !d.denied_by.is_empty() => names(&d.denied_by),
                Some(d) if d.drop_reason == Some(DropReason::AuthRequired) => {
                    format!("authentication required by {}", names(&d.allowed_by))
                }
                _ => "default deny".to_owned(),
            };
            (after, by)
        }
        Verdict::Allowed if http && v.http_allowed == Some(false) => {
            let refusing: Vec<PolicyRef> = sides
                .iter()
                .filter(|d| d.http_allowed == Some(false))
                .flat_map(|d| d.allowed_by.iter().cloned())
                .collect();
            (
                Outcome::HttpDenied,
                format!("HTTP rules of {}", names(&refusing)),
            )
        }
        Verdict::Allowed => {
            let by = if sides.iter().all(|d| !d.enforced) {
                "no policy".to_owned()
            } else {
                let mut refs: Vec<PolicyRef> = Vec::new();
                for d in &sides {
                    let list = if http && d.http_allowed.is_some() {
                        &d.http_allowed_by
                    } else {
                        &d.allowed_by
                    };
                    for r in list {
                        if !refs.contains(r) {
                            refs.push(r.clone());
                        }
                    }
                }
                let redirecting: Vec<PolicyRef> = sides
                    .iter()
                    .filter(|d| d.http_allowed == Some(true) && d.http_allowed_by.is_empty())
                    .flat_map(|d| d.allowed_by.iter().cloned())
                    .collect();
                match (refs.is_empty(), redirecting.is_empty()) {
                    // The proxy saw the request, but only the implicit allow-all let it through.
                    (true, false) => format!(
                        "{}, whose HTTP rules only add visibility",
                        names(&redirecting)
                    ),
                    (true, true) => "default allow".to_owned(),
                    (false, _) => names(&refs),
                }
            };
            (Outcome::Allowed, by)
        }
    };
    Judged {
        after,
        decided_by,
        drop_reason: match after {
            Outcome::Denied => v.drop_reason.map(DropReason::as_str),
            Outcome::Audited => deciding.and_then(|d| d.drop_reason).map(DropReason::as_str),
            _ => None,
        },
        match_type: v.match_type.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imdsguard_flow::jsonline::LineDecoder;
    use imdsguard_flow::observer::get_flows_response::ResponseTypes;
    use imdsguard_manifest::Source;
    use imdsguard_policy::{DecodeOptions, EngineOptions, decode_sources};

    const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../");

    fn read(path: &str) -> String {
        std::fs::read_to_string(format!("{ROOT}{path}")).expect("fixture")
    }

    fn repo(texts: &[(&str, String)]) -> Repository {
        let sources: Vec<Source> = texts
            .iter()
            .map(|(n, t)| Source::new(*n, t.as_str()))
            .collect();
        let decoded = decode_sources(&sources, &DecodeOptions::default());
        assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
        let mut repo = Repository::new(EngineOptions::default());
        repo.load(&decoded);
        repo
    }

    fn seed_policies() -> Repository {
        repo(&[
            ("cidrgroup.yaml", read("examples/azure-imds/cidrgroup.yaml")),
            (
                "deny.yaml",
                read("examples/azure-imds/azure-imds-deny.yaml"),
            ),
            (
                "allow.yaml",
                read("examples/azure-imds/azure-imds-allow.yaml"),
            ),
        ])
    }

    fn replay_lines(repo: Repository, by: GroupBy, text: &str) -> Report {
        let mut r = Replay::new(repo, by);
        let mut d = LineDecoder::new();
        for line in text.lines() {
            if let Some(ResponseTypes::Flow(f)) =
                &d.decode(line).expect("a flow line").response_types
            {
                r.observe(f);
            }
        }
        r.report()
    }

    fn group<'a>(r: &'a Report, source: &str, http: Option<&str>) -> Vec<&'a Group> {
        r.groups
            .iter()
            .filter(|g| g.key.source == source && g.key.http.as_deref() == http)
            .collect()
    }

    const WEBAPP: &str = "go-webapp/go-webapp-847857f68-2qlnd";
    const FLUENT_BIT: &str = "logging/fluent-bit-qg7vq";
    const TOKEN: &str = "GET /metadata/identity/oauth2/token";

    #[test]
    fn the_sidecar_is_denied_and_the_token_request_stays_allowed() {
        let r = replay_lines(
            seed_policies(),
            GroupBy::Pod,
            &read("tests/flows/before-policies.jsonl"),
        );
        let instance = group(&r, WEBAPP, Some("GET /metadata/instance"));
        assert_eq!(instance.len(), 1, "{:#?}", r.groups);
        let g = instance[0];
        assert_eq!(
            (g.key.before, g.key.after),
            (Outcome::Allowed, Outcome::Denied)
        );
        assert_eq!(g.key.decided_by, "azure-imds-deny");
        assert_eq!(g.key.destination, "169.254.169.254:80");
        assert_eq!(g.drop_reason, Some("POLICY_DENY"));
        assert_eq!(g.flows, 6);
        assert!(g.changed);
        let token = group(&r, FLUENT_BIT, Some(TOKEN));
        assert_eq!(token.len(), 1, "{:#?}", r.groups);
        assert_eq!(
            (token[0].key.before, token[0].key.after),
            (Outcome::Allowed, Outcome::Allowed)
        );
        assert!(!token[0].changed);
        assert!(
            token[0].key.decided_by.contains("azure-imds-allow"),
            "{}",
            token[0].key.decided_by
        );
        // Every change is a new denial, and every one is the sidecar's or the debug pod's.
        assert_eq!(r.totals.newly_allowed, 0);
        assert_eq!(r.totals.changed, r.totals.newly_denied);
        assert!(
            r.groups
                .iter()
                .filter(|g| g.changed)
                .all(|g| g.key.source == WEBAPP || g.key.source == "default/debug")
        );
        // The changed groups come first.
        assert!(r.groups[0].changed);
    }

    #[test]
    fn replaying_under_the_recording_policies_changes_only_what_they_changed() {
        // seed.jsonl holds flows from before the policies (go-webapp-847857f68, allowed) and after.
        let r = replay_lines(
            seed_policies(),
            GroupBy::Pod,
            &read("tests/flows/seed.jsonl"),
        );
        assert_eq!(r.totals.flows, 12);
        assert_eq!(r.totals.skipped.replies, 1);
        assert_eq!(r.totals.changed, 4, "{:#?}", r.groups);
        let after = group(&r, "go-webapp/go-webapp-8568cffcd4-l5s48", None);
        assert_eq!(
            (after[0].key.before, after[0].key.after),
            (Outcome::Denied, Outcome::Denied)
        );
        let host = group(&r, "host", None);
        assert_eq!(host[0].key.decided_by, "no policy");
    }

    #[test]
    fn default_deny_turns_the_token_request_into_a_403() {
        let enforced = read("examples/azure-imds/azure-imds-allow.yaml")
            .replace("egress: false", "egress: true");
        let r = replay_lines(
            repo(&[
                ("cidrgroup.yaml", read("examples/azure-imds/cidrgroup.yaml")),
                ("allow.yaml", enforced),
            ]),
            GroupBy::Workload,
            &read("tests/flows/before-policies.jsonl"),
        );
        let token = group(&r, "logging/fluent-bit", Some(TOKEN));
        assert_eq!(token.len(), 1, "{:#?}", r.groups);
        assert_eq!(token[0].key.after, Outcome::HttpDenied);
        assert_eq!(token[0].key.decided_by, "HTTP rules of azure-imds-allow");
        // Its other egress now meets default deny.
        let dns = r
            .groups
            .iter()
            .find(|g| {
                g.key.source == "logging/fluent-bit" && g.key.destination.ends_with(":53/UDP")
            })
            .expect("DNS group");
        assert_eq!(
            (dns.key.after, dns.key.decided_by.as_str()),
            (Outcome::Denied, "default deny")
        );
        assert_eq!(dns.drop_reason, Some("POLICY_DENIED"));
        // go-webapp is selected by no policy here.
        assert!(
            group(&r, "go-webapp/go-webapp", None)
                .iter()
                .all(|g| !g.changed)
        );
    }

    #[test]
    fn replies_and_other_drops_are_counted_not_judged() {
        let lines = [
            r#"{"flow":{"verdict":"DROPPED","IP":{"source":"10.0.0.1","destination":"10.0.0.2"},"l4":{"TCP":{"source_port":1,"destination_port":80}},"Type":"L3_L4","drop_reason":155,"drop_reason_desc":"CT_MAP_INSERTION_FAILED"}}"#,
            r#"{"flow":{"verdict":"FORWARDED","IP":{"source":"10.0.0.2","destination":"10.0.0.1"},"l4":{"TCP":{"source_port":80,"destination_port":1}},"Type":"L3_L4","is_reply":true}}"#,
            r#"{"flow":{"verdict":"FORWARDED","IP":{"source":"10.0.0.1","destination":"10.0.0.2"},"Type":"L3_L4"}}"#,
            r#"{"flow":{"verdict":"DROPPED","IP":{"source":"10.0.0.1","destination":"169.254.169.254"},"l4":{"TCP":{"source_port":1,"destination_port":80}},"Type":"L3_L4","drop_reason_desc":"POLICY_DENIED"}}"#,
        ];
        let r = replay_lines(seed_policies(), GroupBy::Pod, &lines.join("\n"));
        assert_eq!(r.totals.flows, 4);
        assert_eq!(r.totals.skipped.not_policy_drops, 1);
        assert_eq!(r.totals.skipped.replies, 1);
        assert_eq!(r.totals.skipped.unjudgeable, 1);
        assert_eq!(r.totals.judged, 1);
        // An address no policy governs: the recorded drop would now be allowed.
        assert_eq!(r.totals.newly_allowed, 1);
        assert_eq!(r.groups[0].key.source, "10.0.0.1");
        assert_eq!(r.groups[0].key.decided_by, "no policy");
    }

    #[test]
    fn pods_the_caller_knows_keep_their_labels() {
        // The flow's labels put default/debug in kube-system, whose pods may reach IMDS; the
        // caller's endpoints say it is in default, which the deny selects.
        let mut known = seed_policies();
        known.upsert_endpoint(imdsguard_policy::EndpointSpec {
            name: "debug".into(),
            namespace: "default".into(),
            labels: vec![("run".into(), "debug".into())],
            ..Default::default()
        });
        let line = r#"{"flow":{"verdict":"FORWARDED","IP":{"source":"10.244.1.5","destination":"169.254.169.254"},"l4":{"TCP":{"source_port":1,"destination_port":80}},"source":{"namespace":"default","pod_name":"debug","labels":["k8s:io.kubernetes.pod.namespace=kube-system"]},"Type":"L3_L4"}}"#;
        let r = replay_lines(known, GroupBy::Pod, line);
        // Judged as the caller's default/debug (denied), not by the flow's kube-system label.
        assert_eq!(r.groups[0].key.after, Outcome::Denied);
        let r = replay_lines(seed_policies(), GroupBy::Pod, line);
        assert_eq!(r.groups[0].key.after, Outcome::Allowed);
    }

    /// The flows of `text`, each with the process information `who` gives it (by its source
    /// pod and destination address) in its extensions.
    fn with_processes(
        text: &str,
        who: impl Fn(&str, &str) -> Option<imdsguard_hubble_proto::process::ProcessInfo>,
    ) -> Vec<Flow> {
        use imdsguard_flow::observer::GetFlowsResponse;
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let resp: GetFlowsResponse = serde_json::from_str(line).expect("a flow line");
            if let Some(ResponseTypes::Flow(mut f)) = resp.response_types {
                let pod = f
                    .source
                    .as_ref()
                    .map(|s| s.pod_name.clone())
                    .unwrap_or_default();
                let dst =
                    f.ip.as_ref()
                        .map(|i| i.destination.clone())
                        .unwrap_or_default();
                if let Some(p) = who(&pod, &dst) {
                    imdsguard_hubble_proto::process::set(&mut f, &p);
                }
                out.push(f);
            }
        }
        out
    }

    fn replay_flows(repo: Repository, by: GroupBy, flows: &[Flow]) -> Report {
        let mut r = Replay::new(repo, by);
        for f in flows {
            r.observe(f);
        }
        r.report()
    }

    fn sidecar_and_app(
        pod: &str,
        dst: &str,
    ) -> Option<imdsguard_hubble_proto::process::ProcessInfo> {
        use imdsguard_hubble_proto::process::ProcessInfo;
        if pod != "go-webapp-847857f68-2qlnd" {
            return None;
        }
        Some(if dst == "169.254.169.254" {
            ProcessInfo {
                container: "istio-proxy".into(),
                process: "envoy".into(),
                pid: 4242,
                uid: Some(1337),
            }
        } else {
            ProcessInfo {
                container: "go-webapp".into(),
                process: "webapp".into(),
                pid: 4100,
                uid: Some(1000),
            }
        })
    }

    fn text_of(r: &Report, details: bool) -> String {
        let mut out = Vec::new();
        let inputs = Inputs {
            flows: "flows.jsonl",
            policies: 2,
            cidr_groups: 1,
        };
        r.write_text(
            &mut out,
            &inputs,
            TextOptions {
                details,
                group_by: GroupBy::Pod,
            },
        )
        .expect("writes");
        String::from_utf8(out).expect("utf-8")
    }

    fn json_of(r: &Report) -> serde_json::Value {
        let mut out = Vec::new();
        let inputs = Inputs {
            flows: "flows.jsonl",
            policies: 2,
            cidr_groups: 1,
        };
        r.write_json(&mut out, &inputs).expect("writes");
        serde_json::from_slice(&out).expect("json")
    }

    #[test]
    fn groups_name_the_container_when_flows_carry_it() {
        let plain = read("tests/flows/before-policies.jsonl");
        let attributed = with_processes(&plain, sidecar_and_app);
        let r = replay_flows(seed_policies(), GroupBy::Pod, &attributed);
        let instance = group(&r, WEBAPP, Some("GET /metadata/instance"));
        assert_eq!(instance.len(), 1, "{:#?}", r.groups);
        assert_eq!(instance[0].key.container.as_deref(), Some("istio-proxy"));
        assert_eq!(instance[0].flows, 6);
        let text = text_of(&r, true);
        assert!(
            text.contains(
                "  go-webapp/go-webapp-847857f68-2qlnd [istio-proxy] → 169.254.169.254:80 GET /metadata/instance: allowed → DENIED (azure-imds-deny), 6 flows\n"
            ),
            "{text}"
        );
        // The app container's own traffic (DNS) is its own group.
        assert!(
            text.contains("  go-webapp/go-webapp-847857f68-2qlnd [go-webapp] → "),
            "{text}"
        );
        // Flows without process information group as before.
        assert!(
            text.contains("  logging/fluent-bit-qg7vq → 169.254.169.254:80 GET /metadata/identity/oauth2/token: "),
            "{text}"
        );
        let doc = json_of(&r);
        let groups = doc["groups"].as_array().expect("groups");
        let sidecar = groups
            .iter()
            .find(|g| g["source"] == WEBAPP && g["http"] == "GET /metadata/instance")
            .expect("the sidecar's group");
        assert_eq!(sidecar["container"], "istio-proxy");
        let fluent = groups
            .iter()
            .find(|g| g["source"] == FLUENT_BIT)
            .expect("fluent-bit");
        assert!(fluent.get("container").is_none(), "{fluent}");
        // Containers split groups but not the totals.
        let before = replay_lines(seed_policies(), GroupBy::Pod, &plain);
        assert_eq!(r.totals.changed, before.totals.changed);
        assert_eq!(r.totals.newly_denied, before.totals.newly_denied);
    }

    #[test]
    fn without_process_information_the_output_is_unchanged() {
        let plain = read("tests/flows/before-policies.jsonl");
        // Decoded another way, with no process information: nothing to group by.
        let reencoded = with_processes(&plain, |_, _| None);
        let a = replay_lines(seed_policies(), GroupBy::Pod, &plain);
        let b = replay_flows(seed_policies(), GroupBy::Pod, &reencoded);
        assert_eq!(text_of(&a, true), text_of(&b, true));
        assert_eq!(json_of(&a), json_of(&b));
        assert!(a.groups.iter().all(|g| g.key.container.is_none()));
        assert!(
            !serde_json::to_string(&json_of(&a))
                .unwrap()
                .contains("container")
        );
        // A process without a container (a node process) adds nothing to the key either.
        let nameless = with_processes(&plain, |pod, _| {
            (pod == "go-webapp-847857f68-2qlnd").then(|| {
                imdsguard_hubble_proto::process::ProcessInfo {
                    process: "curl".into(),
                    pid: 7,
                    ..Default::default()
                }
            })
        });
        let c = replay_flows(seed_policies(), GroupBy::Pod, &nameless);
        assert_eq!(text_of(&a, true), text_of(&c, true));
    }

    #[test]
    fn container_names_cannot_drive_the_terminal() {
        let plain = read("tests/flows/before-policies.jsonl");
        let hostile = with_processes(&plain, |pod, _| {
            (pod == "debug").then(|| imdsguard_hubble_proto::process::ProcessInfo {
                container: "x\u{1b}[2Jy".into(),
                ..Default::default()
            })
        });
        let r = replay_flows(seed_policies(), GroupBy::Pod, &hostile);
        let text = text_of(&r, true);
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("default/debug [x\\u{1b}[2Jy] → "), "{text}");
    }
}
