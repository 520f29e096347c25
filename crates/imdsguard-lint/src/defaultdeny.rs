//! Default-deny traps (docs/policy-semantics.md §4.2): a rule with only deny sections switches its
//! pods to default deny unless it says otherwise (IG1201), and the way to say otherwise,
//! `enableDefaultDeny: false`, only exists since Cilium 1.16 (IG1202).

use crate::Finding;
use crate::checks::{DEFAULT_DENY_FIELD_VERSION, DENY_ONLY_DEFAULT_DENY};
use crate::model::{Model, RuleAt, child, describe_pods, key_loc, path_loc};

pub fn check(m: &Model) -> Vec<Finding> {
    let mut out = Vec::new();
    for (pi, p) in m.policies().iter().enumerate() {
        for ri in 0..p.rules.len() {
            let at = RuleAt {
                policy: pi,
                rule: ri,
            };
            let Some(rf) = m.rule_field(at) else {
                continue;
            };
            for (allow, deny) in [("ingress", "ingressDeny"), ("egress", "egressDeny")] {
                let non_empty = |name: &str| {
                    child(&rf, name).is_some_and(|f| f.seq().is_ok_and(|s| !s.is_empty()))
                };
                let (has_allow, has_deny) = (non_empty(allow), non_empty(deny));
                let setting = child(&rf, "enableDefaultDeny").and_then(|e| child(&e, allow));
                if has_deny && !has_allow && setting.is_none() {
                    let who = describe_pods(m, at, &m.subjects(at));
                    let message = format!(
                        "This rule has {deny} but no {allow} section and leaves enableDefaultDeny.{allow} unset, \
                         so Cilium sets it to true: besides what the deny lists, {who} lose all {allow} traffic \
                         that no allow rule names (dropped with 133 Policy denied)."
                    );
                    let fix = format!(
                        "Add `enableDefaultDeny: {{{allow}: false}}` to the rule (Cilium 1.16 and later); on older versions \
                         add `{allow}: [{{{}Entities: [all]}}]` next to the deny.",
                        if allow == "egress" { "to" } else { "from" }
                    );
                    out.push(m.finding(
                        &DENY_ONLY_DEFAULT_DENY,
                        p,
                        key_loc(&rf, deny),
                        message,
                        Some(fix),
                    ));
                }
                if (has_allow || has_deny)
                    && setting.is_some_and(|s| s.node.as_str() == Some("false"))
                {
                    let message = format!(
                        "enableDefaultDeny.{allow}: false keeps the selected pods in default-allow only on Cilium 1.16 \
                         and later. Older versions do not know the field (the API server drops it), so there this rule \
                         switches the pods to {allow} default deny and drops everything it does not allow."
                    );
                    out.push(m.finding(
                        &DEFAULT_DENY_FIELD_VERSION,
                        p,
                        path_loc(&rf, &["enableDefaultDeny", allow]),
                        message,
                        None,
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    fn deny_only(extra: &str) -> String {
        format!(
            "\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: imds-deny}}
spec:
  endpointSelector: {{}}
{extra}  egressDeny:
    - toCIDRSet: [{{cidrGroupRef: azure-imds}}]
"
        )
    }

    #[test]
    fn ig1201_deny_only_without_enable_default_deny() {
        let r = lint_text(&deny_only(""));
        let f = with_code(&r, "IG1201");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!((f[0].line, f[0].field.as_str()), (6, "spec.egressDeny"));
        // `ingress: false` says nothing about egress.
        let r = lint_text(&deny_only("  enableDefaultDeny: {ingress: false}\n"));
        assert_eq!(with_code(&r, "IG1201").len(), 1, "{:?}", r.findings);
    }

    #[test]
    fn ig1201_not_reported_when_default_deny_is_set_or_allows_exist() {
        let r = lint_text(&deny_only("  enableDefaultDeny: {egress: false}\n"));
        assert!(with_code(&r, "IG1201").is_empty(), "{:?}", r.findings);
        let r = lint_text(&deny_only("  egress: [{toEntities: [all]}]\n"));
        assert!(with_code(&r, "IG1201").is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn ig1202_enable_default_deny_false_needs_cilium_1_16() {
        let r = lint_text(&deny_only(
            "  enableDefaultDeny: {egress: false, ingress: false}\n",
        ));
        let f = with_code(&r, "IG1202");
        // The rule has no ingress section, so `ingress: false` changes nothing on any version.
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(f[0].field, "spec.enableDefaultDeny.egress");
        assert_eq!(f[0].severity, crate::Severity::Note);
        let r = lint_text(&deny_only("  enableDefaultDeny: {egress: true}\n"));
        assert!(with_code(&r, "IG1202").is_empty(), "{:?}", r.findings);
    }
}
