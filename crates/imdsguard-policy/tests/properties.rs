//! Property tests of the policy engine against small reference models written from Cilium's
//! semantics as `docs/policy-semantics.md` states them (the § numbers here are its sections):
//! selector matching (§2.2, §2.3), CIDR peers (§3.3), port-range splitting (§5.1), incremental
//! resolution, and L7 parser conflicts (§3.6, §11.12).

// A test: a panic on bad fixed input is the failure it should report.
#![allow(clippy::unwrap_used)]

use imdsguard_manifest::Source;
use imdsguard_policy::labels::{Label, LabelKey, LabelSet, LabelSource};
use imdsguard_policy::mapstate::port_range_prefixes;
use imdsguard_policy::selector::{Operator, Requirement, Selector};
use imdsguard_policy::verdict::{DirectionVerdict, QueryError};
use imdsguard_policy::{
    CidrGroup, DecodeOptions, Decoded, DropReason, EndpointSpec, EngineOptions, FlowQuery,
    FlowVerdict, HttpRequest, Identity, MatchType, Peer, Policy, Protocol, Repository, Verdict,
    decode_source,
};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `cases` cases, and no regression files written next to the sources.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Selector matching (§2.2, §2.3)
// ---------------------------------------------------------------------------------------------

/// The sources a label may have in these tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    Any,
    K8s,
    Reserved,
    CidrGroup,
}

impl Src {
    const ALL: [Src; 4] = [Src::K8s, Src::Reserved, Src::Any, Src::CidrGroup];

    fn name(self) -> &'static str {
        match self {
            Src::Any => "any",
            Src::K8s => "k8s",
            Src::Reserved => "reserved",
            Src::CidrGroup => "cidrgroup",
        }
    }

    fn engine(self) -> LabelSource {
        match self {
            Src::Any => LabelSource::Any,
            Src::K8s => LabelSource::K8s,
            Src::Reserved => LabelSource::Reserved,
            Src::CidrGroup => LabelSource::CidrGroup,
        }
    }
}

/// Small alphabets, so that selectors and labels often talk about the same key and value.
const KEYS: [&str; 3] = ["a", "b", "app.kubernetes.io/name"];
const VALUES: [&str; 3] = ["", "x", "y"];

/// How a selector key is written in YAML, and the source the table of §2.2 gives it.
const KEY_FORMS: [(&str, Src); 7] = [
    ("", Src::Any),
    ("any:", Src::Any),
    ("k8s:", Src::K8s),
    ("reserved:", Src::Reserved),
    ("$", Src::Reserved),
    ("reserved.", Src::Reserved),
    ("cidrgroup:", Src::CidrGroup),
];

#[derive(Debug, Clone)]
struct RefLabel {
    src: Src,
    key: &'static str,
    value: &'static str,
}

#[derive(Debug, Clone)]
struct RefRequirement {
    raw_key: String,
    src: Src,
    key: &'static str,
    op: Operator,
    values: Vec<&'static str>,
}

/// A label set: at most one label per (source, key), as in Cilium where a set is a map.
fn label_set() -> impl Strategy<Value = Vec<RefLabel>> {
    prop::collection::vec((0..Src::ALL.len(), 0..KEYS.len(), 0..VALUES.len()), 0..7).prop_map(
        |raw| {
            let mut out: Vec<RefLabel> = Vec::new();
            for (s, k, v) in raw {
                let (src, key) = (Src::ALL[s], KEYS[k]);
                if !out.iter().any(|l| l.src == src && l.key == key) {
                    out.push(RefLabel {
                        src,
                        key,
                        value: VALUES[v],
                    });
                }
            }
            out
        },
    )
}

fn requirement() -> impl Strategy<Value = RefRequirement> {
    (
        0..KEY_FORMS.len(),
        0..KEYS.len(),
        0..4usize,
        prop::collection::btree_set(0..VALUES.len(), 1..=VALUES.len()),
    )
        .prop_map(|(form, k, op, values)| {
            let (prefix, src) = KEY_FORMS[form];
            let op = [
                Operator::In,
                Operator::NotIn,
                Operator::Exists,
                Operator::DoesNotExist,
            ][op];
            let values = match op {
                Operator::In | Operator::NotIn => values.into_iter().map(|i| VALUES[i]).collect(),
                _ => Vec::new(),
            };
            RefRequirement {
                raw_key: format!("{prefix}{}", KEYS[k]),
                src,
                key: KEYS[k],
                op,
                values,
            }
        })
}

fn engine_labels(labels: &[RefLabel]) -> LabelSet {
    LabelSet::new(
        labels
            .iter()
            .map(|l| Label::new(l.src.engine(), l.key, l.value))
            .collect(),
    )
}

fn engine_selector(reqs: &[RefRequirement]) -> Selector {
    Selector::new(
        reqs.iter()
            .map(|r| {
                Requirement::new(
                    LabelKey::from_selector_key(&r.raw_key),
                    r.op,
                    r.values.iter().map(|v| v.to_string()).collect(),
                )
            })
            .collect(),
    )
}

/// §2.3, one requirement. `None` when the answer depends on which of several labels with the
/// key is looked at: an `any` key over labels of several sources with different values. Cilium's
/// `LabelArray.Get` returns the first one in an order it does not define, so §2.3 leaves this
/// open.
fn reference_requirement(labels: &[RefLabel], r: &RefRequirement) -> Option<bool> {
    let found: Vec<&str> = labels
        .iter()
        .filter(|l| l.key == r.key && (r.src == Src::Any || l.src == r.src))
        .map(|l| l.value)
        .collect();
    let present = !found.is_empty();
    let in_list: Vec<bool> = found.iter().map(|v| r.values.contains(v)).collect();
    let all = |want: bool| in_list.iter().all(|b| *b == want);
    match r.op {
        Operator::Exists => Some(present),
        Operator::DoesNotExist => Some(!present),
        Operator::In if !present => Some(false),
        Operator::NotIn if !present => Some(true),
        Operator::In if all(true) => Some(true),
        Operator::In if all(false) => Some(false),
        Operator::NotIn if all(false) => Some(true),
        Operator::NotIn if all(true) => Some(false),
        _ => None,
    }
}

/// §2.3, a selector: requirements are ANDed, the empty selector matches everything.
fn reference_selector(labels: &[RefLabel], reqs: &[RefRequirement]) -> Option<bool> {
    let results: Vec<Option<bool>> = reqs
        .iter()
        .map(|r| reference_requirement(labels, r))
        .collect();
    if results.contains(&Some(false)) {
        Some(false)
    } else if results.contains(&None) {
        None
    } else {
        Some(true)
    }
}

fn show_labels(labels: &[RefLabel]) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|l| format!("{}:{}={}", l.src.name(), l.key, l.value))
        .collect();
    format!("[{}]", parts.join(", "))
}

proptest! {
    #![proptest_config(config(1024))]

    /// `Selector::matches` agrees with the matching rules of §2.3 wherever they give one answer.
    #[test]
    fn selector_matches_reference(
        labels in label_set(),
        reqs in prop::collection::vec(requirement(), 0..4),
    ) {
        let set = engine_labels(&labels);
        let sel = engine_selector(&reqs);
        if let Some(want) = reference_selector(&labels, &reqs) {
            prop_assert_eq!(
                sel.matches(&set),
                want,
                "labels {} selector {} ({:?})",
                show_labels(&labels),
                sel,
                reqs
            );
        }
    }

    /// Every requirement on its own, too (so a bug is not hidden by the AND of several).
    #[test]
    fn requirement_matches_reference(labels in label_set(), r in requirement()) {
        let set = engine_labels(&labels);
        let sel = engine_selector(std::slice::from_ref(&r));
        if let Some(want) = reference_requirement(&labels, &r) {
            prop_assert_eq!(
                sel.matches(&set),
                want,
                "labels {} requirement {:?}",
                show_labels(&labels),
                r
            );
        }
    }

    /// Selector keys are normalised as the table of §2.2 says.
    #[test]
    fn selector_key_normalisation(form in 0..KEY_FORMS.len(), k in 0..KEYS.len()) {
        let (prefix, src) = KEY_FORMS[form];
        let key = LabelKey::from_selector_key(&format!("{prefix}{}", KEYS[k]));
        prop_assert_eq!(&key.source, &src.engine());
        prop_assert_eq!(&*key.key, KEYS[k]);
        prop_assert_eq!(key.extended(), format!("{}.{}", src.name(), KEYS[k]));
    }

    /// The empty selector matches every label set (§2.3).
    #[test]
    fn empty_selector_matches_everything(labels in label_set()) {
        prop_assert!(Selector::wildcard().matches(&engine_labels(&labels)));
        prop_assert!(Selector::new(Vec::new()).matches(&engine_labels(&labels)));
    }

    /// NotIn and DoesNotExist select identities without the key (the §2.3 gotcha), including
    /// reserved ones.
    #[test]
    fn negative_operators_match_absent_keys(
        form in 0..KEY_FORMS.len(),
        k in 0..KEYS.len(),
        v in 0..VALUES.len(),
    ) {
        let world = LabelSet::new(vec![Label::reserved("world")]);
        let key = LabelKey::from_selector_key(&format!("{}{}", KEY_FORMS[form].0, KEYS[k]));
        let not_in = Selector::new(vec![Requirement::new(
            key.clone(),
            Operator::NotIn,
            vec![VALUES[v].to_owned()],
        )]);
        let dne = Selector::new(vec![Requirement::new(key, Operator::DoesNotExist, vec![])]);
        prop_assert!(not_in.matches(&world));
        prop_assert!(dne.matches(&world));
    }
}

/// The selector cache (which identities each peer selector selects) must agree with
/// `Selector::matches`, whatever the order in which identities and selectors arrive. Namespace
/// keys are in the alphabet because the cache indexes identities and selectors by namespace.
#[derive(Debug, Clone)]
enum CacheEvent {
    AddIdentity(Vec<RefLabel>),
    RemoveIdentity(usize),
    Intern(Vec<RefRequirement>),
}

const NS_KEYS: [&str; 2] = ["a", "io.kubernetes.pod.namespace"];
const NS_KEY_FORMS: [(&str, Src); 4] = [
    ("", Src::Any),
    ("k8s:", Src::K8s),
    ("any:", Src::Any),
    ("reserved:", Src::Reserved),
];

fn ns_label_set() -> impl Strategy<Value = Vec<RefLabel>> {
    prop::collection::vec((0..Src::ALL.len(), 0..NS_KEYS.len(), 1..VALUES.len()), 0..4).prop_map(
        |raw| {
            let mut out: Vec<RefLabel> = Vec::new();
            for (s, k, v) in raw {
                let (src, key) = (Src::ALL[s], NS_KEYS[k]);
                if !out.iter().any(|l| l.src == src && l.key == key) {
                    out.push(RefLabel {
                        src,
                        key,
                        value: VALUES[v],
                    });
                }
            }
            out
        },
    )
}

fn ns_requirement() -> impl Strategy<Value = RefRequirement> {
    (
        0..NS_KEY_FORMS.len(),
        0..NS_KEYS.len(),
        0..4usize,
        prop::collection::btree_set(1..VALUES.len(), 1..VALUES.len()),
    )
        .prop_map(|(form, k, op, values)| {
            let (prefix, src) = NS_KEY_FORMS[form];
            let op = [
                Operator::In,
                Operator::NotIn,
                Operator::Exists,
                Operator::DoesNotExist,
            ][op];
            let values = match op {
                Operator::In | Operator::NotIn => values.into_iter().map(|i| VALUES[i]).collect(),
                _ => Vec::new(),
            };
            RefRequirement {
                raw_key: format!("{prefix}{}", NS_KEYS[k]),
                src,
                key: NS_KEYS[k],
                op,
                values,
            }
        })
}

fn cache_event() -> impl Strategy<Value = CacheEvent> {
    prop_oneof![
        3 => ns_label_set().prop_map(CacheEvent::AddIdentity),
        1 => any::<usize>().prop_map(CacheEvent::RemoveIdentity),
        2 => prop::collection::vec(ns_requirement(), 0..3).prop_map(CacheEvent::Intern),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn selector_cache_agrees_with_matches(events in prop::collection::vec(cache_event(), 1..20)) {
        use imdsguard_policy::selectorcache::SelectorCache;
        use std::collections::BTreeSet;
        use std::sync::Arc;
        let mut cache = SelectorCache::default();
        let mut identities: Vec<(Identity, LabelSet)> = Vec::new();
        let mut selectors = Vec::new();
        let mut next = 1000u32;
        for e in &events {
            match e {
                CacheEvent::AddIdentity(labels) => {
                    let set = engine_labels(labels);
                    if identities.iter().any(|(_, l)| *l == set) {
                        continue;
                    }
                    next += 1;
                    cache.add_identity(Identity(next), Arc::new(set.clone()));
                    identities.push((Identity(next), set));
                }
                CacheEvent::RemoveIdentity(i) if !identities.is_empty() => {
                    let (id, _) = identities.remove(i % identities.len());
                    cache.remove_identity(id);
                }
                CacheEvent::RemoveIdentity(_) => {}
                CacheEvent::Intern(reqs) => {
                    let sel = engine_selector(reqs);
                    selectors.push((cache.intern(&sel), sel));
                }
            }
        }
        for (sid, sel) in &selectors {
            let got: BTreeSet<Identity> = cache.matches(*sid).iter().copied().collect();
            let want: BTreeSet<Identity> = identities
                .iter()
                .filter(|(_, l)| sel.matches(l))
                .map(|(id, _)| *id)
                .collect();
            let all: Vec<String> = identities
                .iter()
                .map(|(id, l)| format!("{}={}", id.0, l))
                .collect();
            prop_assert_eq!(got, want, "selector {} identities {:?}", sel, all);
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// The subject index returns every rule whose subject selects the identity (a superset is
    /// fine). CNP subjects carry the injected `k8s:io.kubernetes.pod.namespace` of their policy.
    #[test]
    fn subject_index_candidates_include_every_selecting_rule(
        rules in prop::collection::vec(
            (prop::option::of(1..VALUES.len()), prop::collection::vec(ns_requirement(), 0..3)),
            1..6,
        ),
        labels in ns_label_set(),
        extra in label_set(),
    ) {
        use imdsguard_policy::api::PolicyKind;
        use imdsguard_policy::subjectindex::SubjectIndex;
        let mut all = labels.clone();
        for l in extra {
            if !all.iter().any(|m| m.src == l.src && m.key == l.key) {
                all.push(l);
            }
        }
        let set = engine_labels(&all);
        let mut index = SubjectIndex::default();
        let mut expected = Vec::new();
        for (i, (cnp_ns, reqs)) in rules.iter().enumerate() {
            let mut sel = engine_selector(reqs);
            let id = match cnp_ns {
                Some(v) => {
                    let key = LabelKey::new(LabelSource::K8s, "io.kubernetes.pod.namespace");
                    sel = sel.replacing(&key, Requirement::equals(key.clone(), VALUES[*v]));
                    imdsguard_policy::PolicyRef {
                        kind: PolicyKind::CiliumNetworkPolicy,
                        namespace: VALUES[*v].into(),
                        name: format!("p{i}").into(),
                    }
                }
                None => imdsguard_policy::PolicyRef {
                    kind: PolicyKind::CiliumClusterwideNetworkPolicy,
                    namespace: "".into(),
                    name: format!("p{i}").into(),
                },
            };
            index.insert(&id, 0, &sel);
            if sel.matches(&set) {
                expected.push((id, sel));
            }
        }
        let got = index.candidates(&set);
        for (id, sel) in &expected {
            prop_assert!(
                got.iter().any(|(p, r)| p == id && *r == 0),
                "{} with subject {} selects {} but is not a candidate",
                id,
                sel,
                set
            );
        }
    }
}

/// An `any`-source namespace key matches a namespace label of any source (§2.3), also through the
/// selector cache: here the label comes from a CIDR group's metadata (§1.4 `cidrgroup:<k>=<v>`).
#[test]
fn any_namespace_key_selects_cidr_group_label() {
    let text = "apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {name: docs, labels: {io.kubernetes.pod.namespace: x}}
spec: {externalCIDRs: [\"192.0.2.0/24\"]}
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: to-x}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {io.kubernetes.pod.namespace: x}}]
";
    let decoded = decode(text);
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    let peer = &decoded.policies[0].rules[0].egress.as_ref().unwrap()[0].peers;
    let mut repo = Repository::new(EngineOptions::default());
    repo.upsert_endpoint(client());
    repo.load(&decoded);
    repo.resolve();
    let x: IpAddr = "192.0.2.1".parse().unwrap();
    let id = repo.identity_of_ip(x);
    let labels = repo.identities().labels(id).unwrap().clone();
    let imdsguard_policy::api::Peers::Selectors(sels) = peer else {
        panic!("{peer:?}")
    };
    assert!(
        sels.iter().any(|s| s.matches(&labels)),
        "{sels:?} should match {labels}"
    );
    let v = egress_verdict(&decoded, x);
    assert_eq!(
        v.verdict,
        Verdict::Allowed,
        "the selector matches {labels}, but the flow is {:?} {:?}",
        v.verdict,
        v.drop_reason
    );
}

/// Cilium's `LabelArray.Has`/`Get` examples (§2.3).
#[test]
fn selector_spec_examples() {
    let k8s = LabelSet::new(vec![Label::parse("k8s:foo=bar")]);
    let any = LabelSet::new(vec![Label::parse("any:foo=bar")]);
    let exists =
        |raw: &str| Selector::new(vec![Requirement::exists(LabelKey::from_selector_key(raw))]);
    assert!(exists("any:foo").matches(&k8s));
    assert!(exists("foo").matches(&k8s));
    assert!(!exists("k8s:foo").matches(&any));
    assert!(exists("any:foo").matches(&any));
}

// ---------------------------------------------------------------------------------------------
// CIDR peers (§3.3)
// ---------------------------------------------------------------------------------------------

/// A prefix as plain integers, so the reference does not depend on the engine's `ipnet` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pfx {
    v6: bool,
    addr: u128,
    len: u8,
}

fn width(v6: bool) -> u8 {
    if v6 { 128 } else { 32 }
}

fn full(v6: bool) -> u128 {
    if v6 { u128::MAX } else { u128::from(u32::MAX) }
}

fn netmask(v6: bool, len: u8) -> u128 {
    if len >= width(v6) {
        full(v6)
    } else {
        full(v6) & !(full(v6) >> len)
    }
}

fn to_ip(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

impl Pfx {
    fn new(v6: bool, addr: u128, len: u8) -> Pfx {
        let len = len.min(width(v6));
        Pfx {
            v6,
            addr: addr & netmask(v6, len),
            len,
        }
    }

    fn contains_addr(&self, x: u128) -> bool {
        x & netmask(self.v6, self.len) == self.addr
    }

    fn contains(&self, other: &Pfx) -> bool {
        self.len <= other.len && self.contains_addr(other.addr)
    }

    /// An address inside the prefix, chosen by `bits`.
    fn pick(&self, bits: u128) -> u128 {
        self.addr | (bits & full(self.v6) & !netmask(self.v6, self.len))
    }

    /// A sub-prefix: `extra` more bits, chosen by `bits`.
    fn sub(&self, bits: u128, extra: u8) -> Pfx {
        let room = width(self.v6) - self.len;
        let len = self.len + extra % (room + 1);
        Pfx::new(self.v6, self.pick(bits), len)
    }

    fn text(&self) -> String {
        format!("{}/{}", to_ip(self.v6, self.addr), self.len)
    }
}

/// A random prefix; short lengths are rare otherwise, so lengths are drawn uniformly.
fn prefix(v6: bool) -> impl Strategy<Value = Pfx> {
    (any::<u128>(), 0..=width(v6)).prop_map(move |(a, l)| Pfx::new(v6, a, l))
}

/// The test subject: one pod with no IP, so no destination address can be its own.
fn client() -> EndpointSpec {
    EndpointSpec {
        name: "client".into(),
        namespace: "default".into(),
        labels: vec![("app".into(), "client".into())],
        service_account: "default".into(),
        ..Default::default()
    }
}

fn decode(text: &str) -> Decoded {
    decode_source(&Source::new("policy.yaml", text), &DecodeOptions::default())
}

fn ccnp(name: &str, body: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\n\
         metadata:\n  name: {name}\nspec:\n  endpointSelector: {{}}\n{body}"
    )
}

fn quoted(list: &[Pfx]) -> String {
    let items: Vec<String> = list.iter().map(|p| format!("\"{}\"", p.text())).collect();
    format!("[{}]", items.join(", "))
}

/// Loads `decoded` with the client pod, resolves, and evaluates client → `x` on 443/TCP.
fn egress_verdict(decoded: &Decoded, x: IpAddr) -> FlowVerdict {
    let mut repo = Repository::new(EngineOptions::default());
    repo.upsert_endpoint(client());
    repo.load(decoded);
    repo.resolve();
    repo.evaluate(&FlowQuery {
        from: Peer::Endpoint("default/client".into()),
        to: Peer::Ip(x),
        protocol: Protocol::Tcp,
        port: 443,
        http: None,
    })
    .expect("evaluate")
}

/// An address: anywhere, inside `p`, or inside one of `inner` (chosen by `choice`).
fn pick_address(choice: usize, bits: u128, p: &Pfx, inner: &[Pfx]) -> u128 {
    match choice {
        0 => bits & full(p.v6),
        1 => p.pick(bits),
        _ if inner.is_empty() => p.pick(bits),
        c => inner[c % inner.len()].pick(bits),
    }
}

fn check_cidr_set(
    p: Pfx,
    excepts: Vec<(u128, u8)>,
    outside: Option<Pfx>,
    choice: usize,
    bits: u128,
) -> Result<(), TestCaseError> {
    let mut ex: Vec<Pfx> = excepts.iter().map(|(b, e)| p.sub(*b, *e)).collect();
    if let Some(o) = outside {
        ex.push(o);
    }
    let body = format!(
        "  egress:\n  - toCIDRSet:\n    - cidr: \"{}\"\n      except: {}\n",
        p.text(),
        quoted(&ex)
    );
    let decoded = decode(&ccnp("cidr", &body));
    if ex.iter().any(|e| !p.contains(e)) {
        // §3.1: every except must lie inside its cidr; the object is rejected.
        prop_assert_eq!(decoded.policies.len(), 0, "{}", body);
        prop_assert_eq!(decoded.errors.len(), 1, "{}", body);
        prop_assert!(
            decoded.errors[0].message.contains("is not contained in"),
            "{}",
            decoded.errors[0]
        );
        return Ok(());
    }
    prop_assert!(decoded.errors.is_empty(), "{:?}\n{}", decoded.errors, body);
    let x = pick_address(choice, bits, &p, &ex);
    let want = p.contains_addr(x) && !ex.iter().any(|e| e.contains_addr(x));
    let v = egress_verdict(&decoded, to_ip(p.v6, x));
    let ctx = format!(
        "cidr {} except {} x {}",
        p.text(),
        quoted(&ex),
        to_ip(p.v6, x)
    );
    if want {
        prop_assert_eq!(v.verdict, Verdict::Allowed, "{}", ctx);
        prop_assert_eq!(v.drop_reason, None, "{}", ctx);
        prop_assert_eq!(v.match_type, MatchType::L3Only, "{}", ctx);
    } else {
        prop_assert_eq!(v.verdict, Verdict::Denied, "{}", ctx);
        prop_assert_eq!(v.drop_reason, Some(DropReason::PolicyDenied), "{}", ctx);
        prop_assert_eq!(v.match_type, MatchType::None, "{}", ctx);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// `toCIDRSet: [{cidr: P, except: E…}]` allows x ⇔ x ∈ P ∧ x ∉ every E (§3.3, the net
    /// effect); an except outside P rejects the policy (§3.1).
    #[test]
    fn cidr_set_with_excepts_v4(
        p in prefix(false),
        excepts in prop::collection::vec((any::<u128>(), 0u8..=32), 0..4),
        outside in prop::option::weighted(0.15, prefix(false)),
        choice in 0..5usize,
        bits in any::<u128>(),
    ) {
        check_cidr_set(p, excepts, outside, choice, bits)?;
    }

    /// The same for IPv6, whose prefixes become `cidr:` labels with `-` for `:`.
    #[test]
    fn cidr_set_with_excepts_v6(
        p in prefix(true),
        excepts in prop::collection::vec((any::<u128>(), 0u8..=128), 0..4),
        outside in prop::option::weighted(0.15, prefix(true)),
        choice in 0..5usize,
        bits in any::<u128>(),
    ) {
        check_cidr_set(p, excepts, outside, choice, bits)?;
    }

    /// Two overlapping `toCIDR` prefixes allow exactly their union; a bare address means /32.
    #[test]
    fn overlapping_to_cidr(
        p1 in prefix(false),
        rel in 0..3usize,
        p2_raw in prefix(false),
        sub_bits in any::<u128>(),
        sub_extra in 0u8..=32,
        choice in 0..4usize,
        bits in any::<u128>(),
    ) {
        let p2 = match rel {
            0 => p2_raw,
            1 => p1.sub(sub_bits, sub_extra),
            // A prefix containing p1.
            _ => Pfx::new(false, p1.addr, sub_extra % (p1.len + 1)),
        };
        let text = |p: &Pfx| {
            if p.len == 32 {
                format!("\"{}\"", to_ip(false, p.addr))
            } else {
                format!("\"{}\"", p.text())
            }
        };
        let body = format!("  egress:\n  - toCIDR: [{}, {}]\n", text(&p1), text(&p2));
        let decoded = decode(&ccnp("cidrs", &body));
        prop_assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
        let x = pick_address(choice, bits, &p1, &[p2]);
        let want = p1.contains_addr(x) || p2.contains_addr(x);
        let v = egress_verdict(&decoded, to_ip(false, x));
        let ctx = format!("toCIDR [{}, {}] x {}", p1.text(), p2.text(), to_ip(false, x));
        prop_assert_eq!(v.verdict == Verdict::Allowed, want, "{} {:?}", ctx, v.verdict);
        if !want {
            prop_assert_eq!(v.drop_reason, Some(DropReason::PolicyDenied), "{}", ctx);
        }
    }

    /// An allow `toCIDR: [A]` with a deny `toCIDRSet: [{cidr: D, except: [E]}]`: denied by the
    /// denylist ⇔ x ∈ D ∖ E; otherwise allowed ⇔ x ∈ A (§3.3, §5.2 deny wins).
    #[test]
    fn cidr_allow_with_cidr_set_deny(
        a in prefix(false),
        d_rel in 0..3usize,
        d_raw in prefix(false),
        d_bits in any::<u128>(),
        d_extra in 0u8..=32,
        e_bits in any::<u128>(),
        e_extra in 0u8..=32,
        choice in 0..5usize,
        bits in any::<u128>(),
    ) {
        let d = match d_rel {
            0 => d_raw,
            1 => a.sub(d_bits, d_extra),
            _ => Pfx::new(false, a.addr, d_extra % (a.len + 1)),
        };
        let e = d.sub(e_bits, e_extra);
        let body = format!(
            concat!(
                "  egress:\n  - toCIDR: [\"{}\"]\n",
                "  egressDeny:\n  - toCIDRSet: [{{cidr: \"{}\", except: [\"{}\"]}}]\n",
            ),
            a.text(),
            d.text(),
            e.text()
        );
        let decoded = decode(&ccnp("mixed", &body));
        prop_assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
        let x = match choice {
            0..=1 => pick_address(choice, bits, &a, &[]),
            2 => d.pick(bits),
            _ => e.pick(bits),
        };
        let denied = d.contains_addr(x) && !e.contains_addr(x);
        let allowed = !denied && a.contains_addr(x);
        let v = egress_verdict(&decoded, to_ip(false, x));
        let ctx = format!(
            "allow {} deny {} except {} x {}",
            a.text(),
            d.text(),
            e.text(),
            to_ip(false, x)
        );
        let (want_verdict, want_reason) = if denied {
            (Verdict::Denied, Some(DropReason::PolicyDeny))
        } else if allowed {
            (Verdict::Allowed, None)
        } else {
            (Verdict::Denied, Some(DropReason::PolicyDenied))
        };
        prop_assert_eq!(v.verdict, want_verdict, "{}", ctx);
        prop_assert_eq!(v.drop_reason, want_reason, "{}", ctx);
    }
}

// ---------------------------------------------------------------------------------------------
// Port ranges (§5.1: each masked sub-range)
// ---------------------------------------------------------------------------------------------

const PORT_EDGES: [u16; 8] = [0, 1, 1023, 1024, 32767, 32768, 65534, 65535];

fn check_port_range(a: u16, b: u16) -> Result<(), TestCaseError> {
    let (a, b) = (a.min(b), a.max(b));
    let prefixes = port_range_prefixes(a, b);
    prop_assert!(!prefixes.is_empty());
    let mut blocks: Vec<(u32, u32)> = Vec::new();
    for &(port, len) in &prefixes {
        prop_assert!(len <= 16, "({}, {}) for {}-{}", port, len, a, b);
        let size = 1u32 << (16 - u32::from(len));
        prop_assert_eq!(
            u32::from(port) % size,
            0,
            "({}, {}) is not aligned, for {}-{}",
            port,
            len,
            a,
            b
        );
        blocks.push((u32::from(port), u32::from(port) + size - 1));
    }
    blocks.sort();
    // Disjoint and contiguous from a to b: the union is exactly [a, b].
    prop_assert_eq!(blocks[0].0, u32::from(a), "{:?}", prefixes);
    prop_assert_eq!(blocks[blocks.len() - 1].1, u32::from(b), "{:?}", prefixes);
    for w in blocks.windows(2) {
        prop_assert_eq!(
            w[0].1 + 1,
            w[1].0,
            "gap or overlap in {:?} for {}-{}",
            prefixes,
            a,
            b
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn port_range_prefixes_cover_exactly(a in any::<u16>(), b in any::<u16>()) {
        check_port_range(a, b)?;
    }

    #[test]
    fn port_range_prefixes_small_ranges(a in any::<u16>(), span in 0u16..300) {
        check_port_range(a, a.saturating_add(span))?;
    }

    #[test]
    fn port_range_prefixes_edges(
        a in prop::sample::select(PORT_EDGES.to_vec()),
        b in prop::sample::select(PORT_EDGES.to_vec()),
    ) {
        check_port_range(a, b)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Incremental resolution equals full resolution
// ---------------------------------------------------------------------------------------------

/// Policies, each in two versions (an upsert of the other version is an update).
const POLICIES: [[&str; 2]; 8] = [
    [
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-ingress, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]
",
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-ingress, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client, k8s:io.kubernetes.pod.namespace: b}}]
    toPorts: [{ports: [{port: \"80\", endPort: 90, protocol: TCP}], rules: {http: [{method: GET}]}}]
  - fromCIDR: [\"198.51.100.0/24\"]
",
    ],
    [
        "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: deny-docs}
spec:
  endpointSelector: {}
  enableDefaultDeny: {egress: false}
  egressDeny:
  - toCIDR: [\"192.0.2.0/24\"]
",
        "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: deny-docs}
spec:
  endpointSelector: {matchExpressions: [{key: app, operator: NotIn, values: [web]}]}
  enableDefaultDeny: {egress: false}
  egressDeny:
  - toCIDRSet: [{cidr: \"192.0.2.0/24\", except: [\"192.0.2.128/25\"]}]
    toPorts: [{ports: [{port: \"443\"}]}]
",
    ],
    [
        "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: egress-world}
spec:
  endpointSelector: {matchExpressions: [{key: io.kubernetes.pod.namespace, operator: NotIn, values: [b]}]}
  egress:
  - toEntities: [world]
    toPorts: [{ports: [{port: \"80\", protocol: TCP}], rules: {http: [{method: GET}]}}]
  - toEndpoints: [{}]
",
        "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: egress-world}
spec:
  endpointSelector: {matchExpressions: [{key: io.kubernetes.pod.namespace, operator: NotIn, values: [b]}]}
  egress:
  - toCIDRSet: [{cidr: \"10.0.0.0/8\", except: [\"10.1.0.0/16\"]}]
  - toCIDRSet: [{cidrGroupRef: imds}]
    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]
",
    ],
    [
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-internal, namespace: b}
spec:
  endpointSelector: {}
  egress:
  - toEndpoints: [{}]
  ingress:
  - fromEndpoints: [{}]
",
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-internal, namespace: b}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEntities: [cluster]
    toPorts: [{ports: [{port: \"53\", protocol: ANY}]}]
  egress: [{}]
",
    ],
    [
        "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: client-egress}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]
",
        "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: client-egress}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toCIDR: [\"10.0.0.0/8\"]
  egressDeny:
  - toCIDR: [\"10.1.0.0/16\"]
    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]
",
    ],
    [
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-deny, namespace: a}
spec:
  endpointSelector: {}
  enableDefaultDeny: {ingress: false}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: \"443\", protocol: TCP}]}]
",
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-deny, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: web2}}
  ingressDeny:
  - fromCIDR: [\"198.51.100.0/24\"]
  ingress:
  - fromEntities: [all]
",
    ],
    [
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: team-x, namespace: a}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{matchLabels: {io.cilium.k8s.namespace.labels.team: x}}]
    toPorts: [{ports: [{port: \"443\", protocol: TCP}]}]
",
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: team-x, namespace: a}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{matchExpressions: [{key: io.cilium.k8s.namespace.labels.team, operator: DoesNotExist}]}]
",
    ],
    [
        "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: group-egress}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toCIDRSet: [{cidrGroupSelector: {matchLabels: {team: x}}}]
",
        "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: group-egress}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toCIDRSet: [{cidrGroupRef: imds, except: [\"169.254.169.0/24\"]}]
  - toEntities: [cluster]
",
    ],
];

/// CIDR group `imds` in two versions.
const GROUPS: [&str; 2] = [
    "apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {name: imds}
spec: {externalCIDRs: [\"169.254.169.254/32\"]}
",
    "apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {name: imds, labels: {team: x}}
spec: {externalCIDRs: [\"169.254.0.0/16\", \"192.0.2.0/25\"]}
",
];

/// Endpoints: (namespace, name, IP, labels of each variant).
const ENDPOINTS: [(&str, &str, &str, [&str; 2]); 4] = [
    ("a", "web", "10.1.0.10", ["web", "web2"]),
    ("a", "client", "10.2.0.11", ["client", "other"]),
    ("b", "client", "10.3.0.12", ["client", "web"]),
    ("b", "db", "192.0.2.200", ["db", "client"]),
];

/// Labels of a namespace.
type NamespaceLabels = &'static [(&'static str, &'static str)];

/// Namespace labels of `a` and `b` in two versions each.
const NAMESPACES: [(&str, [NamespaceLabels; 2]); 2] = [
    ("a", [&[("team", "x")], &[("team", "y")]]),
    ("b", [&[("team", "y")], &[]]),
];

const ADDRESSES: [&str; 10] = [
    "10.1.0.10",
    "10.2.0.11",
    "10.3.0.12",
    "192.0.2.200",
    "192.0.2.1",
    "10.9.9.9",
    "169.254.169.254",
    "169.254.1.1",
    "198.51.100.7",
    "8.8.8.8",
];

fn policy(i: usize, version: usize) -> Policy {
    let d = decode(POLICIES[i][version]);
    assert!(d.errors.is_empty(), "policy {i}/{version}: {:?}", d.errors);
    assert_eq!(d.policies.len(), 1);
    d.policies[0].clone()
}

fn group(version: usize) -> CidrGroup {
    let d = decode(GROUPS[version]);
    assert!(d.errors.is_empty(), "group {version}: {:?}", d.errors);
    d.groups[0].clone()
}

fn endpoint(i: usize, variant: usize) -> EndpointSpec {
    let (ns, name, ip, apps) = ENDPOINTS[i];
    EndpointSpec {
        name: name.into(),
        namespace: ns.into(),
        labels: vec![("app".into(), apps[variant].into())],
        service_account: "default".into(),
        ips: vec![ip.parse().unwrap()],
        ..Default::default()
    }
}

fn namespace_labels(i: usize, version: usize) -> Vec<(String, String)> {
    NAMESPACES[i].1[version]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What the repository should hold.
#[derive(Debug, Clone, PartialEq)]
struct State {
    policies: Vec<Option<usize>>,
    endpoints: Vec<Option<usize>>,
    group: Option<usize>,
    namespaces: Vec<usize>,
}

#[derive(Debug, Clone)]
enum Op {
    UpsertPolicy(usize, usize),
    DeletePolicy(usize),
    UpsertEndpoint(usize, usize),
    RemoveEndpoint(usize),
    UpsertGroup(usize),
    DeleteGroup,
    SetNamespaceLabels(usize, usize),
}

impl Op {
    fn apply(&self, repo: &mut Repository, state: &mut State) {
        match *self {
            Op::UpsertPolicy(i, v) => {
                repo.upsert_policy(policy(i, v));
                state.policies[i] = Some(v);
            }
            Op::DeletePolicy(i) => {
                let id = policy(i, 0).id;
                assert_eq!(repo.delete_policy(&id), state.policies[i].is_some());
                state.policies[i] = None;
            }
            Op::UpsertEndpoint(i, v) => {
                repo.upsert_endpoint(endpoint(i, v));
                state.endpoints[i] = Some(v);
            }
            Op::RemoveEndpoint(i) => {
                let (ns, name, _, _) = ENDPOINTS[i];
                assert_eq!(repo.remove_endpoint(ns, name), state.endpoints[i].is_some());
                state.endpoints[i] = None;
            }
            Op::UpsertGroup(v) => {
                repo.upsert_group(group(v));
                state.group = Some(v);
            }
            Op::DeleteGroup => {
                repo.delete_group("imds");
                state.group = None;
            }
            Op::SetNamespaceLabels(i, v) => {
                repo.set_namespace_labels(NAMESPACES[i].0, namespace_labels(i, v));
                state.namespaces[i] = v;
            }
        }
    }
}

fn basic_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..POLICIES.len(), 0..2usize).prop_map(|(i, v)| Op::UpsertPolicy(i, v)),
        2 => (0..POLICIES.len()).prop_map(Op::DeletePolicy),
        3 => (0..ENDPOINTS.len(), 0..2usize).prop_map(|(i, v)| Op::UpsertEndpoint(i, v)),
        2 => (0..ENDPOINTS.len()).prop_map(Op::RemoveEndpoint),
    ]
}

fn extended_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => basic_op(),
        1 => (0..2usize).prop_map(Op::UpsertGroup),
        1 => Just(Op::DeleteGroup),
        1 => (0..NAMESPACES.len(), 0..2usize).prop_map(|(i, v)| Op::SetNamespaceLabels(i, v)),
    ]
}

fn initial_state() -> impl Strategy<Value = State> {
    (
        prop::collection::vec(prop::option::of(0..2usize), POLICIES.len()),
        prop::collection::vec(prop::option::of(0..2usize), ENDPOINTS.len()),
    )
        .prop_map(|(policies, endpoints)| State {
            policies,
            endpoints,
            group: Some(0),
            namespaces: vec![0; NAMESPACES.len()],
        })
}

/// A repository holding `state`, built in one go (policies first, or endpoints first).
fn build(state: &State, policies_first: bool) -> Repository {
    let mut repo = Repository::new(EngineOptions::default());
    for (i, v) in state.namespaces.iter().enumerate() {
        repo.set_namespace_labels(NAMESPACES[i].0, namespace_labels(i, *v));
    }
    let add_policies = |repo: &mut Repository| {
        if let Some(g) = state.group {
            repo.upsert_group(group(g));
        }
        for (i, v) in state.policies.iter().enumerate() {
            if let Some(v) = v {
                repo.upsert_policy(policy(i, *v));
            }
        }
    };
    if policies_first {
        add_policies(&mut repo);
    }
    for (i, v) in state.endpoints.iter().enumerate() {
        if let Some(v) = v {
            repo.upsert_endpoint(endpoint(i, *v));
        }
    }
    if !policies_first {
        add_policies(&mut repo);
    }
    repo.resolve();
    repo
}

fn describe_direction(d: &Option<DirectionVerdict>) -> String {
    match d {
        None => "-".into(),
        Some(d) => {
            let names = |v: &[imdsguard_policy::PolicyRef]| {
                v.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let mut notes = d.notes.clone();
            notes.sort();
            format!(
                "{{enforced={} {:?} {:?} {} proxy={} allowed_by=[{}] denied_by=[{}] http={:?} http_by=[{}] log={:?} notes={:?}}}",
                d.enforced,
                d.verdict,
                d.drop_reason,
                d.match_type.as_str(),
                d.proxy,
                names(&d.allowed_by),
                names(&d.denied_by),
                d.http_allowed,
                names(&d.http_allowed_by),
                d.policy_log,
                notes
            )
        }
    }
}

/// Everything about a verdict except identity numbers (local ones depend on allocation order).
fn describe(r: Result<FlowVerdict, QueryError>) -> String {
    match r {
        Err(e) => format!("error: {e}"),
        Ok(v) => format!(
            "{:?} {:?} {} {:?} proxy={} http={:?} egress={} ingress={}",
            v.verdict,
            v.drop_reason,
            v.match_type.as_str(),
            v.direction,
            v.proxy,
            v.http_allowed,
            describe_direction(&v.egress),
            describe_direction(&v.ingress)
        ),
    }
}

fn flows(state: &State) -> Vec<FlowQuery> {
    let mut sources: Vec<Peer> = vec![
        Peer::Identity(Identity::WORLD),
        Peer::Identity(Identity::HOST),
        Peer::Ip("198.51.100.7".parse().unwrap()),
    ];
    let mut dests: Vec<Peer> = vec![Peer::Identity(Identity::WORLD)];
    dests.extend(ADDRESSES.iter().map(|a| Peer::Ip(a.parse().unwrap())));
    for (i, v) in state.endpoints.iter().enumerate() {
        if v.is_some() {
            let (ns, name, _, _) = ENDPOINTS[i];
            sources.push(Peer::Endpoint(format!("{ns}/{name}")));
            dests.push(Peer::Endpoint(format!("{ns}/{name}")));
        }
    }
    let get = HttpRequest {
        method: "GET".into(),
        path: "/".into(),
        host: "example".into(),
        headers: vec![],
    };
    let post = HttpRequest {
        method: "POST".into(),
        ..get.clone()
    };
    let ports: [(Protocol, u16, Option<HttpRequest>); 6] = [
        (Protocol::Tcp, 80, Some(get)),
        (Protocol::Tcp, 85, Some(post)),
        (Protocol::Tcp, 443, None),
        (Protocol::Udp, 53, None),
        (Protocol::Sctp, 53, None),
        (Protocol::Icmp, 8, None),
    ];
    let mut out = Vec::new();
    for from in &sources {
        for to in &dests {
            let endpoint_side =
                matches!(from, Peer::Endpoint(_)) || matches!(to, Peer::Endpoint(_));
            if !endpoint_side {
                continue;
            }
            for (protocol, port, http) in &ports {
                out.push(FlowQuery {
                    from: from.clone(),
                    to: to.clone(),
                    protocol: *protocol,
                    port: *port,
                    http: http.clone(),
                });
            }
        }
    }
    out
}

fn check_incremental(
    initial: State,
    ops: Vec<Op>,
    policies_first: bool,
) -> Result<(), TestCaseError> {
    let mut state = initial.clone();
    let mut repo = build(&initial, true);
    for op in &ops {
        op.apply(&mut repo, &mut state);
        repo.resolve();
    }
    let fresh = build(&state, policies_first);
    for q in flows(&state) {
        let got = describe(repo.evaluate(&q));
        let want = describe(fresh.evaluate(&q));
        prop_assert_eq!(
            &got,
            &want,
            "flow {:?} -> {:?} {:?}/{}\ninitial {:?}\nops {:?}\nfinal {:?}",
            q.from,
            q.to,
            q.protocol,
            q.port,
            initial,
            ops,
            state
        );
    }
    // The resolved policies agree on errors too.
    for (i, v) in state.endpoints.iter().enumerate() {
        if v.is_some() {
            let (ns, name, _, _) = ENDPOINTS[i];
            let key = format!("{ns}/{name}");
            let a = repo.endpoint_policy(&key).map(|p| p.error.clone());
            let b = fresh.endpoint_policy(&key).map(|p| p.error.clone());
            prop_assert!(
                a.is_some(),
                "{} has no resolved policy after {:?}",
                key,
                ops
            );
            prop_assert_eq!(a, b, "{}", key);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(64))]

    /// Upserts and deletes of policies and endpoints, each followed by `resolve()`, leave the
    /// repository giving the same verdicts as one built from the final state.
    #[test]
    fn incremental_resolution_equals_full(
        initial in initial_state(),
        ops in prop::collection::vec(basic_op(), 1..12),
        policies_first in any::<bool>(),
    ) {
        check_incremental(initial, ops, policies_first)?;
    }

    /// The same with CIDR-group and namespace-label changes mixed in.
    #[test]
    fn incremental_resolution_equals_full_with_groups_and_namespaces(
        initial in initial_state(),
        ops in prop::collection::vec(extended_op(), 1..12),
        policies_first in any::<bool>(),
    ) {
        check_incremental(initial, ops, policies_first)?;
    }
}

/// The smallest case the property above found: a pod that appears after the policy was resolved
/// is not added to the peers of `toEndpoints: [{}]` in the policies of pods already resolved.
#[test]
fn new_peer_endpoint_updates_existing_subjects() {
    let mut state = State {
        policies: vec![None; POLICIES.len()],
        endpoints: vec![None; ENDPOINTS.len()],
        group: None,
        namespaces: vec![0; NAMESPACES.len()],
    };
    state.policies[2] = Some(0); // egress-world v0: egress toEndpoints [{}] for every pod outside b
    let mut repo = build(&state, true);
    Op::UpsertEndpoint(0, 0).apply(&mut repo, &mut state); // a/web
    repo.resolve();
    Op::UpsertEndpoint(1, 0).apply(&mut repo, &mut state); // a/client, a new identity
    repo.resolve();
    let q = FlowQuery {
        from: Peer::Endpoint("a/web".into()),
        to: Peer::Endpoint("a/client".into()),
        protocol: Protocol::Tcp,
        port: 443,
        http: None,
    };
    let fresh = build(&state, true);
    assert_eq!(fresh.evaluate(&q).unwrap().verdict, Verdict::Allowed);
    assert_eq!(
        describe(repo.evaluate(&q)),
        describe(fresh.evaluate(&q)),
        "a/web -> a/client after a/client was added"
    );
}

// ---------------------------------------------------------------------------------------------
// L7 parser conflicts (§3.6, §5.1, §11.12)
// ---------------------------------------------------------------------------------------------

const PARSERS: [&str; 4] = [
    "{http: [{method: GET}]}",
    "{kafka: [{topic: logs}]}",
    "{l7proto: myproto, l7: [{cmd: READ}]}",
    "{dns: [{matchPattern: \"*\"}]}",
];

/// Peers written the same way in both rules, so the two rules have the same selector.
const PEER_FORMS: [&str; 4] = [
    "",
    "toEndpoints: [{}]\n    ",
    "toEntities: [world]\n    ",
    "toCIDR: [\"192.0.2.0/24\"]\n    ",
];

fn conflict_policy(peer: &str, port: u16, first: &str, second: &str) -> String {
    let item = |rules: &str| {
        format!(
            "  - {peer}toPorts: [{{ports: [{{port: \"{port}\", protocol: TCP}}], rules: {rules}}}]\n"
        )
    };
    ccnp(
        "conflict",
        &format!("  egress:\n{}{}", item(first), item(second)),
    )
}

proptest! {
    #![proptest_config(config(64))]

    /// Two rules with the same selector and port: different parsers make the endpoint's policy an
    /// error (and nothing panics); the same parser twice is fine.
    #[test]
    fn l7_parser_conflict_is_an_error(
        peer in 0..PEER_FORMS.len(),
        port in 1u16..=65535,
        first in 0..PARSERS.len(),
        second in 0..PARSERS.len(),
        previous in any::<bool>(),
    ) {
        let text = conflict_policy(PEER_FORMS[peer], port, PARSERS[first], PARSERS[second]);
        let decoded = decode(&text);
        prop_assert!(decoded.errors.is_empty(), "{:?}\n{}", decoded.errors, text);
        let mut repo = Repository::new(EngineOptions::default());
        repo.upsert_endpoint(client());
        if previous {
            // A valid policy first: on error the engine keeps the previous tables (§5.5).
            let same = conflict_policy(PEER_FORMS[peer], port, PARSERS[first], PARSERS[first]);
            let ok = decode(&same);
            repo.load(&ok);
            repo.resolve();
        }
        repo.load(&decoded);
        repo.resolve();
        let p = repo.endpoint_policy("default/client").expect("resolved");
        if first == second {
            prop_assert!(p.error.is_none(), "{:?}\n{}", p.error, text);
        } else {
            let e = p.error.clone().unwrap_or_default();
            prop_assert!(e.contains("conflicting L7 parsers"), "{:?}\n{}", p.error, text);
        }
        // Evaluating still works.
        for to in [Peer::Ip("192.0.2.1".parse().unwrap()), Peer::Identity(Identity::WORLD)] {
            let v = repo.evaluate(&FlowQuery {
                from: Peer::Endpoint("default/client".into()),
                to,
                protocol: Protocol::Tcp,
                port,
                http: None,
            });
            prop_assert!(v.is_ok(), "{:?}", v.err());
        }
    }
}

/// The seed case of §11.12: HTTP and Kafka on the same selector and port.
#[test]
fn http_and_kafka_on_the_same_port_conflict() {
    let text = conflict_policy(PEER_FORMS[1], 9092, PARSERS[0], PARSERS[1]);
    let decoded = decode(&text);
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    let mut repo = Repository::new(EngineOptions::default());
    repo.upsert_endpoint(client());
    repo.upsert_endpoint(EndpointSpec {
        name: "kafka".into(),
        namespace: "default".into(),
        labels: vec![("app".into(), "kafka".into())],
        ips: vec!["10.0.0.9".parse().unwrap()],
        ..Default::default()
    });
    repo.load(&decoded);
    repo.resolve();
    let p = repo.endpoint_policy("default/client").expect("resolved");
    let err = p.error.clone().expect("a parser conflict");
    assert!(err.contains("conflicting L7 parsers"), "{err}");
    // No previous policy: the endpoint fails closed.
    let v = repo
        .evaluate(&FlowQuery {
            from: Peer::Endpoint("default/client".into()),
            to: Peer::Endpoint("default/kafka".into()),
            protocol: Protocol::Tcp,
            port: 9092,
            http: None,
        })
        .unwrap();
    assert_eq!(v.verdict, Verdict::Denied);
}
