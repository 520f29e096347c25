//! Policy test scenarios (`imdsguard policy test`): a small cluster of endpoints, the policies under
//! test, and flows with the verdicts the author expects. The format is documented in
//! `docs/policy-testing.md`.
//!
//! Pure logic: parsing a scenario and running it take text in; reading the files a scenario names is
//! the caller's job (the `policies[].file` entries are returned as paths to load).

use imdsguard_manifest::{Field, FieldError, Source};
use imdsguard_policy::{
    DecodeOptions, Decoded, DropReason, EngineOptions, FlowQuery, FlowVerdict, HttpRequest,
    Identity, MatchType, Peer, Protocol, Repository, Verdict, decode_sources,
};
pub mod suite;

use std::fmt;

// A scenario's `namespaces:` and `endpoints:` sections are the endpoints file's: the policy crate
// owns that schema, and a scenario's errors are its document errors.
pub use imdsguard_policy::endpoints_file::DocumentError as ScenarioError;
use imdsguard_policy::endpoints_file::{EndpointEntry, endpoint, first_document, string_map};
use std::net::IpAddr;
use std::sync::Arc;

/// Where a scenario takes policies from.
#[derive(Debug, Clone)]
pub enum PolicyInput {
    /// A file or directory, relative to the scenario file.
    File(String),
    /// Manifests written in the scenario; `name` is used in error messages.
    Inline { name: String, text: String },
}

#[derive(Debug, Clone)]
pub struct InvalidExpectation {
    pub name: String,
    pub kind: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Expectation {
    pub verdict: Option<Verdict>,
    pub drop_reason: Option<DropReason>,
    pub match_type: Option<MatchType>,
    pub proxy: Option<bool>,
    pub http: Option<bool>,
    pub allowed_by: Option<Vec<String>>,
    pub denied_by: Option<Vec<String>>,
    pub policy_log: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub line: u32,
    pub from: CasePeer,
    pub to: CasePeer,
    pub protocol: Protocol,
    pub port: u16,
    pub http: Option<HttpRequest>,
    pub expect: Expectation,
}

#[derive(Debug, Clone)]
pub enum CasePeer {
    Handle(String),
    Entity(Identity),
    Ip(IpAddr),
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub file: Arc<str>,
    pub policies: Vec<PolicyInput>,
    pub audit_mode: bool,
    pub cluster_name: String,
    pub namespaces: Vec<(String, Vec<(String, String)>)>,
    pub endpoints: Vec<EndpointEntry>,
    pub invalid: Vec<InvalidExpectation>,
    pub cases: Vec<Case>,
}

type R<T> = Result<T, FieldError>;

/// Parses a scenario file.
pub fn parse(source: &Source) -> Result<Scenario, ScenarioError> {
    let Some(doc) = first_document(source)? else {
        return Err(ScenarioError {
            file: source.name.clone(),
            line: 1,
            column: 1,
            field: String::new(),
            message: "empty scenario".into(),
        });
    };
    parse_doc(&Field::root(&doc), &source.name)
        .map_err(|e| ScenarioError::from_field(&source.name, e))
}

/// Whether a source holds Kubernetes objects rather than a scenario, so directories that mix
/// policies and scenarios can be given to `policy test`.
pub fn is_manifest(source: &Source) -> bool {
    imdsguard_manifest::parse_documents(&source.text)
        .map(|docs| {
            docs.iter()
                .any(|d| d.get("apiVersion").is_some() || d.get("kind").is_some())
        })
        .unwrap_or(false)
}

fn parse_doc(root: &Field, file: &Arc<str>) -> R<Scenario> {
    let m = root.map(&[
        "name",
        "policies",
        "auditMode",
        "clusterName",
        "namespaces",
        "endpoints",
        "invalid",
        "cases",
    ])?;
    let name = match m.get("name") {
        Some(n) => n.str()?.to_owned(),
        None => file.rsplit('/').next().unwrap_or(file).to_owned(),
    };
    let mut policies = Vec::new();
    if let Some(p) = m.get("policies") {
        for (i, item) in p.seq()?.iter().enumerate() {
            let pm = item.map(&["file", "inline"])?;
            match (pm.get("file"), pm.get("inline")) {
                (Some(f), None) => policies.push(PolicyInput::File(f.str()?.to_owned())),
                (None, Some(t)) => policies.push(PolicyInput::Inline {
                    name: format!("{file}:policies[{i}].inline(line {})", t.pos().line),
                    text: t.str()?.to_owned(),
                }),
                _ => {
                    return Err(
                        item.error("each policies entry needs exactly one of file or inline")
                    );
                }
            }
        }
    }
    let audit_mode = m
        .get("auditMode")
        .map(|f| f.bool())
        .transpose()?
        .unwrap_or(false);
    let cluster_name = m
        .get("clusterName")
        .map(|f| f.str().map(str::to_owned))
        .transpose()?
        .unwrap_or_else(|| "default".into());
    let mut namespaces = Vec::new();
    if let Some(ns) = m.get("namespaces") {
        for (n, labels) in ns.free_map()?.entries() {
            namespaces.push((n.to_owned(), string_map(&labels)?));
        }
    }
    let mut endpoints = Vec::new();
    if let Some(eps) = m.get("endpoints") {
        for e in eps.seq()? {
            endpoints.push(endpoint(&e)?);
        }
    }
    let mut invalid = Vec::new();
    if let Some(inv) = m.get("invalid") {
        for i in inv.seq()? {
            let im = i.map(&["name", "kind", "error"])?;
            invalid.push(InvalidExpectation {
                name: im.required("name")?.str()?.to_owned(),
                kind: im
                    .get("kind")
                    .map(|k| k.str().map(str::to_owned))
                    .transpose()?,
                error: im
                    .get("error")
                    .map(|k| k.str().map(str::to_owned))
                    .transpose()?,
            });
        }
    }
    let mut cases = Vec::new();
    if let Some(cs) = m.get("cases") {
        for c in cs.seq()? {
            cases.push(case(&c, &endpoints)?);
        }
    }
    Ok(Scenario {
        name,
        file: file.clone(),
        policies,
        audit_mode,
        cluster_name,
        namespaces,
        endpoints,
        invalid,
        cases,
    })
}

fn peer(f: &Field, endpoints: &[EndpointEntry]) -> R<CasePeer> {
    if let Some(s) = f.node.as_str() {
        if !endpoints.iter().any(|e| e.handle == s) {
            return Err(f.error(format!("no endpoint named {s:?} in this scenario")));
        }
        return Ok(CasePeer::Handle(s.to_owned()));
    }
    let m = f.map(&["entity", "ip", "endpoint"])?;
    if let Some(e) = m.get("endpoint") {
        return peer(&e, endpoints);
    }
    if let Some(e) = m.get("entity") {
        let name = e.str()?;
        return Identity::reserved_by_name(name)
            .map(CasePeer::Entity)
            .ok_or_else(|| e.error(format!("unknown entity {name:?}")));
    }
    if let Some(ip) = m.get("ip") {
        return ip
            .str()?
            .parse()
            .map(CasePeer::Ip)
            .map_err(|_| ip.error("not an IP address"));
    }
    Err(f.error("expected an endpoint name, {entity: NAME} or {ip: ADDRESS}"))
}

fn case(f: &Field, endpoints: &[EndpointEntry]) -> R<Case> {
    let m = f.map(&["name", "from", "to", "port", "protocol", "http", "expect"])?;
    let name = m.required("name")?.str()?.to_owned();
    let from = peer(&m.required("from")?, endpoints)?;
    let to = peer(&m.required("to")?, endpoints)?;
    let protocol = match m.get("protocol") {
        Some(p) => Protocol::parse(p.str()?)
            .filter(|p| *p != Protocol::Any)
            .ok_or_else(|| p.error("expected TCP, UDP, SCTP, ICMP or ICMPv6"))?,
        None => Protocol::Tcp,
    };
    let port = match m.get("port") {
        Some(p) => u16::try_from(p.int()?).map_err(|_| p.error("port must be 0-65535"))?,
        None => 0,
    };
    let http = match m.get("http") {
        Some(h) => {
            let hm = h.map(&["method", "path", "host", "headers"])?;
            let s = |n: &str| -> R<Option<String>> {
                hm.get(n).map(|v| v.str().map(str::to_owned)).transpose()
            };
            Some(HttpRequest {
                method: s("method")?.unwrap_or_else(|| "GET".into()),
                path: s("path")?.unwrap_or_else(|| "/".into()),
                host: s("host")?.unwrap_or_default(),
                headers: hm
                    .get("headers")
                    .map(|x| string_map(&x))
                    .transpose()?
                    .unwrap_or_default(),
            })
        }
        None => None,
    };
    let em = m.required("expect")?.map(&[
        "verdict",
        "dropReason",
        "matchType",
        "proxy",
        "http",
        "allowedBy",
        "deniedBy",
        "policyLog",
    ])?;
    let mut expect = Expectation::default();
    if let Some(v) = em.get("verdict") {
        expect.verdict = Some(match v.str()? {
            "ALLOWED" => Verdict::Allowed,
            "DENIED" => Verdict::Denied,
            "AUDITED" => Verdict::Audited,
            _ => return Err(v.error("expected ALLOWED, DENIED or AUDITED")),
        });
    }
    if let Some(v) = em.get("dropReason") {
        expect.drop_reason = Some(match v.str()? {
            "POLICY_DENIED" | "133" => DropReason::PolicyDenied,
            "POLICY_DENY" | "181" => DropReason::PolicyDeny,
            "AUTH_REQUIRED" | "189" => DropReason::AuthRequired,
            _ => return Err(v.error("expected POLICY_DENIED, POLICY_DENY or AUTH_REQUIRED")),
        });
    }
    if let Some(v) = em.get("matchType") {
        expect.match_type = Some(MatchType::parse(v.str()?).ok_or_else(|| {
            v.error("expected none, L3-Only, L3-L4, L4-Only, all, L3-Proto or Proto-Only")
        })?);
    }
    if let Some(v) = em.get("proxy") {
        expect.proxy = Some(v.bool()?);
    }
    if let Some(v) = em.get("http") {
        expect.http = Some(match v.str()? {
            "ALLOWED" => true,
            "DENIED" => false,
            _ => return Err(v.error("expected ALLOWED or DENIED")),
        });
    }
    expect.allowed_by = em.get("allowedBy").map(|v| v.strings()).transpose()?;
    expect.denied_by = em.get("deniedBy").map(|v| v.strings()).transpose()?;
    expect.policy_log = em.get("policyLog").map(|v| v.strings()).transpose()?;
    Ok(Case {
        name,
        line: f.pos().line,
        from,
        to,
        protocol,
        port,
        http,
        expect,
    })
}

/// One line of a report.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub case: String,
    pub line: u32,
    pub passed: bool,
    pub expected: String,
    pub actual: String,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub scenario: String,
    pub file: String,
    pub outcomes: Vec<Outcome>,
    /// Problems that are failures on their own (unexpected invalid policies, unknown peers).
    pub errors: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.passed() + self.errors.len()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, got {}",
            self.case, self.expected, self.actual
        )
    }
}

/// Runs a scenario against policies already read (`policies` holds the sources of `File` inputs
/// and of inline manifests, in order).
pub fn run(scenario: &Scenario, policy_sources: &[Source]) -> Report {
    let mut report = Report {
        scenario: scenario.name.clone(),
        file: scenario.file.to_string(),
        ..Default::default()
    };
    let decoded: Decoded = decode_sources(
        policy_sources,
        &DecodeOptions {
            cluster_name: scenario.cluster_name.clone(),
        },
    );
    // Rejections the scenario expects are cases; any other rejection fails the scenario.
    for inv in &scenario.invalid {
        let hit = decoded.errors.iter().find(|e| {
            e.name.as_deref() == Some(inv.name.as_str())
                && inv
                    .kind
                    .as_ref()
                    .is_none_or(|k| e.kind.as_deref() == Some(k))
        });
        let (passed, actual) = match hit {
            None => (false, "accepted".to_owned()),
            Some(e) => match &inv.error {
                Some(sub) if !e.message.to_lowercase().contains(&sub.to_lowercase()) => {
                    (false, format!("rejected with {:?}", e.message))
                }
                _ => (true, format!("rejected with {:?}", e.message)),
            },
        };
        let expected = match &inv.error {
            Some(s) => format!("rejected with an error containing {s:?}"),
            None => "rejected".to_owned(),
        };
        report.outcomes.push(Outcome {
            case: format!("invalid {}", inv.name),
            line: 0,
            passed,
            expected,
            actual,
        });
    }
    for e in &decoded.errors {
        if !scenario
            .invalid
            .iter()
            .any(|i| e.name.as_deref() == Some(i.name.as_str()))
        {
            report
                .errors
                .push(format!("unexpected invalid policy: {e}"));
        }
    }
    let mut repo = Repository::new(EngineOptions {
        audit_mode: scenario.audit_mode,
        cluster_name: scenario.cluster_name.clone(),
        ..Default::default()
    });
    for (ns, labels) in &scenario.namespaces {
        repo.set_namespace_labels(ns, labels.clone());
    }
    repo.load(&decoded);
    for ep in &scenario.endpoints {
        repo.upsert_endpoint(ep.spec.clone());
        // Cilium's per-endpoint PolicyAuditMode, as the agent reads it from an endpoints file.
        if ep.in_audit(&scenario.namespaces) {
            repo.set_endpoint_audit(&ep.spec.key(), true);
        }
    }
    repo.resolve();
    let handle_key = |h: &str| {
        scenario
            .endpoints
            .iter()
            .find(|e| e.handle == h)
            .map(|e| e.spec.key())
            .unwrap_or_default()
    };
    let to_peer = |p: &CasePeer| match p {
        CasePeer::Handle(h) => Peer::Endpoint(handle_key(h)),
        CasePeer::Entity(id) => Peer::Identity(*id),
        CasePeer::Ip(ip) => Peer::Ip(*ip),
    };
    for case in &scenario.cases {
        let q = FlowQuery {
            from: to_peer(&case.from),
            to: to_peer(&case.to),
            protocol: case.protocol,
            port: case.port,
            http: case.http.clone(),
        };
        let outcome = match repo.evaluate(&q) {
            Ok(v) => compare(case, &v),
            Err(e) => Outcome {
                case: case.name.clone(),
                line: case.line,
                passed: false,
                expected: "a verdict".into(),
                actual: e.to_string(),
            },
        };
        report.outcomes.push(outcome);
    }
    report
}

fn compare(case: &Case, v: &FlowVerdict) -> Outcome {
    let e = &case.expect;
    let d = v.deciding();
    let allowed_by: Vec<String> = d
        .map(|d| d.allowed_by.iter().map(|p| p.name.to_string()).collect())
        .unwrap_or_default();
    let denied_by: Vec<String> = d
        .map(|d| d.denied_by.iter().map(|p| p.name.to_string()).collect())
        .unwrap_or_default();
    let policy_log: Vec<String> = d.map(|d| d.policy_log.clone()).unwrap_or_default();
    // Without a redirect the proxy never judges the request: it passes if the flow does.
    let http = v.http_allowed.unwrap_or(v.verdict != Verdict::Denied);
    let mut expected = Vec::new();
    let mut actual = Vec::new();
    let mut passed = true;
    let mut check = |name: &str, want: Option<String>, got: String| {
        if let Some(w) = want {
            if w != got {
                passed = false;
            }
            expected.push(format!("{name}={w}"));
            actual.push(format!("{name}={got}"));
        }
    };
    let set = |mut v: Vec<String>| {
        v.sort();
        format!("[{}]", v.join(","))
    };
    check(
        "verdict",
        e.verdict.map(|x| x.as_str().into()),
        v.verdict.as_str().into(),
    );
    // An audited flow is checked against the reason it would have been dropped for.
    let drop_reason = match v.verdict {
        Verdict::Audited => d.and_then(|d| d.drop_reason),
        _ => v.drop_reason,
    };
    check(
        "dropReason",
        e.drop_reason.map(|x| x.as_str().into()),
        drop_reason.map(|x| x.as_str()).unwrap_or("none").into(),
    );
    check(
        "matchType",
        e.match_type.map(|x| x.as_str().into()),
        v.match_type.as_str().into(),
    );
    check("proxy", e.proxy.map(|x| x.to_string()), v.proxy.to_string());
    check(
        "http",
        e.http
            .map(|x| if x { "ALLOWED".into() } else { "DENIED".into() }),
        if http {
            "ALLOWED".into()
        } else {
            "DENIED".into()
        },
    );
    check("allowedBy", e.allowed_by.clone().map(set), set(allowed_by));
    check("deniedBy", e.denied_by.clone().map(set), set(denied_by));
    check("policyLog", e.policy_log.clone().map(set), set(policy_log));
    let mut actual = actual.join(" ");
    if !passed && let Some(d) = d {
        actual.push_str(&format!(
            " ({} {})",
            d.direction.as_str().to_lowercase(),
            if d.notes.is_empty() {
                String::new()
            } else {
                d.notes.join("; ")
            }
        ));
    }
    Outcome {
        case: case.name.clone(),
        line: case.line,
        passed,
        expected: expected.join(" "),
        actual: actual.trim_end().to_owned(),
    }
}
