//! What `imdsguard policy check` and `policy trace` say, as text and JSON: the reports are part of
//! the command line's interface (scripts read them), so they are built here, beside the engine
//! that decides them, and the binary only prints them.

use crate::api::Subject;
use crate::endpoints_file::{EndpointEntry, EndpointsFile};
use crate::verdict::DirectionVerdict;
use crate::{
    Decoded, Direction, EngineOptions, FlowQuery, FlowVerdict, HttpRequest, Identity, Peer, Policy,
    Protocol, Repository, Verdict,
};
use serde_json::{Value, json};
use std::fmt;
use std::net::IpAddr;

/// One line per policy rule: what it selects, its sections and their default deny.
pub fn policy_summary(p: &Policy) -> String {
    let mut parts = Vec::new();
    for r in &p.rules {
        let subject = match &r.subject {
            Subject::Endpoints(s) => format!("endpoints {s}"),
            Subject::Nodes(s) => format!("nodes {s}"),
        };
        let sections: Vec<String> = r
            .sections()
            .map(|(s, items)| format!("{s:?} {}", items.len()))
            .collect();
        // `-`: the rule has no section in that direction, so it does not touch its default.
        let default = |dir: Direction, on: bool| {
            if r.has_direction(dir) {
                on.to_string()
            } else {
                "-".into()
            }
        };
        let dd = format!(
            "default-deny ingress={} egress={}",
            default(Direction::Ingress, r.default_deny_ingress),
            default(Direction::Egress, r.default_deny_egress)
        );
        parts.push(format!("selects {subject}; {}; {dd}", sections.join(", ")));
    }
    parts.join(" | ")
}

/// `policy check`'s text report, for standard output: the errors, each valid object and the
/// totals. The warnings are not in it: they go to standard error.
pub struct CheckText<'a>(pub &'a Decoded);

impl fmt::Display for CheckText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let decoded = self.0;
        for e in &decoded.errors {
            writeln!(f, "{e}")?;
        }
        for p in &decoded.policies {
            writeln!(
                f,
                "{}:{}: {}: valid: {}",
                p.file,
                p.pos,
                p.id,
                policy_summary(p)
            )?;
        }
        for g in &decoded.groups {
            let cidrs: Vec<String> = g.cidrs.iter().map(|c| c.to_string()).collect();
            writeln!(
                f,
                "{}:{}: CiliumCIDRGroup {}: valid: {}",
                g.file,
                g.pos,
                g.name,
                cidrs.join(", ")
            )?;
        }
        let valid = decoded.policies.len() + decoded.groups.len();
        writeln!(f, "{valid} valid, {} invalid", decoded.errors.len())
    }
}

/// `policy check -o json`: the valid objects, the errors and the warnings.
pub fn check_json(decoded: &Decoded) -> Value {
    let objects: Vec<Value> = decoded
        .policies
        .iter()
        .map(|p| {
            json!({"file": &*p.file, "line": p.pos.line, "column": p.pos.col, "kind": p.id.kind.as_str(),
                   "namespace": &*p.id.namespace, "name": &*p.id.name, "summary": policy_summary(p)})
        })
        .chain(decoded.groups.iter().map(|g| {
            json!({"file": &*g.file, "line": g.pos.line, "column": g.pos.col, "kind": "CiliumCIDRGroup",
                   "name": &*g.name, "summary": format!("{} CIDR(s)", g.cidrs.len())})
        }))
        .collect();
    json!({"valid": objects, "errors": decoded.errors, "warnings": decoded.warnings})
}

/// A repository with the policies and the endpoints (and namespace labels), resolved.
pub fn repository(decoded: &Decoded, endpoints: &EndpointsFile, opts: EngineOptions) -> Repository {
    let mut repo = Repository::new(opts);
    for (ns, labels) in &endpoints.namespaces {
        repo.set_namespace_labels(ns, labels.clone());
    }
    for ep in &endpoints.endpoints {
        repo.upsert_endpoint(ep.spec.clone());
        if ep.in_audit(&endpoints.namespaces) {
            repo.set_endpoint_audit(&ep.spec.key(), true);
        }
    }
    repo.load(decoded);
    repo.resolve();
    repo
}

/// A flow as `policy trace` is asked about it: each side an endpoint (by handle or
/// `namespace/name`), an address or an entity.
#[derive(Debug, Clone, Default)]
pub struct TraceRequest {
    pub from: String,
    pub to: String,
    /// The destination port (ICMP: the type).
    pub dport: u16,
    pub protocol: String,
    pub http_method: Option<String>,
    pub http_path: Option<String>,
    pub http_host: Option<String>,
}

/// A trace request that names no flow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    #[error("unknown protocol {0:?}: use TCP, UDP, SCTP, ICMP or ICMPv6")]
    Protocol(String),
    #[error(
        "{0:?} is not an IP address or entity, and no --endpoints file was given to define endpoints"
    )]
    NoEndpoints(String),
    #[error("{name:?} is not an IP address, an entity or a known endpoint (known: {known})")]
    UnknownPeer { name: String, known: String },
}

impl TraceRequest {
    /// The engine's query, with peers looked up among `endpoints`. Any HTTP field makes it an
    /// HTTP request; the others default to `GET /` with no host.
    pub fn query(&self, endpoints: &[EndpointEntry]) -> Result<FlowQuery, TraceError> {
        let protocol = Protocol::parse(&self.protocol)
            .filter(|p| *p != Protocol::Any)
            .ok_or_else(|| TraceError::Protocol(self.protocol.clone()))?;
        let http =
            (self.http_method.is_some() || self.http_path.is_some() || self.http_host.is_some())
                .then(|| HttpRequest {
                    method: self.http_method.clone().unwrap_or_else(|| "GET".into()),
                    path: self.http_path.clone().unwrap_or_else(|| "/".into()),
                    host: self.http_host.clone().unwrap_or_default(),
                    headers: Vec::new(),
                });
        let handles: Vec<(String, String)> = endpoints
            .iter()
            .map(|e| (e.handle.clone(), e.spec.key()))
            .collect();
        Ok(FlowQuery {
            from: parse_peer(&self.from, &handles)?,
            to: parse_peer(&self.to, &handles)?,
            protocol,
            port: self.dport,
            http,
        })
    }
}

/// An address, an entity (`world`, `reserved:host` …) or an endpoint by handle or key, from
/// `endpoints`' (handle, key) pairs.
pub fn parse_peer(s: &str, endpoints: &[(String, String)]) -> Result<Peer, TraceError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Peer::Ip(ip));
    }
    let entity = s.strip_prefix("reserved:").unwrap_or(s);
    if let Some(id) = Identity::reserved_by_name(entity) {
        return Ok(Peer::Identity(id));
    }
    if let Some((_, key)) = endpoints.iter().find(|(h, k)| h == s || k == s) {
        return Ok(Peer::Endpoint(key.clone()));
    }
    if endpoints.is_empty() {
        return Err(TraceError::NoEndpoints(s.to_owned()));
    }
    let known: Vec<&str> = endpoints.iter().map(|(h, _)| h.as_str()).collect();
    Err(TraceError::UnknownPeer {
        name: s.to_owned(),
        known: known.join(", "),
    })
}

/// `policy trace`'s text report: both sides' identities, each direction's verdict and why, and
/// the flow's verdict.
pub struct TraceText<'a> {
    pub request: &'a TraceRequest,
    pub repo: &'a Repository,
    pub verdict: &'a FlowVerdict,
}

impl fmt::Display for TraceText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (req, v) = (self.request, self.verdict);
        writeln!(f, "From: {} {}", req.from, self.identity(v.source_identity))?;
        writeln!(
            f,
            "To:   {}:{}/{} {}",
            req.to,
            req.dport,
            req.protocol.to_uppercase(),
            self.identity(v.destination_identity)
        )?;
        direction(f, "Egress (source)", &v.egress)?;
        direction(f, "Ingress (destination)", &v.ingress)?;
        let reason = v
            .drop_reason
            .map(|r| format!(" ({})", r.text()))
            .unwrap_or_default();
        match (v.verdict, v.deciding()) {
            // The flow passes; say what would have dropped it (an audit-mode policy, or the
            // endpoint's audit mode).
            (Verdict::Audited, Some(d)) => {
                let by: Vec<String> = d.denied_by.iter().map(|p| p.to_string()).collect();
                let by = if by.is_empty() {
                    "default deny".to_owned()
                } else {
                    by.join(", ")
                };
                let reason = d
                    .drop_reason
                    .map(|r| format!(" ({})", r.text()))
                    .unwrap_or_default();
                writeln!(f, "AUDIT: would be DENIED by {by}{reason}")?;
            }
            _ => writeln!(f, "Verdict: {}{reason}", v.verdict.as_str())?,
        }
        writeln!(f, "Match type: {}", v.match_type.as_str())?;
        writeln!(f, "Proxy: {}", if v.proxy { "yes" } else { "no" })?;
        match v.http_allowed {
            Some(true) => writeln!(f, "HTTP: ALLOWED"),
            Some(false) => writeln!(f, "HTTP: DENIED (403)"),
            None => Ok(()),
        }
    }
}

impl TraceText<'_> {
    fn identity(&self, id: Identity) -> String {
        let labels = self
            .repo
            .identities()
            .labels(id)
            .map(|l| l.to_string())
            .unwrap_or_default();
        format!("({id}) {labels}")
    }
}

fn direction(f: &mut fmt::Formatter<'_>, name: &str, d: &Option<DirectionVerdict>) -> fmt::Result {
    let Some(d) = d else {
        return writeln!(
            f,
            "{name}: not evaluated (that side is not an endpoint on this node)"
        );
    };
    if !d.enforced {
        return writeln!(
            f,
            "{name}: not enforced (no policy selects the endpoint in this direction): allowed"
        );
    }
    let verdict = match d.verdict {
        Verdict::Allowed => "ALLOWED",
        Verdict::Denied => "DENIED",
        Verdict::Audited => "AUDITED",
    };
    writeln!(
        f,
        "{name}: policy-verdict:{} {} {verdict}",
        d.match_type.as_str(),
        d.direction.as_str()
    )?;
    if let Some(r) = d.drop_reason {
        writeln!(
            f,
            "  drop reason: {} ({}, {})",
            r.text(),
            r.code(),
            r.as_str()
        )?;
    }
    let dir = d.direction.as_str().to_lowercase();
    for p in &d.allowed_by {
        writeln!(f, "  {dir}_allowed_by: {p}")?;
    }
    for p in &d.denied_by {
        writeln!(f, "  {dir}_denied_by: {p}")?;
    }
    if !d.policy_log.is_empty() {
        writeln!(f, "  policy_log: {}", d.policy_log.join(", "))?;
    }
    for n in &d.notes {
        writeln!(f, "  note: {n}")?;
    }
    if d.proxy {
        writeln!(f, "  redirected to the L7 proxy")?;
    }
    match d.http_allowed {
        Some(true) => {
            let by: Vec<String> = d.http_allowed_by.iter().map(|p| p.to_string()).collect();
            let by = if by.is_empty() {
                String::new()
            } else {
                format!(" by {}", by.join(", "))
            };
            writeln!(f, "  HTTP: allowed{by}")
        }
        Some(false) => writeln!(f, "  HTTP: denied (403 Forbidden, \"Access denied\")"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints_file::parse_endpoints;
    use crate::{DecodeOptions, decode_source};
    use imdsguard_manifest::Source;

    /// web may not reach the metadata address.
    const POLICY: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: no-metadata, namespace: default}
spec: {endpointSelector: {matchLabels: {app: web}}, egressDeny: [{toCIDR: [169.254.169.254/32]}]}
";

    fn endpoints() -> EndpointsFile {
        let text = "endpoints:\n  - name: web\n    labels: {app: web}\n";
        parse_endpoints(&Source::new("eps.yaml", text)).expect("an endpoints file")
    }

    #[test]
    fn check_text_lists_each_valid_object_and_the_totals() {
        let d = decode_source(&Source::new("p.yaml", POLICY), &DecodeOptions::default());
        assert_eq!(
            CheckText(&d).to_string(),
            "p.yaml:1:1: CiliumNetworkPolicy default/no-metadata: valid: selects endpoints \
             any:app=web, k8s:io.kubernetes.pod.namespace=default; EgressDeny 1; \
             default-deny ingress=- egress=true\n1 valid, 0 invalid\n"
        );
        assert_eq!(check_json(&d)["valid"][0]["name"], "no-metadata");
    }

    #[test]
    fn trace_names_the_denying_policy() {
        let d = decode_source(&Source::new("p.yaml", POLICY), &DecodeOptions::default());
        let eps = endpoints();
        let repo = repository(&d, &eps, EngineOptions::default());
        let request = TraceRequest {
            from: "web".into(),
            to: "169.254.169.254".into(),
            dport: 80,
            protocol: "tcp".into(),
            ..Default::default()
        };
        let verdict = repo
            .evaluate(&request.query(&eps.endpoints).expect("a query"))
            .expect("a verdict");
        let text = TraceText {
            request: &request,
            repo: &repo,
            verdict: &verdict,
        }
        .to_string();
        assert!(text.contains("\n  egress_denied_by: CiliumNetworkPolicy default/no-metadata\n"));
        assert!(text.contains("To:   169.254.169.254:80/TCP "), "{text}");
    }

    #[test]
    fn trace_says_what_an_audit_policy_would_deny() {
        let audited = POLICY.replace(
            "namespace: default}",
            "namespace: default, annotations: {policy.imdsguard.io/audit-mode: \"true\"}}",
        );
        let d = decode_source(
            &Source::new("p.yaml", audited.as_str()),
            &DecodeOptions::default(),
        );
        assert!(d.policies.iter().all(|p| p.audit), "{:?}", d.errors);
        let eps = endpoints();
        let repo = repository(&d, &eps, EngineOptions::default());
        let request = TraceRequest {
            from: "web".into(),
            to: "169.254.169.254".into(),
            dport: 80,
            protocol: "tcp".into(),
            ..Default::default()
        };
        let verdict = repo
            .evaluate(&request.query(&eps.endpoints).expect("a query"))
            .expect("a verdict");
        assert_eq!(verdict.verdict, Verdict::Audited);
        let text = TraceText {
            request: &request,
            repo: &repo,
            verdict: &verdict,
        }
        .to_string();
        assert!(
            text.contains(
                "\nAUDIT: would be DENIED by CiliumNetworkPolicy default/no-metadata (Policy denied by denylist)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn unknown_peers_and_protocols_are_named() {
        let eps = endpoints();
        let handles: Vec<(String, String)> = eps
            .endpoints
            .iter()
            .map(|e| (e.handle.clone(), e.spec.key()))
            .collect();
        assert_eq!(
            parse_peer("db", &handles),
            Err(TraceError::UnknownPeer {
                name: "db".into(),
                known: "web".into()
            })
        );
        assert_eq!(
            parse_peer("db", &[]).map_err(|e| e.to_string()),
            Err("\"db\" is not an IP address or entity, and no --endpoints file was given to define endpoints".into())
        );
        let request = TraceRequest {
            from: "world".into(),
            to: "10.0.0.1".into(),
            protocol: "ANY".into(),
            ..Default::default()
        };
        assert_eq!(
            request.query(&[]).map(|_| ()),
            Err(TraceError::Protocol("ANY".into()))
        );
    }
}
