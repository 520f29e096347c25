//! What every check looks at: the decoded policies, the manifest trees they came from (for line,
//! column and field path), and a policy repository loaded with them, the known cluster and one
//! "witness" pod per rule subject, so checks can ask the engine what Cilium would do.

use crate::checks::Check;
use crate::{Cluster, Finding};
use imdsguard_manifest::{Field, Object, Pos, Source};
use imdsguard_policy::api::{Peers, PolicyItem, Subject};
use imdsguard_policy::identity::{CLUSTER_LABEL, NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX};
use imdsguard_policy::labels::{Label, LabelSet, LabelSource};
use imdsguard_policy::selector::{Operator, Selector};
use imdsguard_policy::{
    DecodeOptions, Decoded, EndpointSpec, EngineOptions, FlowQuery, FlowVerdict, HttpRequest, Peer,
    Policy, Protocol, Repository, decode_sources,
};
use std::collections::HashMap;
use std::net::IpAddr;

/// The namespace witness pods live in when a selector allows any namespace but a few.
pub const PROBE_NAMESPACE: &str = "imdsguard-lint-probe";
const WITNESS_PREFIX: &str = "imdsguard-lint-witness-";

pub struct Model<'a> {
    pub decoded: Decoded,
    objects: Vec<Object>,
    pub repo: Repository,
    pub cluster: Option<&'a Cluster>,
    /// (policy index, rule index) → the witness pod's `namespace/name`.
    witnesses: HashMap<(usize, usize), String>,
}

/// A rule of a policy, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleAt {
    pub policy: usize,
    pub rule: usize,
}

impl<'a> Model<'a> {
    pub fn new(sources: &[Source], cluster: Option<&'a Cluster>) -> Model<'a> {
        let decoded = decode_sources(sources, &DecodeOptions::default());
        // Documents that do not parse are reported by decode; the others still get positions.
        let objects = sources
            .iter()
            .filter_map(|s| imdsguard_manifest::objects(s).ok())
            .flatten()
            .collect();
        let mut repo = Repository::new(EngineOptions::default());
        if let Some(c) = cluster {
            for (ns, labels) in &c.namespaces {
                repo.set_namespace_labels(ns, labels.clone());
            }
            for ep in &c.endpoints {
                repo.upsert_endpoint(ep.clone());
            }
        }
        repo.load(&decoded);
        let mut witnesses = HashMap::new();
        for (pi, p) in decoded.policies.iter().enumerate() {
            for (ri, r) in p.rules.iter().enumerate() {
                let Subject::Endpoints(sel) = &r.subject else {
                    continue;
                };
                let ns_labels = |ns: &str| -> Vec<(String, String)> {
                    cluster
                        .and_then(|c| c.namespaces.iter().find(|(n, _)| n == ns))
                        .map(|(_, l)| l.clone())
                        .unwrap_or_default()
                };
                if let Some((ns, labels)) = witness_labels(sel, ns_labels) {
                    let spec = EndpointSpec {
                        name: format!("{WITNESS_PREFIX}{pi}-{ri}"),
                        namespace: ns,
                        raw_labels: Some(labels),
                        ..Default::default()
                    };
                    witnesses.insert((pi, ri), spec.key());
                    repo.upsert_endpoint(spec);
                }
            }
        }
        repo.resolve();
        Model {
            decoded,
            objects,
            repo,
            cluster,
            witnesses,
        }
    }

    pub fn policies(&self) -> &[Policy] {
        &self.decoded.policies
    }

    /// A repository with the same pods (the cluster's and the witnesses) and CIDR groups, and
    /// only the policies `keep` accepts: to ask what the others decide without one of them.
    pub fn repo_with(&self, keep: impl Fn(&Policy) -> bool) -> Repository {
        let mut repo = Repository::new(EngineOptions::default());
        if let Some(c) = self.cluster {
            for (ns, labels) in &c.namespaces {
                repo.set_namespace_labels(ns, labels.clone());
            }
        }
        for (spec, _) in self.repo.endpoints() {
            repo.upsert_endpoint(spec.clone());
        }
        let decoded = Decoded {
            policies: self
                .policies()
                .iter()
                .filter(|p| keep(p))
                .cloned()
                .collect(),
            groups: self.decoded.groups.clone(),
            ..Default::default()
        };
        repo.load(&decoded);
        repo.resolve();
        repo
    }

    /// Every rule with an endpoint selector.
    pub fn endpoint_rules(&self) -> impl Iterator<Item = (RuleAt, &Policy, &Selector)> {
        self.policies().iter().enumerate().flat_map(|(pi, p)| {
            p.rules
                .iter()
                .enumerate()
                .filter_map(move |(ri, r)| match &r.subject {
                    Subject::Endpoints(s) => Some((
                        RuleAt {
                            policy: pi,
                            rule: ri,
                        },
                        p,
                        s,
                    )),
                    Subject::Nodes(_) => None,
                })
        })
    }

    /// The manifest object a policy was decoded from.
    pub fn object(&self, p: &Policy) -> Option<Field<'_>> {
        self.objects
            .iter()
            .find(|o| o.file == p.file && o.node.pos == p.pos)
            .map(|o| Field::root(&o.node))
    }

    /// The manifest field of a rule: `spec`, or `specs[i]`.
    pub fn rule_field(&self, at: RuleAt) -> Option<Field<'_>> {
        let root = self.object(&self.policies()[at.policy])?;
        match child(&root, "spec") {
            Some(spec) if at.rule == 0 => Some(spec),
            Some(_) => item(&child(&root, "specs")?, at.rule - 1),
            None => item(&child(&root, "specs")?, at.rule),
        }
    }

    /// The pods a rule selects: the known cluster's, else its witness pod.
    pub fn subjects(&self, at: RuleAt) -> Vec<String> {
        let real = self.cluster_subjects(at);
        if !real.is_empty() {
            return real;
        }
        self.witnesses
            .get(&(at.policy, at.rule))
            .cloned()
            .into_iter()
            .collect()
    }

    /// The known cluster's pods a rule selects (`namespace/name`).
    pub fn cluster_subjects(&self, at: RuleAt) -> Vec<String> {
        let Subject::Endpoints(sel) = &self.policies()[at.policy].rules[at.rule].subject else {
            return Vec::new();
        };
        let mut out: Vec<String> = self
            .repo
            .endpoints()
            .filter(|(spec, _)| !is_witness(&spec.key()))
            .filter(|(_, id)| {
                self.repo
                    .identities()
                    .labels(*id)
                    .is_some_and(|l| sel.matches(l))
            })
            .map(|(spec, _)| spec.key())
            .collect();
        out.sort();
        out
    }

    /// Every pod the checks evaluate: the cluster's and the witnesses.
    pub fn all_subjects(&self) -> Vec<String> {
        let mut out: Vec<String> = self.repo.endpoints().map(|(s, _)| s.key()).collect();
        out.sort();
        out
    }

    /// The verdict for a flow from a pod to an address.
    pub fn egress(
        &self,
        from: &str,
        to: IpAddr,
        port: u16,
        http: Option<HttpRequest>,
    ) -> Option<FlowVerdict> {
        self.evaluate(Peer::Endpoint(from.to_owned()), Peer::Ip(to), port, http)
    }

    pub fn evaluate(
        &self,
        from: Peer,
        to: Peer,
        port: u16,
        http: Option<HttpRequest>,
    ) -> Option<FlowVerdict> {
        self.repo
            .evaluate(&FlowQuery {
                from,
                to,
                protocol: Protocol::Tcp,
                port,
                http,
            })
            .ok()
    }

    /// The labels of the identity an address gets under the linted policies.
    pub fn ip_labels(&self, ip: IpAddr) -> LabelSet {
        let id = self.repo.identity_of_ip(ip);
        self.repo
            .identities()
            .labels(id)
            .map(|l| (**l).clone())
            .unwrap_or_default()
    }

    /// Whether an item's peers include an address.
    pub fn item_reaches(&self, item: &PolicyItem, ip: IpAddr) -> bool {
        match &item.peers {
            Peers::Any => true,
            Peers::Selectors(s) => {
                let labels = self.ip_labels(ip);
                s.iter().any(|sel| sel.matches(&labels))
            }
        }
    }

    /// A finding at a field of a policy (or at the policy itself).
    pub fn finding(
        &self,
        check: &Check,
        p: &Policy,
        at: Option<Loc>,
        message: String,
        fix: Option<String>,
    ) -> Finding {
        let (pos, path) = match at {
            Some(l) => (l.pos, l.path),
            None => (p.pos, String::new()),
        };
        Finding {
            code: check.code,
            name: check.name,
            severity: check.severity,
            file: p.file.to_string(),
            line: pos.line,
            column: pos.col,
            object: p.id.to_string(),
            field: path,
            message,
            fix: fix.unwrap_or_else(|| check.fix.to_owned()),
        }
    }
}

pub fn is_witness(key: &str) -> bool {
    key.split_once('/')
        .is_some_and(|(_, name)| name.starts_with(WITNESS_PREFIX))
}

/// Up to `max` pod names for a message, the rest counted: `a/x, b/y and 3 more`.
pub fn some_pods(keys: &[String], max: usize) -> String {
    let shown: Vec<&str> = keys.iter().take(max).map(String::as_str).collect();
    match keys.len().saturating_sub(max) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// Who a rule's pods are, for messages: their names when the cluster is known.
pub fn describe_pods(m: &Model, at: RuleAt, keys: &[String]) -> String {
    if keys.iter().all(|k| is_witness(k)) || m.cluster_subjects(at).is_empty() {
        "this rule's pods".to_owned()
    } else {
        some_pods(keys, 3)
    }
}

/// Where a finding points: a position and a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub pos: Pos,
    pub path: String,
}

impl Loc {
    /// At a value (a scalar, or an element of a list).
    pub fn value(f: &Field) -> Loc {
        Loc {
            pos: f.pos(),
            path: f.path().to_owned(),
        }
    }
}

/// At a key of a mapping: a scalar's value, else the key itself (a list or mapping value starts
/// on the line below its key, where the reader would not look for it).
pub fn key_loc(parent: &Field, key: &str) -> Option<Loc> {
    let map = parent.free_map().ok()?;
    let value = map.get_raw(key)?;
    let pos = match value.node.as_str() {
        Some(_) => value.pos(),
        None => map.key_pos(key)?,
    };
    Some(Loc {
        pos,
        path: value.path().to_owned(),
    })
}

/// Like [`path`], but the location of the last step: a key's position or an element's.
pub fn path_loc(f: &Field, steps: &[&str]) -> Option<Loc> {
    let (last, init) = steps.split_last()?;
    let parent = path(f, init)?;
    match last.parse::<usize>() {
        Ok(i) => item(&parent, i).map(|x| Loc::value(&x)),
        Err(_) => key_loc(&parent, last),
    }
}

/// A child of a mapping, null values included.
pub fn child<'f>(f: &Field<'f>, key: &str) -> Option<Field<'f>> {
    f.free_map().ok()?.get_raw(key)
}

/// An element of a list.
pub fn item<'f>(f: &Field<'f>, index: usize) -> Option<Field<'f>> {
    f.seq().ok()?.get(index).cloned()
}

/// Follows `keys` and indices from `f`: `path(&rule, &["egress", "0", "toPorts"])`.
pub fn path<'f>(f: &Field<'f>, steps: &[&str]) -> Option<Field<'f>> {
    let mut cur = f.clone();
    for s in steps {
        cur = match s.parse::<usize>() {
            Ok(i) => item(&cur, i)?,
            Err(_) => child(&cur, s)?,
        };
    }
    Some(cur)
}

/// Calls `visit` with every mapping entry under `f` (depth first), with its key.
pub fn walk<'f>(f: &Field<'f>, visit: &mut impl FnMut(&str, &Field<'f>)) {
    if let Ok(map) = f.free_map() {
        for (k, v) in map.entries() {
            visit(k, &v);
            walk(&v, visit);
        }
    } else if let Ok(items) = f.seq() {
        for i in &items {
            walk(i, visit);
        }
    }
}

/// Labels of a pod that `sel` selects, built from its requirements (`In` takes the first value,
/// `Exists` any value, `NotIn` and `DoesNotExist` leave the label out), with the namespace's
/// labels. None when the selector needs a reserved label or contradicts itself.
fn witness_labels(
    sel: &Selector,
    namespace_labels: impl Fn(&str) -> Vec<(String, String)>,
) -> Option<(String, LabelSet)> {
    let mut chosen: Vec<(String, String)> = Vec::new();
    let reqs = sel.requirements();
    for r in reqs {
        if !matches!(r.key.source, LabelSource::Any | LabelSource::K8s) {
            return None;
        }
        if chosen.iter().any(|(k, _)| *k == *r.key.key) {
            continue;
        }
        let same_key = || reqs.iter().filter(|o| o.key.key == r.key.key);
        let excluded = |v: &str| {
            same_key().any(|o| o.op == Operator::NotIn && o.values.iter().any(|x| x == v))
        };
        let value = if let Some(v) = same_key()
            .filter(|o| o.op == Operator::In)
            .flat_map(|o| o.values.iter())
            .find(|v| !excluded(v))
        {
            Some(v.clone())
        } else if same_key().any(|o| o.op == Operator::Exists) || &*r.key.key == NAMESPACE_LABEL {
            [PROBE_NAMESPACE, "imdsguard-lint-probe-2"]
                .into_iter()
                .find(|v| !excluded(v))
                .map(str::to_owned)
        } else {
            None
        };
        if let Some(v) = value {
            chosen.push((r.key.key.to_string(), v));
        }
    }
    let ns = match chosen.iter().find(|(k, _)| k == NAMESPACE_LABEL) {
        Some((_, v)) => v.clone(),
        None => {
            chosen.push((NAMESPACE_LABEL.to_owned(), PROBE_NAMESPACE.to_owned()));
            PROBE_NAMESPACE.to_owned()
        }
    };
    let mut extra = vec![
        (CLUSTER_LABEL.to_owned(), "default".to_owned()),
        (
            format!("{NAMESPACE_LABELS_PREFIX}kubernetes.io/metadata.name"),
            ns.clone(),
        ),
    ];
    for (k, v) in namespace_labels(&ns) {
        extra.push((format!("{NAMESPACE_LABELS_PREFIX}{k}"), v));
    }
    for (k, v) in extra {
        if !chosen.iter().any(|(c, _)| *c == k) {
            chosen.push((k, v));
        }
    }
    let labels = LabelSet::new(chosen.iter().map(|(k, v)| Label::k8s(k, v)).collect());
    sel.matches(&labels).then_some((ns, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imdsguard_policy::selector::Requirement;

    fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
        Requirement::on(key, op, values)
    }

    #[test]
    fn witnesses_satisfy_their_selector() {
        let not_in = Selector::new(vec![req(
            "k8s:io.kubernetes.pod.namespace",
            Operator::NotIn,
            &["kube-system", PROBE_NAMESPACE],
        )]);
        let (ns, labels) = witness_labels(&not_in, |_| Vec::new()).expect("a witness");
        assert_eq!(ns, "imdsguard-lint-probe-2");
        assert!(not_in.matches(&labels));

        let in_app = Selector::new(vec![
            req(
                "k8s:io.kubernetes.pod.namespace",
                Operator::In,
                &["logging", "kube-system"],
            ),
            req("app", Operator::Exists, &[]),
            req("tier", Operator::DoesNotExist, &[]),
        ]);
        let (ns, labels) =
            witness_labels(&in_app, |_| vec![("team".into(), "a".into())]).expect("a witness");
        assert_eq!(ns, "kube-system");
        assert_eq!(
            labels.get(&LabelSource::K8s, "io.cilium.k8s.namespace.labels.team"),
            Some("a")
        );
        assert!(in_app.matches(&labels));
    }

    #[test]
    fn no_witness_for_reserved_or_contradictory_selectors() {
        let host = Selector::new(vec![req("reserved:host", Operator::Exists, &[])]);
        assert!(witness_labels(&host, |_| Vec::new()).is_none());
        let contradiction = Selector::new(vec![
            req("app", Operator::In, &["a"]),
            req("app", Operator::NotIn, &["a"]),
        ]);
        assert!(witness_labels(&contradiction, |_| Vec::new()).is_none());
    }
}
