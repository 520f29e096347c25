//! IG1401: `cidrGroupRef` to a group that does not exist. Since Cilium 1.16 a missing group selects
//! nothing (docs/policy-semantics.md §1.4): an allow allows nothing and, worse, a deny denies
//! nothing.

use crate::Finding;
use crate::checks::CIDR_GROUP_MISSING;
use crate::model::{Loc, Model, walk};

pub fn check(m: &Model) -> Vec<Finding> {
    let known: Vec<&str> = m.decoded.groups.iter().map(|g| &*g.name).collect();
    let mut out = Vec::new();
    for p in m.policies() {
        let Some(root) = m.object(p) else {
            continue;
        };
        let mut refs = Vec::new();
        walk(&root, &mut |key, f| {
            if key == "cidrGroupRef"
                && let Some(name) = f.node.as_str()
                && !known.contains(&name)
            {
                refs.push((name.to_owned(), Loc::value(f)));
            }
        });
        for (name, at) in refs {
            let in_deny = at.path.contains("Deny[");
            let effect = if in_deny {
                "this deny denies nothing"
            } else {
                "this allow allows nothing"
            };
            let message = format!(
                "cidrGroupRef {name:?} names a CiliumCIDRGroup that is not among the linted files ({}). \
                 A group that does not exist selects nothing, so {effect}.",
                if known.is_empty() {
                    "they define no group".to_owned()
                } else {
                    format!("groups: {}", known.join(", "))
                }
            );
            let fix = format!(
                "Create the CiliumCIDRGroup {name:?} and lint its manifest together with the policy, or correct the name."
            );
            out.push(m.finding(&CIDR_GROUP_MISSING, p, Some(at), message, Some(fix)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    fn deny(group: &str) -> String {
        format!(
            "\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: imds-deny}}
spec:
  endpointSelector: {{}}
  enableDefaultDeny: {{egress: false}}
  egressDeny:
    - toCIDRSet:
        - cidrGroupRef: {group}
"
        )
    }

    #[test]
    fn ig1401_a_misspelt_group_selects_nothing() {
        let r = lint_text(&deny("azure-imbs"));
        let f = with_code(&r, "IG1401");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(
            (f[0].line, f[0].field.as_str()),
            (9, "spec.egressDeny[0].toCIDRSet[0].cidrGroupRef")
        );
        assert!(f[0].message.contains("denies nothing"), "{}", f[0].message);
    }

    #[test]
    fn ig1401_not_reported_for_a_group_that_exists() {
        let r = lint_text(&deny("azure-imds"));
        assert!(with_code(&r, "IG1401").is_empty(), "{:?}", r.findings);
    }
}
