//! What the agent has in audit mode now, laid over the IMDS view and the service map. The views'
//! own `audit` comes from AUDIT flows, so a pod or policy put in audit mode showed nothing until
//! one of its calls was audited; the agent's resolved state shows it at once (a namespace
//! labelled `policy.imdsguard.io/audit-mode=true`, a pod's `policyAuditMode`,
//! `--policy-audit-mode`, or a policy annotated `policy.imdsguard.io/audit-mode: "true"`).
//!
//! Limits: pods are matched by `namespace/name` as the flows name them, and policies by kind,
//! namespace and name; a pod or policy the flows do not name gets no badge here (the page's
//! status line counts them all).

use crate::imds::ImdsView;
use crate::servicemap::MapView;
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;

/// A policy as the flows name it (Hubble's `*_allowed_by` / `*_denied_by`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PolicyName {
    pub kind: String,
    /// Empty for clusterwide policies.
    pub namespace: String,
    pub name: String,
}

/// The agent's audit modes as of now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditModes {
    /// `--policy-audit-mode`: every pod of the node.
    pub all: bool,
    /// Pods in audit mode, `namespace/name`.
    pub pods: BTreeSet<String>,
    /// Policies in audit mode.
    pub policies: BTreeSet<PolicyName>,
}

/// Where the UI reads the audit modes when it answers: the agent's latest status.
pub type AuditSource = Arc<dyn Fn() -> AuditModes + Send + Sync>;

impl AuditModes {
    /// Whether a workload with these pods (names in `namespace`) has one in audit mode. Nodes and
    /// callers without pods (the host, world, CIDRs) never are.
    fn any_pod(&self, namespace: &str, pods: &[String]) -> bool {
        !pods.is_empty()
            && (self.all
                || pods
                    .iter()
                    .any(|pod| self.pods.contains(&format!("{namespace}/{pod}"))))
    }

    /// Marks the map's workload nodes with a pod in audit mode.
    pub fn mark_map(&self, view: &mut MapView) {
        for n in &mut view.nodes {
            n.audit_mode = self.any_pod(&n.namespace, &n.pods);
        }
    }

    /// Marks the callers with a pod in audit mode, and the policies in audit mode, in `view`.
    pub fn mark(&self, view: &mut ImdsView) {
        for c in &mut view.callers {
            if self.any_pod(&c.namespace, &c.pods) {
                c.audit = true;
                c.audit_mode = true;
            }
            for p in &mut c.policies {
                p.audit_mode = self
                    .policies
                    .iter()
                    .any(|a| a.kind == p.kind && a.namespace == p.namespace && a.name == p.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imds::ImdsReport;
    use crate::peer::Sides;
    use std::time::Instant;

    #[test]
    fn pods_and_policies_in_audit_mode_are_marked_without_audit_flows() {
        let mut report = ImdsReport::default();
        let now = Instant::now();
        for f in crate::testdata::seed_flows() {
            report.observe(&f, &Sides::of(&f), now);
        }
        let mut view = report.view(None);
        assert!(view.callers.iter().all(|c| !c.audit_mode));
        let webapp = |v: &ImdsView| {
            v.callers
                .iter()
                .find(|c| c.namespace == "go-webapp")
                .map(|c| (c.audit, c.audit_mode, c.pods.clone()))
                .expect("the seed's go-webapp calls IMDS")
        };
        let (_, _, pods) = webapp(&view);
        let modes = AuditModes {
            all: false,
            pods: [format!("go-webapp/{}", pods[0])].into(),
            policies: [PolicyName {
                kind: "CiliumClusterwideNetworkPolicy".into(),
                namespace: String::new(),
                name: "azure-imds-deny".into(),
            }]
            .into(),
        };
        modes.mark(&mut view);
        assert!(webapp(&view).0);
        assert!(webapp(&view).1);
        let marked: Vec<(&str, bool)> = view
            .callers
            .iter()
            .flat_map(|c| c.policies.iter())
            .map(|p| (p.name.as_str(), p.audit_mode))
            .collect();
        assert!(marked.contains(&("azure-imds-deny", true)), "{marked:?}");
        assert!(marked.contains(&("azure-imds-allow", false)), "{marked:?}");
        // Other namespaces' callers are not in audit mode.
        assert!(
            view.callers
                .iter()
                .filter(|c| c.namespace != "go-webapp")
                .all(|c| !c.audit_mode)
        );
        // The map marks the same workload.
        let mut map = crate::servicemap::ServiceMap::default();
        for f in crate::testdata::seed_flows() {
            map.observe(&f, &Sides::of(&f), now);
        }
        let mut map = map.view(None);
        modes.mark_map(&mut map);
        let marked: Vec<&str> = map
            .nodes
            .iter()
            .filter(|n| n.audit_mode)
            .map(|n| n.id.as_str())
            .collect();
        assert_eq!(marked, ["go-webapp/go-webapp"]);
        // --policy-audit-mode: every pod.
        let mut all = report.view(None);
        AuditModes {
            all: true,
            ..Default::default()
        }
        .mark(&mut all);
        assert!(
            all.callers
                .iter()
                .filter(|c| !c.pods.is_empty())
                .all(|c| c.audit_mode)
        );
    }
}
