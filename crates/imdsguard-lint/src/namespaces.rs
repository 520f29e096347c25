//! IG1701: namespaces a policy names that the cluster does not have. A typo in a namespace selector
//! selects nothing, and nothing tells you: the allow allows nothing, the exception excepts nothing.

use crate::Finding;
use crate::checks::UNKNOWN_NAMESPACE;
use crate::model::{Loc, Model, child, walk};
use imdsguard_manifest::Field;
use imdsguard_policy::PolicyKind;
use imdsguard_policy::identity::{NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX};
use imdsguard_policy::labels::LabelKey;

pub fn check(m: &Model) -> Vec<Finding> {
    let Some(cluster) = m.cluster else {
        return Vec::new();
    };
    let known = cluster.namespace_names();
    if known.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for p in m.policies() {
        let Some(root) = m.object(p) else {
            continue;
        };
        let mut named: Vec<(String, Loc)> = Vec::new();
        if p.id.kind == PolicyKind::CiliumNetworkPolicy
            && let Some(ns) = child(&root, "metadata").and_then(|md| child(&md, "namespace"))
            && let Some(name) = ns.node.as_str()
        {
            named.push((name.to_owned(), Loc::value(&ns)));
        }
        walk(&root, &mut |key, f| match key {
            "matchLabels" => {
                if let Ok(map) = f.free_map() {
                    for (k, v) in map.entries() {
                        if names_namespace(k)
                            && let Some(name) = v.node.as_str()
                        {
                            named.push((name.to_owned(), Loc::value(&v)));
                        }
                    }
                }
            }
            "matchExpressions" => {
                for e in f.seq().unwrap_or_default() {
                    let key = child(&e, "key").and_then(|k| k.node.as_str().map(str::to_owned));
                    let op = child(&e, "operator").and_then(|o| o.node.as_str().map(str::to_owned));
                    if key.is_some_and(|k| names_namespace(&k))
                        && matches!(op.as_deref(), Some("In" | "NotIn"))
                    {
                        named.extend(values(&e));
                    }
                }
            }
            "k8sService" | "k8sServiceSelector" => {
                if let Some(ns) = child(f, "namespace")
                    && let Some(name) = ns.node.as_str()
                    && !name.is_empty()
                {
                    named.push((name.to_owned(), Loc::value(&ns)));
                }
            }
            _ => {}
        });
        for (name, at) in named {
            if known.contains(&name.as_str()) {
                continue;
            }
            let hint = match closest(&name, &known) {
                Some(c) => format!(" Did you mean {c:?}?"),
                None => String::new(),
            };
            let message = format!(
                "Namespace {name:?} does not exist in the cluster (it has {}), so this selects no pod there.{hint}",
                some(&known)
            );
            out.push(m.finding(&UNKNOWN_NAMESPACE, p, Some(at), message, None));
        }
    }
    out
}

fn values(expression: &Field) -> Vec<(String, Loc)> {
    child(expression, "values")
        .and_then(|v| v.seq().ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| Some((v.node.as_str()?.to_owned(), Loc::value(v))))
        .collect()
}

/// Whether a selector key is the pod's namespace or the namespace's name label.
fn names_namespace(raw: &str) -> bool {
    let key = LabelKey::from_selector_key(raw);
    *key.key == *NAMESPACE_LABEL
        || *key.key == format!("{NAMESPACE_LABELS_PREFIX}kubernetes.io/metadata.name")
}

fn some(names: &[&str]) -> String {
    let shown: Vec<&str> = names.iter().take(6).copied().collect();
    if names.len() > shown.len() {
        format!(
            "{} and {} more",
            shown.join(", "),
            names.len() - shown.len()
        )
    } else {
        shown.join(", ")
    }
}

/// The known name nearest to `name`, if it is near enough to be a typo.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use imdsguard_manifest::Source;

    const POLICY: &str = "\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: imds-allow}
spec:
  endpointSelector:
    matchExpressions:
      - key: k8s:io.kubernetes.pod.namespace
        operator: In
        values: [kube-system, loging]
  egress: [{toEntities: [world]}]
";

    fn run(text: &str, namespaces: &[&str]) -> crate::Report {
        let c = cluster(namespaces, &[]);
        crate::lint(&[Source::new("policy.yaml", text)], Some(&c))
    }

    #[test]
    fn ig1701_a_misspelt_namespace_is_reported_with_the_near_name() {
        let r = run(POLICY, &["kube-system", "logging"]);
        let f = with_code(&r, "IG1701");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(
            (f[0].line, f[0].field.as_str()),
            (9, "spec.endpointSelector.matchExpressions[0].values[1]")
        );
        assert!(
            f[0].message.contains("Did you mean \"logging\"?"),
            "{}",
            f[0].message
        );
        // The namespace of a CNP counts too.
        let cnp = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: x, namespace: go-webap}
spec: {endpointSelector: {}, egress: [{toEntities: [world]}]}
";
        let r = run(cnp, &["go-webapp"]);
        assert_eq!(with_code(&r, "IG1701").len(), 1, "{:?}", r.findings);
    }

    #[test]
    fn ig1701_not_reported_for_known_namespaces_or_without_a_cluster() {
        let r = run(POLICY, &["kube-system", "loging"]);
        assert!(with_code(&r, "IG1701").is_empty(), "{:?}", r.findings);
        let r = crate::lint(&[Source::new("policy.yaml", POLICY)], None);
        assert!(with_code(&r, "IG1701").is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn near_names() {
        assert_eq!(closest("loging", &["logging", "default"]), Some("logging"));
        assert_eq!(closest("monitoring", &["logging", "default"]), None);
    }
}
