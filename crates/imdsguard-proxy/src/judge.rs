//! The proxy's HTTP decision for one request (docs/proxy.md): the client's ENFORCED view decides;
//! when an audit-mode policy selects the client, its FULL view is asked too, and a request that
//! the enforced view lets through but the full view's HTTP rules would refuse is forwarded and
//! reported as AUDIT. Pure.

use imdsguard_policy::Identity;
use imdsguard_policy::api::{Direction, Protocol};
use imdsguard_policy::l7::HttpRequest;
use imdsguard_policy::mapstate::Origin;
use imdsguard_policy::repository::{DirectionPolicy, EndpointPolicy};
use std::sync::Arc;

/// What the proxy does with one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpDecision {
    /// Forward it (else 403).
    pub allowed: bool,
    /// The rules that allowed it.
    pub allowed_by: Vec<Arc<Origin>>,
    /// Audit-mode rules that would refuse it; empty unless it is allowed and audited.
    pub audited_by: Vec<Arc<Origin>>,
}

/// Whether a view sends (peer, TCP port) to the proxy.
fn redirects(d: &DirectionPolicy, peer: Identity, port: u16) -> bool {
    d.map
        .lookup(peer, Protocol::Tcp, port)
        .is_some_and(|h| !h.entry.deny && h.entry.proxy_rank > 0)
}

/// Judges a request of `policy`'s endpoint to `peer` on `port`.
pub fn judge_http(
    policy: &EndpointPolicy,
    peer: Identity,
    port: u16,
    req: &HttpRequest,
) -> HttpDecision {
    let enforced = &policy.egress;
    let full = policy
        .audit_direction(Direction::Egress)
        .map(|a| &a.table)
        .filter(|t| redirects(t, peer, port));
    let (allowed, allowed_by) = match full {
        // Only the full view redirects this connection: the enforced view allows it at L3/L4,
        // with no HTTP rules to apply.
        Some(_) if !redirects(enforced, peer, port) => (true, Vec::new()),
        _ => enforced.http_allows(peer, port, req),
    };
    let mut audited_by = Vec::new();
    if let Some(full) = full
        && allowed
        && !full.http_allows(peer, port, req).0
    {
        // Name the HTTP rules that judged the request in the full view and are not the
        // enforced view's: the audit policies' rules.
        for f in full
            .l7
            .iter()
            .filter(|f| f.http.is_some() && f.applies(peer, Protocol::Tcp.number(), port))
        {
            if !enforced.l7.iter().any(|e| e.origin == f.origin) && !audited_by.contains(&f.origin)
            {
                audited_by.push(f.origin.clone());
            }
        }
        if audited_by.is_empty() {
            // A rule shared by both views narrowed further only by the full view's merge:
            // still audited, without a name to give.
            audited_by.push(Arc::new(Origin::DefaultAllow));
        }
    }
    HttpDecision {
        allowed,
        allowed_by,
        audited_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imdsguard_manifest::Source;
    use imdsguard_policy::{DecodeOptions, EndpointSpec, EngineOptions, Repository, decode_source};

    fn policy(policies: &str) -> (Repository, Identity) {
        let decoded = decode_source(&Source::new("p.yaml", policies), &DecodeOptions::default());
        assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
        let mut repo = Repository::new(EngineOptions::default());
        repo.load(&decoded);
        repo.upsert_endpoint(EndpointSpec {
            name: "web".into(),
            namespace: "default".into(),
            labels: vec![("app".into(), "web".into())],
            ips: vec!["10.0.0.2".parse().expect("ip")],
            ..Default::default()
        });
        repo.resolve();
        let imds = repo.identity_of_ip("169.254.169.254".parse().expect("ip"));
        (repo, imds)
    }

    fn get(path: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            path: path.into(),
            host: "169.254.169.254".into(),
            headers: Vec::new(),
        }
    }

    // Both leave default deny on: with it off the implicit allow-all admits every request.
    const AUDIT_HTTP: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: imds-paths
  namespace: default
  annotations: {policy.imdsguard.io/audit-mode: "true"}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
    - toCIDR: [169.254.169.254/32]
      toPorts:
        - ports: [{port: "80", protocol: TCP}]
          rules: {http: [{method: GET, path: "/metadata/identity/.*"}]}
"#;

    const ENFORCED_HTTP: &str = r#"
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: imds-get, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
    - toCIDR: [169.254.169.254/32]
      toPorts:
        - ports: [{port: "80", protocol: TCP}]
          rules: {http: [{method: GET}]}
"#;

    #[test]
    fn an_audit_policys_http_rules_forward_and_audit_what_they_would_refuse() {
        let (repo, imds) = policy(AUDIT_HTTP);
        let p = repo.endpoint_policy("default/web").expect("resolved");
        let d = judge_http(p, imds, 80, &get("/metadata/instance"));
        assert!(d.allowed);
        let names: Vec<String> = d
            .audited_by
            .iter()
            .filter_map(|o| match &**o {
                Origin::Rule { policy, .. } => Some(policy.name.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["imds-paths"]);
        let d = judge_http(p, imds, 80, &get("/metadata/identity/oauth2/token"));
        assert!(d.allowed && d.audited_by.is_empty(), "{d:?}");
    }

    #[test]
    fn enforced_http_rules_still_refuse_and_an_audit_policy_never_grants() {
        let (repo, imds) = policy(&format!("{AUDIT_HTTP}{ENFORCED_HTTP}"));
        let p = repo.endpoint_policy("default/web").expect("resolved");
        // Enforced GET-only: a POST is refused (403), not audited.
        let mut post = get("/metadata/identity/oauth2/token");
        post.method = "POST".into();
        let d = judge_http(p, imds, 80, &post);
        assert!(!d.allowed && d.audited_by.is_empty(), "{d:?}");
        // HTTP allows are a union (§5.4): the enforced GET rule admits the request in the full
        // view too, so an audit policy's HTTP rules audit only where no enforcing rule allows.
        let d = judge_http(p, imds, 80, &get("/metadata/instance"));
        assert!(d.allowed && d.audited_by.is_empty(), "{d:?}");
    }

    #[test]
    fn without_audit_policies_the_decision_is_the_enforced_views() {
        let (repo, imds) = policy(ENFORCED_HTTP);
        let p = repo.endpoint_policy("default/web").expect("resolved");
        assert!(p.audit_view.is_none());
        let d = judge_http(p, imds, 80, &get("/anything"));
        assert!(d.allowed && d.audited_by.is_empty() && !d.allowed_by.is_empty());
    }
}
