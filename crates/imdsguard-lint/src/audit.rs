//! IG1801: a policy in audit mode (`policy.imdsguard.io/audit-mode: "true"`) whose audit tells
//! nothing. Audit mode is how a deny is rolled out: its would-be drops pass and show as AUDIT
//! flows, and those flows say what enforcing it would break. Two cases make that silent:
//!
//! - the policy selects no pod (with a cluster: none of its pods; without one: its selector
//!   cannot match any pod), so it never produces an AUDIT flow, and enforcing it later changes
//!   nothing either, which is rarely what its author meant;
//! - a deny of the policy covers only flows that an enforcing policy already denies: those flows
//!   are dropped (DROPPED, not AUDIT), whatever the audit says, so the audit is moot.
//!
//! Limits: the second case probes `egressDeny` only, with one flow per destination (the first
//! address of each CIDR and the metadata addresses, on the deny's first TCP port). An audited
//! `ingressDeny` is never reported moot: the linter's probes are egress flows to what a policy
//! names, and a missed report only costs a moot audit, never a wrong verdict.

use crate::Finding;
use crate::checks::AUDIT_MOOT;
use crate::metadata::{IMDS_V4, WIRESERVER};
use crate::model::{Model, RuleAt, key_loc, path_loc};
use imdsguard_policy::api::{PolicyItem, PortSpec, Subject};
use imdsguard_policy::{FlowQuery, Peer, Policy, PolicyRef, Protocol, Verdict};
use std::net::IpAddr;

pub fn check(m: &Model) -> Vec<Finding> {
    let mut out = Vec::new();
    let audited: Vec<(usize, &Policy)> = m
        .policies()
        .iter()
        .enumerate()
        .filter(|(_, p)| p.audit)
        .collect();
    if audited.is_empty() {
        return out;
    }
    // What the enforcing policies decide on their own: audit policies are left out.
    let enforcing = m.repo_with(|p| !p.audit);
    for (pi, p) in audited {
        let rules: Vec<RuleAt> = (0..p.rules.len())
            .filter(|ri| matches!(p.rules[*ri].subject, Subject::Endpoints(_)))
            .map(|rule| RuleAt { policy: pi, rule })
            .collect();
        // With the cluster's pods known, only they count: a witness pod always matches.
        let real = m.cluster.is_some_and(|c| !c.endpoints.is_empty());
        let subjects: Vec<Vec<String>> = rules
            .iter()
            .map(|at| {
                if real {
                    m.cluster_subjects(*at)
                } else {
                    m.subjects(*at)
                }
            })
            .collect();
        if subjects.iter().all(Vec::is_empty) {
            let whom = if real {
                "no pod of the cluster"
            } else {
                "no pod (its endpointSelector cannot match one)"
            };
            let at = m
                .rule_field(RuleAt {
                    policy: pi,
                    rule: 0,
                })
                .and_then(|r| key_loc(&r, "endpointSelector"));
            let message = format!(
                "This policy is in audit mode but selects {whom}: it reports no AUDIT flow, so its audit \
                 tells nothing about what enforcing it would change."
            );
            let fix = "Point the endpointSelector at the pods you mean to roll the policy out to.";
            out.push(m.finding(&AUDIT_MOOT, p, at, message, Some(fix.to_owned())));
            continue;
        }
        for (at, pods) in rules.iter().zip(&subjects) {
            let Some(items) = &p.rules[at.rule].egress_deny else {
                continue;
            };
            for (ii, item) in items.iter().enumerate() {
                let probes = probes(m, item);
                if probes.is_empty() {
                    continue;
                }
                let mut by: Vec<PolicyRef> = Vec::new();
                let covered = pods.iter().all(|pod| {
                    probes.iter().all(|(ip, port)| {
                        let q = FlowQuery {
                            from: Peer::Endpoint(pod.clone()),
                            to: Peer::Ip(*ip),
                            protocol: Protocol::Tcp,
                            port: *port,
                            http: None,
                        };
                        let Ok(v) = enforcing.evaluate(&q) else {
                            return false;
                        };
                        let Some(e) = v.egress.filter(|e| e.verdict == Verdict::Denied) else {
                            return false;
                        };
                        if e.denied_by.is_empty() {
                            // Default deny drops it too, but that is not a deny of its own:
                            // a new allow could open it, and the audit would then matter.
                            return false;
                        }
                        for r in e.denied_by {
                            if !by.contains(&r) {
                                by.push(r);
                            }
                        }
                        true
                    })
                });
                if !covered {
                    continue;
                }
                let names: Vec<String> = by.iter().map(ToString::to_string).collect();
                let message = format!(
                    "This deny is in audit mode, but {} already denies the same flows for the same pods: \
                     they are dropped (DROPPED, not AUDIT), so the audit is moot.",
                    names.join(" and ")
                );
                let loc = m
                    .rule_field(*at)
                    .and_then(|r| path_loc(&r, &["egressDeny", &ii.to_string()]));
                let fix = format!(
                    "Drop this deny (or the annotation): {} decides these flows. To roll out the \
                     enforcing deny itself, put it (or the namespaces) in audit mode instead.",
                    names.join(" and ")
                );
                out.push(m.finding(&AUDIT_MOOT, p, loc, message, Some(fix)));
            }
        }
    }
    out
}

/// The flows a deny item stands for: the first address of each CIDR it names or its groups
/// hold, and the metadata addresses, those the item reaches; on its first numbered TCP port
/// (80 when it names none).
fn probes(m: &Model, item: &PolicyItem) -> Vec<(IpAddr, u16)> {
    let port = item
        .ports
        .iter()
        .flatten()
        .flat_map(|r| &r.ports)
        .find_map(|p| match (&p.port, p.protocol) {
            (PortSpec::Number(n), Protocol::Tcp | Protocol::Any) if *n != 0 => Some(*n),
            _ => None,
        })
        .unwrap_or(80);
    let mut ips: Vec<IpAddr> = item
        .prefixes
        .iter()
        .chain(m.decoded.groups.iter().flat_map(|g| &g.cidrs))
        .map(|n| n.network())
        .chain([IMDS_V4, WIRESERVER])
        .collect();
    ips.sort();
    ips.dedup();
    ips.into_iter()
        .filter(|ip| m.item_reaches(item, *ip))
        .map(|ip| (ip, port))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    const ENFORCING_DENY: &str = "\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: deny-imds}
spec:
  endpointSelector: {}
  enableDefaultDeny: {egress: false}
  egressDeny: [{toCIDRSet: [{cidrGroupRef: azure-imds}]}]
";

    const AUDITED_DENY: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: deny-imds-web
  namespace: web
  annotations: {policy.imdsguard.io/audit-mode: \"true\"}
spec:
  endpointSelector: {matchLabels: {app: web}}
  enableDefaultDeny: {egress: false}
  egressDeny: [{toCIDR: [169.254.169.254/32]}]
";

    #[test]
    fn an_audited_deny_that_an_enforcing_deny_covers_is_moot() {
        let r = lint_text(&format!("{ENFORCING_DENY}---\n{AUDITED_DENY}"));
        let f = with_code(&r, "IG1801");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(f[0].object, "CiliumNetworkPolicy web/deny-imds-web");
        assert_eq!(f[0].field, "spec.egressDeny[0]");
        assert!(
            f[0].message
                .contains("CiliumClusterwideNetworkPolicy deny-imds already denies"),
            "{}",
            f[0].message
        );
        // Alone, the audited deny is the rollout it should be.
        let r = lint_text(AUDITED_DENY);
        assert!(with_code(&r, "IG1801").is_empty(), "{:?}", r.findings);
        // Without the annotation nothing is audited, so nothing is moot.
        let plain = AUDITED_DENY.replace(
            "  annotations: {policy.imdsguard.io/audit-mode: \"true\"}\n",
            "",
        );
        let r = lint_text(&format!("{ENFORCING_DENY}---\n{plain}"));
        assert!(with_code(&r, "IG1801").is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn an_audited_policy_that_selects_no_pod_of_the_cluster_is_moot() {
        let pods: &[Pod] = &[("api", "api-1", &[("app", "api")])];
        let c = cluster(&["web", "api"], pods);
        let r = crate::lint(
            &[
                imdsguard_manifest::Source::new("group.yaml", GROUP),
                imdsguard_manifest::Source::new("policy.yaml", AUDITED_DENY),
            ],
            Some(&c),
        );
        let f = with_code(&r, "IG1801");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert!(
            f[0].message.contains("selects no pod of the cluster"),
            "{}",
            f[0].message
        );
        assert_eq!(f[0].field, "spec.endpointSelector");
        // With a web pod it selects one: no finding.
        let pods: &[Pod] = &[("web", "web-1", &[("app", "web")])];
        let c = cluster(&["web"], pods);
        let r = crate::lint(
            &[imdsguard_manifest::Source::new("policy.yaml", AUDITED_DENY)],
            Some(&c),
        );
        assert!(with_code(&r, "IG1801").is_empty(), "{:?}", r.findings);
    }
}
