//! IG1301: a `NotIn` or `DoesNotExist` peer selector matches every identity that lacks the label,
//! and reserved and CIDR identities lack pod labels; when the namespace key is in the selector,
//! Cilium adds no namespace requirement that would keep it to pods (docs/policy-semantics.md §2.3,
//! §2.4).

use crate::Finding;
use crate::checks::NEGATIVE_SELECTOR_RESERVED;
use crate::model::{Model, RuleAt, path_loc};
use imdsguard_policy::Identity;
use imdsguard_policy::api::{Peers, Section};
use imdsguard_policy::labels::{Label, LabelSet};
use imdsguard_policy::selector::Operator;

pub fn check(m: &Model) -> Vec<Finding> {
    // What a selector can hit besides pods: the reserved identities and a CIDR identity.
    let mut others: Vec<(String, LabelSet)> = [
        Identity::WORLD,
        Identity::HOST,
        Identity::REMOTE_NODE,
        Identity::KUBE_APISERVER,
        Identity::HEALTH,
        Identity::INGRESS,
    ]
    .iter()
    .filter_map(|id| Some((id.reserved_name()?.to_owned(), id.reserved_labels()?)))
    .collect();
    let imds = imdsguard_metadata::IMDS_V4;
    others.push((
        format!("CIDR identities (such as {imds}/32)"),
        LabelSet::new(vec![
            Label::parse(&format!("cidr:{imds}/32")),
            Label::reserved("world"),
        ]),
    ));
    let mut out = Vec::new();
    for (pi, p) in m.policies().iter().enumerate() {
        for (ri, rule) in p.rules.iter().enumerate() {
            let Some(rf) = m.rule_field(RuleAt {
                policy: pi,
                rule: ri,
            }) else {
                continue;
            };
            for (section, items) in rule.sections() {
                let name = match section {
                    Section::Ingress => "ingress",
                    Section::IngressDeny => "ingressDeny",
                    Section::Egress => "egress",
                    Section::EgressDeny => "egressDeny",
                };
                for item in items {
                    if !item.peer_field.ends_with("Endpoints") {
                        continue;
                    }
                    let Peers::Selectors(selectors) = &item.peers else {
                        continue;
                    };
                    for (k, sel) in selectors.iter().enumerate() {
                        let negative: Vec<String> = sel
                            .requirements()
                            .iter()
                            .filter(|r| matches!(r.op, Operator::NotIn | Operator::DoesNotExist))
                            .map(|r| format!("{} {}", r.key, r.op.as_str()))
                            .collect();
                        if negative.is_empty() {
                            continue;
                        }
                        let hit: Vec<&str> = others
                            .iter()
                            .filter(|(_, labels)| sel.matches(labels))
                            .map(|(n, _)| n.as_str())
                            .collect();
                        if hit.is_empty() {
                            continue;
                        }
                        let effect = if section.is_deny() {
                            "denies"
                        } else {
                            "allows"
                        };
                        let message = format!(
                            "{} ({}) also matches identities that have no such label, so this rule {effect} traffic \
                             {} {} as well as pods.",
                            item.peer_field,
                            negative.join(", "),
                            if section.direction() == imdsguard_policy::Direction::Egress {
                                "to"
                            } else {
                                "from"
                            },
                            hit.join(", ")
                        );
                        out.push(m.finding(
                            &NEGATIVE_SELECTOR_RESERVED,
                            p,
                            path_loc(
                                &rf,
                                &[
                                    name,
                                    &item.index.to_string(),
                                    item.peer_field,
                                    &k.to_string(),
                                ],
                            ),
                            message,
                            None,
                        ));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    fn policy(selector: &str) -> String {
        format!(
            "\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: from-others}}
spec:
  endpointSelector: {{matchLabels: {{app: api}}}}
  enableDefaultDeny: {{ingress: true}}
  ingress:
    - fromEndpoints:
        - {selector}
"
        )
    }

    #[test]
    fn ig1301_not_in_on_the_namespace_selects_world_and_host() {
        let r = lint_text(&policy(
            "{matchExpressions: [{key: k8s:io.kubernetes.pod.namespace, operator: NotIn, values: [kube-system]}]}",
        ));
        let f = with_code(&r, "IG1301");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(f[0].field, "spec.ingress[0].fromEndpoints[0]");
        assert_eq!(f[0].line, 9);
        assert!(f[0].message.contains("world, host"), "{}", f[0].message);
    }

    #[test]
    fn ig1301_not_reported_when_the_selector_keeps_to_pods() {
        // A NotIn on a pod label: Cilium adds `namespace Exists`, which reserved identities lack.
        let r = lint_text(&policy(
            "{matchExpressions: [{key: app, operator: NotIn, values: [db]}]}",
        ));
        assert!(with_code(&r, "IG1301").is_empty(), "{:?}", r.findings);
        let r = lint_text(&policy(
            "{matchExpressions: [{key: k8s:io.kubernetes.pod.namespace, operator: NotIn, values: [kube-system]}, \
             {key: k8s:io.kubernetes.pod.namespace, operator: Exists}]}",
        ));
        assert!(with_code(&r, "IG1301").is_empty(), "{:?}", r.findings);
    }
}
