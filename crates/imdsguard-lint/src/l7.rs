//! L7 traps: rules that restrict nothing (IG1001 default-allow visibility, IG1002 lifted by another
//! allow) and HTTP regexes that do not mean what they look like (IG1101, IG1102, IG1103). Envoy
//! matches `method`, `path` and `host` as RE2 full-string matches, `path` against the whole request
//! target including its query (docs/policy-semantics.md §3.6); in default-allow mode Cilium appends
//! an allow-all L7 rule (§4.2); and L7 rules are a union over every allow that covers the peer and
//! port (§5.4).

use crate::Finding;
use crate::checks::{
    HTTP_METHOD_NEVER_MATCHES, HTTP_PATH_FULL_MATCH, HTTP_PATH_PREFIX_INTENT, L7_LIFTED,
    L7_VISIBILITY_ONLY,
};
use crate::metadata::{IMDS_V4, TYPICAL_REQUESTS, TypicalRequest};
use crate::model::{Loc, Model, RuleAt, child, describe_pods, key_loc, path, path_loc};
use imdsguard_manifest::Field;
use imdsguard_policy::api::CIDR_GROUP_NAME_KEY;
use imdsguard_policy::api::{Direction, Peers, PolicyItem, PortRule, PortSpec, Section};
use imdsguard_policy::l7::{FullMatch, HttpRule, L7Rules};
use imdsguard_policy::labels::LabelSource;
use imdsguard_policy::{HttpRequest, Peer, Policy, Protocol, Verdict};
use std::net::{IpAddr, Ipv4Addr};

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// An address outside every cluster (TEST-NET-3), for peers that are "anything".
const SOME_WORLD_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));

pub fn check(m: &Model) -> Vec<Finding> {
    let mut out = Vec::new();
    for (at, p, _) in m.endpoint_rules() {
        let Some(rf) = m.rule_field(at) else {
            continue;
        };
        for (section, items) in p.rules[at.rule].sections() {
            let name = match section {
                Section::Ingress => "ingress",
                Section::Egress => "egress",
                Section::IngressDeny | Section::EgressDeny => continue,
            };
            for item in items {
                for (j, pr) in item.ports.iter().flatten().enumerate() {
                    let Some(l7) = &pr.l7 else {
                        continue;
                    };
                    let index = item.index.to_string();
                    let port_rule = j.to_string();
                    let steps = [name, index.as_str(), "toPorts", port_rule.as_str(), "rules"];
                    let rules_f = path(&rf, &steps);
                    let site = Site {
                        at,
                        policy: p,
                        dir: section.direction(),
                        item,
                        port_rule: pr,
                        rules: path_loc(&rf, &steps),
                        rule: &rf,
                    };
                    unrestricted(m, &site, l7, &mut out);
                    if let L7Rules::Http(http) = l7 {
                        for (h, rule) in http.iter().enumerate() {
                            let hf = rules_f
                                .as_ref()
                                .and_then(|f| path(f, &["http", &h.to_string()]));
                            regexes(m, &site, rule, hf.as_ref(), &mut out);
                        }
                    }
                }
            }
        }
    }
    out
}

/// One port rule with L7 rules, and where it is.
struct Site<'a> {
    at: RuleAt,
    policy: &'a Policy,
    dir: Direction,
    item: &'a PolicyItem,
    port_rule: &'a PortRule,
    rules: Option<Loc>,
    rule: &'a Field<'a>,
}

/// IG1001 and IG1002: the L7 rules let every request through.
fn unrestricted(m: &Model, s: &Site, l7: &L7Rules, out: &mut Vec<Finding>) {
    let subjects = m.subjects(s.at);
    let dir = s.dir.as_str().to_lowercase();
    let parser = match l7 {
        L7Rules::Http(_) => "HTTP".to_owned(),
        L7Rules::Kafka(_) => "Kafka".to_owned(),
        L7Rules::Dns(_) => "DNS".to_owned(),
        L7Rules::Generic(p) => p.clone(),
    };
    let default_allow: Vec<String> = subjects
        .iter()
        .filter(|k| {
            m.repo
                .endpoint_policy(k)
                .is_some_and(|ep| ep.direction(s.dir).enforced && !ep.direction(s.dir).default_deny)
        })
        .cloned()
        .collect();
    if !default_allow.is_empty() {
        let own = child(s.rule, "enableDefaultDeny")
            .and_then(|e| child(&e, &dir))
            .filter(|f| f.node.as_str() == Some("false"))
            .map(|f| {
                format!(
                    " (this rule sets enableDefaultDeny.{dir}: false at line {})",
                    f.pos().line
                )
            })
            .unwrap_or_default();
        let who = describe_pods(m, s.at, &default_allow);
        let message = format!(
            "These {parser} rules only add visibility: no policy that selects {who} turns on {dir} default deny{own}, \
             so Cilium appends an allow-all {parser} rule and every request passes the proxy. \
             Nothing here is restricted, although the rules look like a restriction."
        );
        let fix = format!(
            "To enforce the rules, set enableDefaultDeny.{dir}: true (and allow the other {dir} these pods need, \
             such as DNS); to keep them as visibility, say so in the policy's description."
        );
        out.push(m.finding(
            &L7_VISIBILITY_ONLY,
            s.policy,
            s.rules.clone(),
            message,
            Some(fix),
        ));
        return;
    }
    let L7Rules::Http(_) = l7 else {
        return;
    };
    // Default deny holds: probe with a request no sensible rule matches.
    let Some(port) = s.port_rule.ports.iter().find_map(|p| match p.port {
        PortSpec::Number(n) if n > 0 && p.protocol == Protocol::Tcp => Some(n),
        _ => None,
    }) else {
        return;
    };
    let Some(peer) = probe_peer(m, s.item) else {
        return;
    };
    let probe = HttpRequest {
        method: "IMDSGUARD-LINT-PROBE".into(),
        path: "/imdsguard-lint-probe?no-rule-matches-this".into(),
        host: "imdsguard-lint.invalid".into(),
        headers: Vec::new(),
    };
    for subject in &subjects {
        let me = Peer::Endpoint(subject.clone());
        let (from, to) = match s.dir {
            Direction::Egress => (me, peer.clone()),
            Direction::Ingress => (peer.clone(), me),
        };
        let Some(v) = m.evaluate(from, to, port, Some(probe.clone())) else {
            continue;
        };
        let side = match s.dir {
            Direction::Egress => v.egress.as_ref(),
            Direction::Ingress => v.ingress.as_ref(),
        };
        let Some(side) = side else {
            continue;
        };
        if side.verdict != Verdict::Allowed || side.http_allowed != Some(true) {
            continue;
        }
        if side.http_allowed_by.contains(&s.policy.id) || side.http_allowed_by.is_empty() {
            continue;
        }
        let by: Vec<String> = side.http_allowed_by.iter().map(|p| p.to_string()).collect();
        let message = format!(
            "These HTTP rules restrict nothing on port {port}: {} also allows this peer and port without HTTP rules, \
             and Envoy lets a request through when any applicable allow has no HTTP rules (L7 rules are a union).",
            by.join(", ")
        );
        out.push(m.finding(&L7_LIFTED, s.policy, s.rules.clone(), message, None));
        return;
    }
}

/// A peer of an item to probe with: an address it names, else a pod it selects.
fn probe_peer(m: &Model, item: &PolicyItem) -> Option<Peer> {
    let Peers::Selectors(selectors) = &item.peers else {
        return Some(Peer::Ip(SOME_WORLD_IP));
    };
    let mut ips: Vec<IpAddr> = item.prefixes.iter().map(|p| p.network()).collect();
    for sel in selectors {
        for r in sel.requirements() {
            if r.key.source != LabelSource::CidrGroup {
                continue;
            }
            let Some(name) = r.key.key.strip_prefix(&format!("{CIDR_GROUP_NAME_KEY}/")) else {
                continue;
            };
            for g in m.decoded.groups.iter().filter(|g| &*g.name == name) {
                ips.extend(g.cidrs.iter().map(|c| c.network()));
            }
        }
    }
    ips.extend([IMDS_V4, SOME_WORLD_IP]);
    if let Some(ip) = ips.into_iter().find(|ip| m.item_reaches(item, *ip)) {
        return Some(Peer::Ip(ip));
    }
    m.all_subjects().into_iter().find_map(|key| {
        let (ns, name) = key.split_once('/')?;
        let id = m.repo.endpoint_identity(ns, name)?;
        let labels = m.repo.identities().labels(id)?;
        selectors
            .iter()
            .any(|s| s.matches(labels))
            .then(|| Peer::Endpoint(key.clone()))
    })
}

/// IG1101, IG1102, IG1103 on one HTTP rule.
fn regexes(m: &Model, s: &Site, rule: &HttpRule, at: Option<&Field>, out: &mut Vec<Finding>) {
    let field = |name: &str| at.and_then(|f| key_loc(f, name));
    if let Some(method) = &rule.method
        && !METHODS.iter().any(|x| method.is_match(x))
    {
        let message = format!(
            "method {:?} matches no HTTP method: Envoy compares it, case-sensitively, with the whole method, \
             so no request passes this rule.",
            method.as_str()
        );
        out.push(m.finding(
            &HTTP_METHOD_NEVER_MATCHES,
            s.policy,
            field("method"),
            message,
            None,
        ));
    }
    let Some(path_re) = &rule.path else {
        return;
    };
    let path_at = field("path");
    if s.dir == Direction::Egress
        && m.item_reaches(s.item, IMDS_V4)
        && let Some(trap) = full_match_trap(path_re)
    {
        let pattern = path_re.as_str();
        let missed: Vec<String> = trap
            .missed
            .iter()
            .take(2)
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        let only = if trap.literal {
            format!("only the request target {pattern:?} itself")
        } else {
            "fewer requests than it seems to".to_owned()
        };
        let query = if trap.query_breaks_it {
            " Without their query strings they would match: the query is what breaks it."
        } else {
            ""
        };
        let message = format!(
            "path {pattern:?} is matched against the whole request target, query string included \
             (an RE2 full match, not a prefix), so it matches {only}. Real metadata requests such as {} \
             do not match.{query}",
            missed.join(" and ")
        );
        let fix = trap.suggestion.map(|sug| {
            format!(
                "Write {sug:?}, which matches every {} request under {:?}, or list each endpoint with its query.",
                trap.cloud, trap.prefix
            )
        });
        out.push(m.finding(
            &HTTP_PATH_FULL_MATCH,
            s.policy,
            path_at.clone(),
            message,
            fix,
        ));
        return;
    }
    if let Some(kind) = prefix_intent(path_re.as_str()) {
        let pattern = path_re.as_str();
        let suggestion = format!("{}.*", pattern.trim_start_matches('^'));
        let message = format!(
            "path {pattern:?} looks like {kind}, but Envoy matches it against the whole request target: \
             it matches only that exact string, not the paths under it or with a query."
        );
        let fix = format!(
            "Write {suggestion:?} for everything under it; `^` and `$` are redundant (the match is always anchored)."
        );
        out.push(m.finding(
            &HTTP_PATH_PREFIX_INTENT,
            s.policy,
            path_at,
            message,
            Some(fix),
        ));
    }
}

struct Trap {
    missed: Vec<&'static TypicalRequest>,
    literal: bool,
    query_breaks_it: bool,
    prefix: String,
    cloud: &'static str,
    suggestion: Option<String>,
}

/// Whether a path regex misses the typical metadata requests that start with its literal prefix.
fn full_match_trap(re: &FullMatch) -> Option<Trap> {
    let (prefix, literal) = literal_prefix(re.as_str());
    if prefix.len() < 2 {
        return None;
    }
    let related: Vec<&TypicalRequest> = TYPICAL_REQUESTS
        .iter()
        .filter(|r| r.path.starts_with(&prefix))
        .collect();
    let missed: Vec<&TypicalRequest> = related
        .iter()
        .copied()
        .filter(|r| !re.is_match(r.path))
        .collect();
    let query_breaks_it = missed.iter().any(|r| re.is_match(r.route()));
    if missed.is_empty() || (missed.len() < related.len() && !query_breaks_it) {
        return None;
    }
    let suggestion = literal
        .then(|| {
            let escaped = escape(&prefix);
            [
                format!("{}/.*", escape(prefix.trim_end_matches('/'))),
                format!("{escaped}\\?.*"),
                format!("{escaped}(/.*)?(\\?.*)?"),
            ]
            .into_iter()
            .find(|c| FullMatch::new(c).is_ok_and(|f| related.iter().all(|r| f.is_match(r.path))))
        })
        .flatten();
    Some(Trap {
        cloud: missed.first().map_or("", |r| r.cloud.name()),
        missed,
        literal,
        query_breaks_it,
        prefix,
        suggestion,
    })
}

/// What a path pattern seems meant as, when it is not what a full match does.
fn prefix_intent(pattern: &str) -> Option<&'static str> {
    let (_, literal) = literal_prefix(pattern);
    let open_end = pattern.ends_with(".*") || pattern.ends_with(".+");
    let exact_end = pattern.ends_with('$') && !pattern.ends_with("\\$");
    if pattern.starts_with('^') && !open_end && !exact_end {
        return Some("a search for paths that start with it");
    }
    if literal && pattern.len() > 1 && pattern.ends_with('/') {
        return Some("a prefix");
    }
    None
}

/// The literal text a pattern starts with (after a leading `^`), and whether that is all of it.
fn literal_prefix(pattern: &str) -> (String, bool) {
    let mut out = String::new();
    let mut chars = pattern.strip_prefix('^').unwrap_or(pattern).chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) if n.is_ascii_punctuation() => out.push(n),
                _ => return (out, false),
            },
            '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                return (out, false);
            }
            c => out.push(c),
        }
    }
    (out, true)
}

fn escape(literal: &str) -> String {
    let mut out = String::new();
    for c in literal.chars() {
        if ".+*?()|[]{}^$\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn allow(enable_default_deny: &str, http: &str) -> String {
        format!(
            "\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: imds-allow}}
spec:
  endpointSelector:
    matchLabels: {{k8s:io.kubernetes.pod.namespace: logging}}
{enable_default_deny}  egress:
    - toCIDRSet: [{{cidrGroupRef: azure-imds}}]
      toPorts:
        - ports: [{{port: \"80\", protocol: TCP}}]
          rules:
            http:
{http}"
        )
    }

    const DEFAULT_ALLOW: &str = "  enableDefaultDeny: {egress: false}\n";
    const DEFAULT_DENY: &str = "  enableDefaultDeny: {egress: true}\n";
    const GOOD_PATH: &str = "              - {method: GET, path: \"/metadata/.*\"}\n";

    #[test]
    fn ig1001_http_rules_in_default_allow_are_visibility_only() {
        let r = lint_text(&allow(DEFAULT_ALLOW, GOOD_PATH));
        let f = with_code(&r, "IG1001");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(f[0].field, "spec.egress[0].toPorts[0].rules");
        assert_eq!(f[0].line, 12);
        assert!(
            f[0].message
                .contains("sets enableDefaultDeny.egress: false at line 7"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn ig1001_not_reported_under_default_deny() {
        let r = lint_text(&allow(DEFAULT_DENY, GOOD_PATH));
        assert!(with_code(&r, "IG1001").is_empty(), "{:?}", r.findings);
        // Another policy can switch the same pods to default deny: then the rule is enforced.
        let other = "\
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: dns, namespace: logging}
spec:
  endpointSelector: {}
  egress: [{toEntities: [cluster], toPorts: [{ports: [{port: \"53\", protocol: UDP}]}]}]
";
        let r = lint_text(&(allow(DEFAULT_ALLOW, GOOD_PATH) + other));
        assert!(with_code(&r, "IG1001").is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn ig1002_an_l3_allow_lifts_the_http_rules() {
        let lifting = "\
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: all-imds}
spec:
  endpointSelector: {}
  egress: [{toCIDRSet: [{cidrGroupRef: azure-imds}]}]
";
        let r = lint_text(&(allow(DEFAULT_DENY, GOOD_PATH) + lifting));
        let f = with_code(&r, "IG1002");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert!(f[0].message.contains("all-imds"), "{}", f[0].message);
        let r = lint_text(&allow(DEFAULT_DENY, GOOD_PATH));
        assert!(with_code(&r, "IG1002").is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn ig1101_the_seed_path_misses_every_imds_request() {
        let r = lint_text(&allow(
            DEFAULT_ALLOW,
            "              - {method: GET, path: \"/metadata\"}\n",
        ));
        let f = with_code(&r, "IG1101");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(f[0].field, "spec.egress[0].toPorts[0].rules.http[0].path");
        assert_eq!((f[0].line, f[0].column), (14, 37));
        assert!(f[0].fix.contains("\"/metadata/.*\""), "{}", f[0].fix);
        let r = lint_text(&allow(
            DEFAULT_ALLOW,
            "              - {method: GET, path: \"/metadata/identity/oauth2/token\"}\n",
        ));
        let f = with_code(&r, "IG1101");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert!(f[0].message.contains("query is what breaks it"));
        assert!(
            f[0].fix
                .contains("\"/metadata/identity/oauth2/token\\\\?.*\""),
            "{}",
            f[0].fix
        );
    }

    #[test]
    fn ig1101_not_reported_for_working_patterns_or_other_destinations() {
        for good in [
            "/metadata/.*",
            "/metadata/identity/oauth2/token\\\\?.*",
            "/metadata/instance.*",
        ] {
            let http = format!("              - {{method: GET, path: \"{good}\"}}\n");
            let r = lint_text(&allow(DEFAULT_DENY, &http));
            assert!(
                with_code(&r, "IG1101").is_empty(),
                "{good}: {:?}",
                r.findings
            );
        }
        // The same literal path towards another service is not about metadata requests.
        let other = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: api, namespace: web}
spec:
  endpointSelector: {}
  egress:
    - toCIDR: [10.0.0.5/32]
      toPorts: [{ports: [{port: \"80\", protocol: TCP}], rules: {http: [{path: /metadata}]}}]
";
        assert!(with_code(&lint_text(other), "IG1101").is_empty());
    }

    #[test]
    fn ig1102_a_lowercase_or_comma_method_never_matches() {
        for bad in ["get", "GET,POST"] {
            let http = format!("              - {{method: \"{bad}\", path: \"/metadata/.*\"}}\n");
            let r = lint_text(&allow(DEFAULT_DENY, &http));
            let f = with_code(&r, "IG1102");
            assert_eq!(f.len(), 1, "{bad}: {:?}", r.findings);
            assert_eq!(f[0].field, "spec.egress[0].toPorts[0].rules.http[0].method");
        }
        let r = lint_text(&allow(
            DEFAULT_DENY,
            "              - {method: \"GET|HEAD\", path: \"/metadata/.*\"}\n",
        ));
        assert!(with_code(&r, "IG1102").is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn ig1103_caret_and_trailing_slash_look_like_prefixes() {
        let policy = |p: &str| {
            format!(
                "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: api, namespace: web}}
spec:
  endpointSelector: {{}}
  egress:
    - toCIDR: [10.0.0.5/32]
      toPorts: [{{ports: [{{port: \"80\", protocol: TCP}}], rules: {{http: [{{path: \"{p}\"}}]}}}}]
"
            )
        };
        for bad in ["^/api", "/api/v1/"] {
            let r = lint_text(&policy(bad));
            let f = with_code(&r, "IG1103");
            assert_eq!(f.len(), 1, "{bad}: {:?}", r.findings);
            assert!(f[0].fix.contains(".*"), "{}", f[0].fix);
        }
        for good in ["/api/v1/.*", "^/api$", "/healthz", "/"] {
            let r = lint_text(&policy(good));
            assert!(
                with_code(&r, "IG1103").is_empty(),
                "{good}: {:?}",
                r.findings
            );
        }
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix("/metadata"), ("/metadata".into(), true));
        assert_eq!(literal_prefix("^/a\\.b.*"), ("/a.b".into(), false));
        assert_eq!(literal_prefix("/x\\?y"), ("/x?y".into(), true));
        assert_eq!(literal_prefix("/x\\d"), ("/x".into(), false));
    }
}
