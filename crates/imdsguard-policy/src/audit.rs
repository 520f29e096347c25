//! imdsguard's audit per policy (docs/policy-semantics.md §8.1): the FULL view of an endpoint,
//! resolved from every selecting rule (audit-mode policies included) beside the ENFORCED view of
//! [`EndpointPolicy`](crate::repository::EndpointPolicy), and per-endpoint audit mode (Cilium's
//! PolicyAuditMode) for [`Repository::evaluate`].

use crate::api::{Direction, PolicyRef};
use crate::identity::Identity;
use crate::mapstate::Origin;
use crate::repository::{CompiledRule, DirectionPolicy, NamedPort, Repository};

/// One direction of the full view.
#[derive(Debug, Clone, Default)]
pub struct AuditDirection {
    pub table: DirectionPolicy,
    /// The audit-mode policies whose rules turn on default deny in this direction: they are the
    /// ones a full-view miss (133) is reported against.
    pub default_deny_by: Vec<PolicyRef>,
}

/// The full view of an identity selected by audit-mode policies.
#[derive(Debug, Clone, Default)]
pub struct AuditView {
    pub ingress: AuditDirection,
    pub egress: AuditDirection,
    /// Set when the full view could not be computed; its directions then equal the enforced view,
    /// so nothing is audited (the enforced view still decides, failing closed on its own errors).
    pub error: Option<String>,
}

impl Repository {
    /// Puts one endpoint (`namespace/name`) in audit mode, or takes it out: its policy drops are
    /// reported as AUDIT and pass, as with
    /// [`EngineOptions::audit_mode`](crate::repository::EngineOptions::audit_mode) for every endpoint. The
    /// resolved tables do not change (the datapath carries it as an endpoint flag).
    pub fn set_endpoint_audit(&mut self, key: &str, audit: bool) {
        if audit {
            self.audit_endpoints.insert(key.to_owned());
        } else {
            self.audit_endpoints.remove(key);
        }
    }

    /// Replaces the set of endpoints in audit mode, as `TableSync::set_audit_endpoints` does for
    /// the datapath, so that `evaluate` (the agent's trace) agrees with it.
    pub fn set_audit_endpoints(&mut self, keys: impl IntoIterator<Item = String>) {
        self.audit_endpoints = keys.into_iter().collect();
    }

    /// Whether an endpoint's drops are audited: the agent-wide flag or its own.
    pub fn endpoint_audit(&self, key: &str) -> bool {
        self.options().audit_mode || self.audit_endpoints.contains(key)
    }

    /// The full view of an identity; `enforced` is its enforced view, used where the full view
    /// cannot be computed.
    pub(crate) fn resolve_audit_view(
        &self,
        id: Identity,
        all: &[&CompiledRule],
        init: bool,
        own_ports: &[NamedPort],
        enforced: [&DirectionPolicy; 2],
    ) -> AuditView {
        let mut view = AuditView::default();
        for (dir, enforced) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .zip(enforced)
        {
            let table = match self.resolve_direction(id, dir, all, init, own_ports) {
                Ok(t) => t,
                Err(e) => {
                    view.error = Some(e);
                    enforced.clone()
                }
            };
            let mut default_deny_by: Vec<PolicyRef> = Vec::new();
            for r in all
                .iter()
                .filter(|r| r.audit && r.rule.has_direction(dir) && r.rule.default_deny(dir))
            {
                if let Origin::Rule { policy, .. } = &*r.origin
                    && !default_deny_by.contains(policy)
                {
                    default_deny_by.push(policy.clone());
                }
            }
            default_deny_by.sort();
            let d = AuditDirection {
                table,
                default_deny_by,
            };
            match dir {
                Direction::Ingress => view.ingress = d,
                Direction::Egress => view.egress = d,
            }
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use crate::repository::{EndpointSpec, EngineOptions, Repository};
    use crate::{DecodeOptions, decode_source};
    use imdsguard_manifest::Source;

    fn repo(policies: &str) -> Repository {
        let d = decode_source(&Source::new("p.yaml", policies), &DecodeOptions::default());
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let mut repo = Repository::new(EngineOptions::default());
        repo.load(&d);
        for app in ["web", "db"] {
            repo.upsert_endpoint(EndpointSpec {
                name: app.into(),
                namespace: "default".into(),
                labels: vec![("app".into(), app.into())],
                ..Default::default()
            });
        }
        repo.resolve();
        repo
    }

    const ENFORCING: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n\
        metadata: {name: e, namespace: default}\n\
        spec: {endpointSelector: {matchLabels: {app: web}}, egressDeny: [{toCIDR: [192.0.2.0/24]}]}\n";

    #[test]
    fn only_identities_an_audit_policy_selects_get_a_full_view() {
        let r = repo(ENFORCING);
        assert!(
            r.endpoint_policy("default/web")
                .is_some_and(|p| p.audit_view.is_none())
        );
        let audited = format!(
            "{ENFORCING}---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n\
             metadata: {{name: a, namespace: default, annotations: {{policy.imdsguard.io/audit-mode: \"true\"}}}}\n\
             spec: {{endpointSelector: {{matchLabels: {{app: web}}}}, egress: [{{toCIDR: [10.0.0.0/8]}}]}}\n"
        );
        let r = repo(&audited);
        let web = r.endpoint_policy("default/web").expect("web");
        let full = web.audit_view.as_deref().expect("a full view for web");
        // The enforced view never sees the audit policy; the full view has both.
        assert!(full.egress.table.default_deny);
        assert_eq!(full.egress.default_deny_by.len(), 1);
        assert_eq!(&*full.egress.default_deny_by[0].name, "a");
        assert!(full.egress.table.map.len() > web.egress.map.len());
        assert!(
            r.endpoint_policy("default/db")
                .is_some_and(|p| p.audit_view.is_none())
        );
    }

    #[test]
    fn endpoint_audit_follows_the_set_and_the_agent_wide_flag() {
        let mut r = repo(ENFORCING);
        assert!(!r.endpoint_audit("default/web"));
        r.set_endpoint_audit("default/web", true);
        assert!(r.endpoint_audit("default/web") && !r.endpoint_audit("default/db"));
        r.set_audit_endpoints(["default/db".to_owned()]);
        assert!(!r.endpoint_audit("default/web") && r.endpoint_audit("default/db"));
        r.remove_endpoint("default", "db");
        assert!(!r.endpoint_audit("default/db"));
    }
}
