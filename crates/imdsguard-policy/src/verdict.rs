//! Verdicts for one flow: the source's egress, then the destination's ingress (Cilium's
//! `LookupFlow`), with drop reasons, match types, proxy redirects and the HTTP decision.

use crate::api::{Direction, PolicyRef, Protocol};
use crate::identity::Identity;
use crate::l7::HttpRequest;
use crate::mapstate::{MatchType, Origin};
use crate::repository::{AuditDirection, EndpointPolicy, Repository};
use std::net::IpAddr;
use std::sync::Arc;

/// One side of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// An endpoint by `namespace/name`.
    Endpoint(String),
    Identity(Identity),
    Ip(IpAddr),
}

#[derive(Debug, Clone)]
pub struct FlowQuery {
    pub from: Peer,
    pub to: Peer,
    pub protocol: Protocol,
    /// Destination port, or ICMP type.
    pub port: u16,
    pub http: Option<HttpRequest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Verdict {
    #[serde(rename = "ALLOWED")]
    Allowed,
    #[serde(rename = "DENIED")]
    Denied,
    #[serde(rename = "AUDITED")]
    Audited,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "ALLOWED",
            Verdict::Denied => "DENIED",
            Verdict::Audited => "AUDITED",
        }
    }
}

/// Cilium drop reasons for policy (docs/policy-semantics.md §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum DropReason {
    #[serde(rename = "POLICY_DENIED")]
    PolicyDenied,
    #[serde(rename = "POLICY_DENY")]
    PolicyDeny,
    #[serde(rename = "AUTH_REQUIRED")]
    AuthRequired,
}

impl DropReason {
    pub fn code(self) -> u8 {
        match self {
            DropReason::PolicyDenied => 133,
            DropReason::PolicyDeny => 181,
            DropReason::AuthRequired => 189,
        }
    }

    /// The flow enum name (`drop_reason_desc`).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::PolicyDenied => "POLICY_DENIED",
            DropReason::PolicyDeny => "POLICY_DENY",
            DropReason::AuthRequired => "AUTH_REQUIRED",
        }
    }

    /// The monitor text Hubble prints.
    pub fn text(self) -> &'static str {
        match self {
            DropReason::PolicyDenied => "Policy denied",
            DropReason::PolicyDeny => "Policy denied by denylist",
            DropReason::AuthRequired => "Authentication required",
        }
    }
}

/// The outcome in one direction.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DirectionVerdict {
    pub direction: Direction,
    pub enforced: bool,
    pub verdict: Verdict,
    /// The reason the packet was (or, in audit mode, would have been) dropped.
    pub drop_reason: Option<DropReason>,
    pub match_type: MatchType,
    pub proxy: bool,
    pub allowed_by: Vec<PolicyRef>,
    pub denied_by: Vec<PolicyRef>,
    pub policy_log: Vec<String>,
    /// Plain-language notes on why (synthetic default allow, allow-localhost, resolution errors).
    pub notes: Vec<String>,
    /// The proxy's answer when the flow is redirected and an HTTP request was given.
    pub http_allowed: Option<bool>,
    pub http_allowed_by: Vec<PolicyRef>,
    /// The proxy forwards the request, but the full view's HTTP rules (audit-mode policies) would
    /// refuse it: the L7 flow is reported as AUDIT.
    pub http_audited: bool,
}

/// The verdict for a whole flow.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlowVerdict {
    pub source_identity: Identity,
    pub destination_identity: Identity,
    pub verdict: Verdict,
    pub drop_reason: Option<DropReason>,
    pub match_type: MatchType,
    /// The direction whose result is reported above.
    pub direction: Direction,
    pub proxy: bool,
    pub http_allowed: Option<bool>,
    pub egress: Option<DirectionVerdict>,
    pub ingress: Option<DirectionVerdict>,
}

impl FlowVerdict {
    pub fn deciding(&self) -> Option<&DirectionVerdict> {
        match self.direction {
            Direction::Egress => self.egress.as_ref(),
            Direction::Ingress => self.ingress.as_ref(),
        }
    }
}

/// Why a query could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("unknown endpoint {0:?}")]
    UnknownEndpoint(String),
    #[error("the policy of {0} has not been resolved; call Repository::resolve first")]
    Unresolved(String),
}

impl Repository {
    fn peer(&self, p: &Peer) -> Result<(Identity, Option<String>), QueryError> {
        Ok(match p {
            Peer::Endpoint(key) => {
                let (ns, name) = key.split_once('/').unwrap_or(("default", key));
                let id = self
                    .endpoint_identity(ns, name)
                    .ok_or_else(|| QueryError::UnknownEndpoint(key.clone()))?;
                (id, Some(format!("{ns}/{name}")))
            }
            Peer::Identity(id) => (*id, None),
            Peer::Ip(ip) => match self.endpoint_by_ip(*ip) {
                Some((key, id)) => (id, Some(key.to_owned())),
                None => (self.identity_of_ip(*ip), None),
            },
        })
    }

    /// Evaluates a flow against the resolved tables.
    pub fn evaluate(&self, q: &FlowQuery) -> Result<FlowVerdict, QueryError> {
        let (src, src_ep) = self.peer(&q.from)?;
        let (dst, dst_ep) = self.peer(&q.to)?;
        let lookup = |ep: &Option<String>| -> Result<Option<&Arc<EndpointPolicy>>, QueryError> {
            match ep {
                Some(key) => self
                    .endpoint_policy(key)
                    .map(Some)
                    .ok_or_else(|| QueryError::Unresolved(key.clone())),
                None => Ok(None),
            }
        };
        let audit = |ep: &Option<String>| ep.as_deref().is_some_and(|k| self.endpoint_audit(k));
        let egress = lookup(&src_ep)?
            .map(|p| self.direction_verdict(p, Direction::Egress, dst, q, audit(&src_ep)));
        let ingress = lookup(&dst_ep)?
            .map(|p| self.direction_verdict(p, Direction::Ingress, src, q, audit(&dst_ep)));
        let is =
            |d: &Option<DirectionVerdict>, v: Verdict| d.as_ref().is_some_and(|d| d.verdict == v);
        // A drop on either side wins over an audit on the other: the packet does not pass.
        let deciding = if is(&egress, Verdict::Denied) {
            Direction::Egress
        } else if is(&ingress, Verdict::Denied) {
            Direction::Ingress
        } else if is(&egress, Verdict::Audited) {
            Direction::Egress
        } else if is(&ingress, Verdict::Audited) {
            Direction::Ingress
        } else if egress.as_ref().is_some_and(|e| e.enforced)
            || ingress.as_ref().is_none_or(|i| !i.enforced)
        {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let pick = match deciding {
            Direction::Egress => egress.as_ref().or(ingress.as_ref()),
            Direction::Ingress => ingress.as_ref(),
        };
        let sides = [egress.as_ref(), ingress.as_ref()];
        let http_allowed = sides
            .iter()
            .flatten()
            .filter_map(|d| d.http_allowed)
            .reduce(|a, b| a && b);
        let proxy = sides.iter().flatten().any(|d| d.proxy);
        let (verdict, drop_reason, match_type) = match pick {
            Some(d) => (
                d.verdict,
                if d.verdict == Verdict::Denied {
                    d.drop_reason
                } else {
                    None
                },
                d.match_type,
            ),
            None => (Verdict::Allowed, None, MatchType::All),
        };
        Ok(FlowVerdict {
            source_identity: src,
            destination_identity: dst,
            verdict,
            drop_reason,
            match_type,
            direction: pick.map(|d| d.direction).unwrap_or(deciding),
            proxy,
            http_allowed,
            egress,
            ingress,
        })
    }

    fn direction_verdict(
        &self,
        policy: &EndpointPolicy,
        dir: Direction,
        peer: Identity,
        q: &FlowQuery,
        endpoint_audit: bool,
    ) -> DirectionVerdict {
        let mut v = self.enforced_verdict(policy, dir, peer, q, endpoint_audit);
        if v.verdict == Verdict::Allowed
            && let Some(a) = policy.audit_direction(dir)
        {
            audit_overlay(&mut v, a, peer, q);
        }
        v
    }

    /// The verdict of the enforced view (every policy but audit-mode ones).
    fn enforced_verdict(
        &self,
        policy: &EndpointPolicy,
        dir: Direction,
        peer: Identity,
        q: &FlowQuery,
        endpoint_audit: bool,
    ) -> DirectionVerdict {
        let table = policy.direction(dir);
        let mut v = DirectionVerdict {
            direction: dir,
            enforced: table.enforced,
            verdict: Verdict::Allowed,
            drop_reason: None,
            match_type: MatchType::All,
            proxy: false,
            allowed_by: Vec::new(),
            denied_by: Vec::new(),
            policy_log: Vec::new(),
            notes: Vec::new(),
            http_allowed: None,
            http_allowed_by: Vec::new(),
            http_audited: false,
        };
        if let Some(e) = &policy.error {
            v.notes.push(format!("policy could not be computed: {e}"));
        }
        if !table.enforced {
            v.notes.push(format!(
                "no policy selects this endpoint for {}: allowed",
                dir.as_str().to_lowercase()
            ));
            return v;
        }
        // ICMP "port" is the type; ICMP and other non-port protocols never match port keys of TCP/UDP.
        let hit = table.map.lookup(peer, q.protocol, q.port);
        let reason = match hit {
            None => {
                v.match_type = MatchType::None;
                Some(DropReason::PolicyDenied)
            }
            Some(h) => {
                v.match_type = h.key.match_type();
                let refs = policy_refs(h.entry.origins());
                for o in h.entry.origins() {
                    match &**o {
                        Origin::Rule { log: Some(l), .. } if !v.policy_log.iter().any(|x| x.as_str() == &**l) => {
                            v.policy_log.push(l.to_string())
                        }
                        Origin::DefaultAllow => {
                            v.notes.push("allowed by the implicit allow-all: no rule selecting this endpoint enables default deny".into())
                        }
                        Origin::AllowLocalhost => v.notes.push("allowed by allow-localhost (host ingress)".into()),
                        _ => {}
                    }
                }
                if h.entry.deny {
                    v.denied_by = refs;
                    Some(DropReason::PolicyDeny)
                } else if h.entry.auth_required {
                    v.allowed_by = refs;
                    Some(DropReason::AuthRequired)
                } else {
                    v.allowed_by = refs;
                    v.proxy = h.entry.proxy_rank > 0;
                    None
                }
            }
        };
        if let Some(r) = reason {
            v.drop_reason = Some(r);
            v.verdict = if endpoint_audit {
                Verdict::Audited
            } else {
                Verdict::Denied
            };
            if v.verdict == Verdict::Denied {
                return v;
            }
        }
        // Audit mode forwards at L3/L4; a redirect entry still sends traffic to the proxy.
        if hit.is_some_and(|h| !h.entry.deny && h.entry.proxy_rank > 0) {
            v.proxy = true;
        }
        if v.proxy
            && q.protocol == Protocol::Tcp
            && let Some(req) = &q.http
        {
            let (ok, origins) = table.http_allows(peer, q.port, req);
            v.http_allowed = Some(ok);
            v.http_allowed_by = policy_refs(origins.iter());
            if origins.iter().any(|o| **o == Origin::DefaultAllow) {
                v.notes.push(
                    "HTTP rules only add visibility here: no selecting rule enables default deny, so the implicit allow-all admits every request"
                        .into(),
                );
            }
        }
        v
    }
}

/// Judges a flow the enforced view lets through against the full view: what it would drop
/// becomes AUDIT, named after the audit-mode policy; a redirect it adds sends the flow to the proxy.
fn audit_overlay(v: &mut DirectionVerdict, a: &AuditDirection, peer: Identity, q: &FlowQuery) {
    let full = &a.table;
    if !full.enforced {
        return;
    }
    let hit = full.map.lookup(peer, q.protocol, q.port);
    let (reason, match_type, by) = match hit {
        None => (
            DropReason::PolicyDenied,
            MatchType::None,
            a.default_deny_by.clone(),
        ),
        Some(h) if h.entry.deny => (
            DropReason::PolicyDeny,
            h.key.match_type(),
            policy_refs(h.entry.origins()),
        ),
        Some(h) if h.entry.auth_required => (
            DropReason::AuthRequired,
            h.key.match_type(),
            policy_refs(h.entry.origins()),
        ),
        Some(h) => {
            // The flow passes either way; it goes to the proxy when the full view redirects, so
            // the audit policy's HTTP rules are judged (in audit) there.
            if h.entry.proxy_rank > 0 && !v.proxy {
                v.proxy = true;
                v.notes
                    .push("redirected to the L7 proxy by an audit-mode policy's HTTP rules".into());
            }
            if v.proxy
                && q.protocol == Protocol::Tcp
                && let Some(req) = &q.http
            {
                let enforced_ok = *v.http_allowed.get_or_insert(true);
                let (full_ok, _) = full.http_allows(peer, q.port, req);
                if enforced_ok && !full_ok {
                    v.http_audited = true;
                    v.notes.push(
                        "HTTP: AUDIT, an audit-mode policy's HTTP rules would refuse this request (403)"
                            .into(),
                    );
                }
            }
            return;
        }
    };
    if !v.enforced {
        v.notes.clear();
        v.enforced = true;
    }
    v.verdict = Verdict::Audited;
    v.drop_reason = Some(reason);
    v.match_type = match_type;
    v.denied_by = by;
    if let Some(h) = hit {
        for o in h.entry.origins() {
            if let Origin::Rule { log: Some(l), .. } = &**o
                && !v.policy_log.iter().any(|x| x.as_str() == &**l)
            {
                v.policy_log.push(l.to_string());
            }
        }
    }
}

fn policy_refs<'a>(origins: impl Iterator<Item = &'a Arc<Origin>>) -> Vec<PolicyRef> {
    let mut out: Vec<PolicyRef> = Vec::new();
    for o in origins {
        if let Origin::Rule { policy, .. } = &**o
            && !out.contains(policy)
        {
            out.push(policy.clone());
        }
    }
    out.sort();
    out
}
