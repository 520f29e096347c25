//! What a cloud metadata service answers (docs/metadata-services.md), as a pure function of the
//! request and the emulator's state. Azure by default; AWS IMDSv2 and GCP by flavour.
//!
//! It reproduces the behaviour a filtering proxy must not be fooled by, on purpose: Azure
//! percent-decodes the path before routing (`/metadata/scheduledevents%3Fapi-version=…` is served),
//! and `/metadata` is case-insensitive.

use imdsguard_metadata::percent_decode;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    #[default]
    Azure,
    Aws,
    Gcp,
}

impl Flavor {
    pub fn parse(s: &str) -> Option<Flavor> {
        match s.to_ascii_lowercase().as_str() {
            "azure" => Some(Flavor::Azure),
            "aws" => Some(Flavor::Aws),
            "gcp" => Some(Flavor::Gcp),
            _ => None,
        }
    }

    /// The name `parse` reads.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Azure => "azure",
            Flavor::Aws => "aws",
            Flavor::Gcp => "gcp",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The request target as sent: path and query, still percent-encoded.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Response {
    fn json(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "application/json; charset=utf-8",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// The API versions the emulator accepts, newest first (Azure's list runs 2017-03-01..2025-04-07).
pub const AZURE_VERSIONS: [&str; 12] = [
    "2025-04-07",
    "2024-07-17",
    "2024-03-15",
    "2023-07-01",
    "2021-12-13",
    "2021-02-01",
    "2020-09-01",
    "2020-07-01",
    "2019-08-01",
    "2018-10-01",
    "2018-02-01",
    "2017-08-01",
];

/// A user-assigned identity the emulated VM has.
#[derive(Debug, Clone)]
pub struct ManagedIdentity {
    pub client_id: String,
    pub object_id: String,
    pub msi_res_id: String,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub flavor: Flavor,
    /// Azure: requests per second for the VM, and for the identity category.
    pub rate_per_second: u32,
    pub identity_rate_per_second: u32,
    /// AWS: accept requests without a token (IMDSv1); otherwise they get 401.
    pub aws_allow_v1: bool,
    pub identities: Vec<ManagedIdentity>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flavor: Flavor::Azure,
            rate_per_second: 5,
            identity_rate_per_second: 20,
            aws_allow_v1: false,
            identities: vec![ManagedIdentity {
                client_id: "5a6f3c1e-0c8b-4d3c-9f5e-2f7d5b8e4a10".into(),
                object_id: "9b2e7d44-61a1-4f0c-8e53-0c1d2a3b4c5d".into(),
                msi_res_id: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/MC_rg_aks_westeurope/providers/Microsoft.ManagedIdentity/userAssignedIdentities/aks-agentpool".into(),
            }],
        }
    }
}

/// A one-second window counter (IMDS publishes per-second limits).
#[derive(Debug, Default)]
struct Window {
    start: Option<Instant>,
    count: u32,
}

impl Window {
    fn admit(&mut self, now: Instant, limit: u32) -> bool {
        match self.start {
            Some(s) if now.duration_since(s) < Duration::from_secs(1) => {}
            _ => {
                self.start = Some(now);
                self.count = 0;
            }
        }
        self.count += 1;
        self.count <= limit
    }
}

#[derive(Debug, Default)]
pub struct Emulator {
    opts: Options,
    general: Window,
    identity: Window,
    aws_tokens: HashMap<String, Instant>,
    next_token: u64,
}

const INSTANCE: &str = r#"{"compute":{"azEnvironment":"AzurePublicCloud","location":"westeurope","name":"aks-default-13458874-vmss_1","offer":"","osType":"Linux","resourceGroupName":"MC_rg_aks_westeurope","resourceId":"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/MC_rg_aks_westeurope/providers/Microsoft.Compute/virtualMachineScaleSets/aks-default-13458874-vmss/virtualMachines/1","subscriptionId":"00000000-0000-0000-0000-000000000000","tags":"aks-managed-orchestrator:Kubernetes","userData":"","vmId":"02aab8a4-74ef-476e-8182-f6d2ba4166a6","vmSize":"Standard_D4s_v5","zone":"1"},"network":{"interface":[{"ipv4":{"ipAddress":[{"privateIpAddress":"10.224.0.4","publicIpAddress":""}],"subnet":[{"address":"10.224.0.0","prefix":"16"}]},"macAddress":"6045BDA1B2C3"}]}}"#;

pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Splits a (decoded) target into its path and query parameters.
pub(crate) fn split(target: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), percent_decode(v).into_owned())
        })
        .collect();
    (path.to_owned(), params)
}

impl Emulator {
    pub fn new(opts: Options) -> Emulator {
        Emulator {
            opts,
            ..Default::default()
        }
    }

    pub fn handle(&mut self, req: &Request, now: Instant) -> Response {
        match self.opts.flavor {
            Flavor::Azure => self.azure(req, now),
            Flavor::Aws => self.aws(req, now),
            Flavor::Gcp => crate::gcp::handle(req),
        }
    }

    fn azure(&mut self, req: &Request, now: Instant) -> Response {
        // IMDS decodes the path before it routes: an encoded `?` starts the query.
        let (raw_path, raw_query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let decoded = percent_decode(raw_path);
        let (path, smuggled) = decoded.split_once('?').unwrap_or((decoded.as_ref(), ""));
        let query: Vec<&str> = [smuggled, raw_query]
            .into_iter()
            .filter(|q| !q.is_empty())
            .collect();
        let (_, params) = split(&format!("?{}", query.join("&")));
        let path = path.to_owned();
        let lower = path.to_ascii_lowercase();
        let identity = lower.starts_with("/metadata/identity");
        if req.header("X-Forwarded-For").is_some() {
            return Response::json(
                400,
                r#"{"error":"Bad request. X-Forwarded-For header is not allowed"}"#,
            );
        }
        let metadata = req.header("Metadata");
        // The token endpoint wants "true" in lower case; Istio's `True` works elsewhere.
        let ok = match metadata {
            Some(v) if identity => v == "true",
            Some(v) => v.eq_ignore_ascii_case("true"),
            None => false,
        };
        if !ok {
            return if identity {
                Response::json(
                    400,
                    r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#,
                )
            } else {
                Response::json(
                    400,
                    r#"{"error":"Bad request. Required metadata header not specified"}"#,
                )
            };
        }
        let mut names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Response::json(
                400,
                r#"{"error":"Bad request. Duplicate query parameter names are not allowed"}"#,
            );
        }
        let param = |name: &str| param(&params, name);
        let limit_ok = if identity {
            self.identity.admit(now, self.opts.identity_rate_per_second)
        } else {
            self.general.admit(now, self.opts.rate_per_second)
        };
        if !limit_ok {
            return Response::json(429, r#"{"error":"Too many requests"}"#);
        }
        if lower == "/metadata/versions" {
            let list: Vec<String> = AZURE_VERSIONS
                .iter()
                .rev()
                .map(|v| format!("{v:?}"))
                .collect();
            return Response::json(200, format!(r#"{{"apiVersions":[{}]}}"#, list.join(",")));
        }
        let version = param("api-version").filter(|v| AZURE_VERSIONS.contains(v));
        let Some(version) = version else {
            return Response::json(
                400,
                format!(
                    r#"{{"error":"Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds","newest-versions":["{}","{}","{}"]}}"#,
                    AZURE_VERSIONS[0], AZURE_VERSIONS[1], AZURE_VERSIONS[2]
                ),
            );
        };
        let method = req.method.as_str();
        let not_allowed = || {
            Response::json(
                405,
                format!(
                    r#"{{"error":"Http method isn't allowed: Path = \"{path}\", Method = \"{method}\""}}"#
                ),
            )
        };
        match lower.as_str() {
            "/metadata/identity/oauth2/token" => {
                if method != "GET" {
                    return not_allowed();
                }
                if version < "2018-02-01" {
                    return Response::json(
                        400,
                        r#"{"error":"invalid_request","error_description":"api-version 2018-02-01 or later is required"}"#,
                    );
                }
                self.token(&params)
            }
            "/metadata/identity/info" => Response::json(
                200,
                r#"{"tenantId":"72f988bf-86f1-41af-91ab-2d7cd011db47"}"#,
            ),
            "/metadata/scheduledevents" => match method {
                "GET" => Response::json(200, r#"{"DocumentIncarnation":1,"Events":[]}"#),
                "POST" => Response::json(200, ""),
                _ => not_allowed(),
            },
            "/metadata/attested/document" => Response::json(
                200,
                r#"{"encoding":"pkcs7","signature":"TUlJTE5RWUpLb1pJaHZjTkFRY0NvSUlMTmpDQ0N6SUNBUUV4RHpBTkJnbGdoa2dCWlFNRUFnRUZBREFXQmdrcWhraUc5dzBCQndHZ0NRUUhNQVVDQVFFPQ=="}"#,
            ),
            p if p == "/metadata/instance" || p.starts_with("/metadata/instance/") => {
                if method != "GET" {
                    return not_allowed();
                }
                instance(&path["/metadata/instance".len()..], param("format"))
            }
            _ => Response::json(
                404,
                format!(r#"{{"error":"API not found: Path = \"{path}\", Method = \"{method}\""}}"#),
            ),
        }
    }

    fn token(&self, params: &[(String, String)]) -> Response {
        let param = |name: &str| param(params, name);
        let Some(resource) = param("resource").filter(|r| !r.is_empty()) else {
            return Response::json(
                400,
                r#"{"error":"invalid_request","error_description":"Required audience parameter not specified"}"#,
            );
        };
        let msi = param("msi_res_id").or_else(|| param("mi_res_id"));
        let given: Vec<(&str, &str)> = [
            ("client_id", param("client_id")),
            ("object_id", param("object_id")),
            ("msi_res_id", msi),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
        if given.len() > 1 {
            return Response::json(
                400,
                r#"{"error":"invalid_request","error_description":"Only one of client_id, object_id or msi_res_id may be given"}"#,
            );
        }
        let found = match given.first() {
            None => self.opts.identities.first(),
            Some(("client_id", v)) => self
                .opts
                .identities
                .iter()
                .find(|i| i.client_id.eq_ignore_ascii_case(v)),
            Some(("object_id", v)) => self
                .opts
                .identities
                .iter()
                .find(|i| i.object_id.eq_ignore_ascii_case(v)),
            // ARM resource IDs are case-insensitive.
            Some((_, v)) => self
                .opts
                .identities
                .iter()
                .find(|i| i.msi_res_id.eq_ignore_ascii_case(v)),
        };
        let Some(id) = found else {
            return Response::json(
                400,
                r#"{"error":"invalid_request","error_description":"Identity not found"}"#,
            );
        };
        let now = unix_now();
        Response::json(
            200,
            format!(
                r#"{{"access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.emulated.{aud}","refresh_token":"","expires_in":"86399","expires_on":"{exp}","ext_expires_in":"86399","not_before":"{now}","resource":"{resource}","token_type":"Bearer","client_id":"{client}"}}"#,
                aud = resource.len(),
                exp = now + 86399,
                client = id.client_id
            ),
        )
    }

    fn aws(&mut self, req: &Request, now: Instant) -> Response {
        let (path, _) = split(&req.target);
        let xff = req.header("X-Forwarded-For").is_some();
        if path == "/latest/api/token" {
            if req.method != "PUT" {
                return Response::text(405, "Method Not Allowed");
            }
            if xff {
                return Response::text(403, "Forbidden");
            }
            let ttl = req
                .header("X-aws-ec2-metadata-token-ttl-seconds")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|t| (1..=21600).contains(t));
            let Some(ttl) = ttl else {
                return Response::text(400, "Bad Request");
            };
            self.next_token += 1;
            let token = format!("AQAEAEmulatedToken{:016x}==", self.next_token);
            self.aws_tokens
                .insert(token.clone(), now + Duration::from_secs(ttl));
            let mut r = Response::text(200, token);
            r.headers
                .push(("X-aws-ec2-metadata-token-ttl-seconds", ttl.to_string()));
            return r;
        }
        if req.method != "GET" && req.method != "HEAD" {
            return Response::text(405, "Method Not Allowed");
        }
        match req.header("X-aws-ec2-metadata-token") {
            Some(t) => {
                if xff {
                    return Response::text(403, "Forbidden");
                }
                if self.aws_tokens.get(t).is_none_or(|exp| *exp <= now) {
                    return Response::text(401, "Unauthorized");
                }
            }
            None if !self.opts.aws_allow_v1 => return Response::text(401, "Unauthorized"),
            None => {}
        }
        let body = match path.as_str() {
            "/latest/meta-data/" | "/latest/meta-data" => {
                "ami-id\nhostname\niam/\ninstance-id\nlocal-ipv4\nplacement/"
            }
            "/latest/meta-data/instance-id" => "i-0123456789abcdef0",
            "/latest/meta-data/local-ipv4" => "10.0.1.23",
            "/latest/meta-data/placement/availability-zone" => "eu-west-1a",
            "/latest/meta-data/placement/region" => "eu-west-1",
            "/latest/meta-data/iam/info" => {
                r#"{"Code":"Success","InstanceProfileArn":"arn:aws:iam::123456789012:instance-profile/eks-node","InstanceProfileId":"AIPAEMULATED"}"#
            }
            "/latest/meta-data/iam/security-credentials/"
            | "/latest/meta-data/iam/security-credentials" => AWS_ROLE,
            p if p.strip_prefix("/latest/meta-data/iam/security-credentials/")
                == Some(AWS_ROLE) =>
            {
                return Response::text(200, aws_credentials(unix_now()));
            }
            _ => return Response::text(404, "Not Found"),
        };
        Response::text(200, body)
    }
}

/// The instance profile's role, and the credentials IMDS hands out for it.
pub const AWS_ROLE: &str = "eks-node-role";
pub const AWS_ACCESS_KEY_ID: &str = "ASIAEMULATED";
/// How long the role's credentials are valid from when they are asked for (IMDS rotates them
/// well before they expire, and SDKs refresh them 5–15 minutes ahead).
pub const AWS_CREDENTIALS_LIFETIME: u64 = 6 * 3600;

fn aws_credentials(now: u64) -> String {
    format!(
        r#"{{"Code":"Success","LastUpdated":"{}","Type":"AWS-HMAC","AccessKeyId":"{AWS_ACCESS_KEY_ID}","SecretAccessKey":"emulated","Token":"emulated","Expiration":"{}"}}"#,
        rfc3339(now),
        rfc3339(now + AWS_CREDENTIALS_LIFETIME)
    )
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the epoch as `2026-01-02T03:04:05Z` (the form IMDS and botocore use).
fn rfc3339(secs: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `/metadata/instance[/route]`: the document, or the node a route walks to. A leaf needs
/// `format=text`; the whole document or a subtree is JSON.
fn instance(route: &str, format: Option<&str>) -> Response {
    let mut node: serde_json::Value = match serde_json::from_str(INSTANCE) {
        Ok(v) => v,
        Err(_) => return Response::json(500, r#"{"error":"Internal error"}"#),
    };
    for part in route.split('/').filter(|p| !p.is_empty()) {
        let next = match &node {
            serde_json::Value::Object(m) => m.get(part).cloned(),
            serde_json::Value::Array(a) => {
                part.parse::<usize>().ok().and_then(|i| a.get(i).cloned())
            }
            _ => None,
        };
        let Some(next) = next else {
            return Response::json(404, r#"{"error":"Not found"}"#);
        };
        node = next;
    }
    let leaf = !matches!(
        node,
        serde_json::Value::Object(_) | serde_json::Value::Array(_)
    );
    match (leaf, format) {
        (true, Some("text")) => Response::text(
            200,
            match node {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            },
        ),
        (true, _) => Response::json(
            400,
            r#"{"error":"Bad request. Unexpected request. Check the query parameters and retry."}"#,
        ),
        (false, Some("text")) if route.is_empty() => Response::json(
            400,
            r#"{"error":"Bad request. Unexpected request. Check the query parameters and retry."}"#,
        ),
        (false, _) => Response::json(200, node.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: Vec::new(),
        }
    }

    fn azure() -> Emulator {
        Emulator::new(Options {
            rate_per_second: 1000,
            identity_rate_per_second: 1000,
            ..Default::default()
        })
    }

    const MD: &[(&str, &str)] = &[("Metadata", "true")];

    #[test]
    fn azure_requires_the_metadata_header_and_refuses_forwarded_requests() {
        let mut e = azure();
        let now = Instant::now();
        let r = e.handle(&get("/metadata/instance?api-version=2021-02-01", &[]), now);
        assert_eq!(r.status, 400);
        assert!(r.body.contains("Required metadata header not specified"));
        let r = e.handle(
            &get(
                "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x",
                &[("Metadata", "True")],
            ),
            now,
        );
        assert_eq!(r.status, 400, "the token endpoint wants lower-case true");
        assert!(r.body.contains("invalid_request"));
        let r = e.handle(
            &get(
                "/metadata/instance?api-version=2021-02-01",
                &[("Metadata", "True")],
            ),
            now,
        );
        assert_eq!(r.status, 200, "Istio's `True` works on /metadata/instance");
        let r = e.handle(
            &get(
                "/metadata/instance?api-version=2021-02-01",
                &[("Metadata", "true"), ("X-Forwarded-For", "10.0.0.1")],
            ),
            now,
        );
        assert_eq!(r.status, 400);
    }

    #[test]
    fn azure_api_versions() {
        let mut e = azure();
        let now = Instant::now();
        let r = e.handle(&get("/metadata/instance", MD), now);
        assert_eq!(r.status, 400);
        assert!(
            r.body
                .contains(r#""newest-versions":["2025-04-07","2024-07-17","2024-03-15"]"#),
            "{}",
            r.body
        );
        assert_eq!(
            e.handle(&get("/metadata/instance?api-version=1999-01-01", MD), now)
                .status,
            400
        );
        let r = e.handle(&get("/metadata/versions", MD), now);
        assert_eq!(r.status, 200);
        assert!(r.body.starts_with(r#"{"apiVersions":["2017-08-01""#));
        let r = e.handle(
            &get(
                "/metadata/instance?api-version=2021-02-01&api-version=2020-09-01",
                MD,
            ),
            now,
        );
        assert_eq!(r.status, 400, "duplicate parameters are refused");
    }

    #[test]
    fn azure_instance_routes_and_leaves() {
        let mut e = azure();
        let now = Instant::now();
        let r = e.handle(&get("/metadata/instance?api-version=2021-02-01", MD), now);
        assert!(
            r.body
                .contains(r#""vmId":"02aab8a4-74ef-476e-8182-f6d2ba4166a6""#)
        );
        let r = e.handle(
            &get(
                "/metadata/instance/compute/location?api-version=2021-02-01&format=text",
                MD,
            ),
            now,
        );
        assert_eq!((r.status, r.body.as_str()), (200, "westeurope"));
        let r = e.handle(
            &get(
                "/metadata/instance/compute/location?api-version=2021-02-01",
                MD,
            ),
            now,
        );
        assert_eq!(r.status, 400, "a leaf needs format=text");
        let r = e.handle(&get("/metadata/instance/network/interface/0/macAddress?api-version=2021-02-01&format=text", MD), now);
        assert_eq!(r.body, "6045BDA1B2C3");
        // Case-insensitive /metadata, and decoding before routing (the %3F smuggling IMDS allows).
        assert_eq!(
            e.handle(&get("/METADATA/instance?api-version=2021-02-01", MD), now)
                .status,
            200
        );
        let r = e.handle(
            &get("/metadata/scheduledevents%3Fapi-version=2019-08-01", MD),
            now,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            e.handle(&get("/metadata/nothing?api-version=2021-02-01", MD), now)
                .status,
            404
        );
        let mut post = get("/metadata/instance?api-version=2021-02-01", MD);
        post.method = "POST".into();
        assert_eq!(e.handle(&post, now).status, 405);
    }

    #[test]
    fn azure_tokens() {
        let mut e = azure();
        let now = Instant::now();
        let t = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fapi.kusto.windows.net";
        let r = e.handle(&get(t, MD), now);
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["resource"], "https://api.kusto.windows.net");
        assert_eq!(v["token_type"], "Bearer");
        assert!(v["expires_in"].is_string() && v["expires_on"].is_string());
        let r = e.handle(&get(&format!("{t}&client_id=nope"), MD), now);
        assert!(r.body.contains("Identity not found"));
        let both = format!("{t}&client_id=a&object_id=b");
        assert_eq!(e.handle(&get(&both, MD), now).status, 400);
        let mi = format!(
            "{t}&mi_res_id=/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/resourceGroups/MC_rg_aks_westeurope/providers/Microsoft.ManagedIdentity/userAssignedIdentities/aks-agentpool"
        );
        assert_eq!(
            e.handle(&get(&mi, MD), now).status,
            200,
            "mi_res_id alias, case-insensitive"
        );
        let r = e.handle(
            &get("/metadata/identity/oauth2/token?api-version=2018-02-01", MD),
            now,
        );
        assert_eq!(r.status, 400);
        let r = e.handle(
            &get(
                "/metadata/identity/oauth2/token?api-version=2017-08-01&resource=x",
                MD,
            ),
            now,
        );
        assert_eq!(r.status, 400);
    }

    #[test]
    fn azure_rate_limits() {
        let mut e = Emulator::new(Options::default());
        let now = Instant::now();
        let codes: Vec<u16> = (0..7)
            .map(|_| {
                e.handle(&get("/metadata/instance?api-version=2021-02-01", MD), now)
                    .status
            })
            .collect();
        assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429]);
        let later = now + Duration::from_millis(1100);
        assert_eq!(
            e.handle(&get("/metadata/instance?api-version=2021-02-01", MD), later)
                .status,
            200
        );
        let t = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x";
        let ok = (0..25)
            .filter(|_| e.handle(&get(t, MD), later).status == 200)
            .count();
        assert_eq!(ok, 20);
    }

    #[test]
    fn aws_imdsv2() {
        let mut e = Emulator::new(Options {
            flavor: Flavor::Aws,
            ..Default::default()
        });
        let now = Instant::now();
        assert_eq!(
            e.handle(&get("/latest/meta-data/instance-id", &[]), now)
                .status,
            401
        );
        let mut put = get(
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
        );
        put.method = "PUT".into();
        let token = e.handle(&put, now);
        assert_eq!(token.status, 200);
        let r = e.handle(
            &get(
                "/latest/meta-data/instance-id",
                &[("X-aws-ec2-metadata-token", &token.body)],
            ),
            now,
        );
        assert_eq!((r.status, r.body.as_str()), (200, "i-0123456789abcdef0"));
        let late = now + Duration::from_secs(61);
        assert_eq!(
            e.handle(
                &get(
                    "/latest/meta-data/instance-id",
                    &[("X-aws-ec2-metadata-token", &token.body)]
                ),
                late
            )
            .status,
            401
        );
        put.headers
            .push(("X-Forwarded-For".into(), "10.0.0.1".into()));
        assert_eq!(e.handle(&put, now).status, 403);
        let mut bad = get(
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", "0")],
        );
        bad.method = "PUT".into();
        assert_eq!(e.handle(&bad, now).status, 400);
    }

    #[test]
    fn aws_role_credentials_as_botocore_reads_them() {
        // botocore: PUT the token, list the role, GET its credentials (all four fields needed,
        // Expiration as %Y-%m-%dT%H:%M:%SZ).
        let mut e = Emulator::new(Options {
            flavor: Flavor::Aws,
            ..Default::default()
        });
        let now = Instant::now();
        let mut put = get(
            "/latest/api/token",
            &[("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
        );
        put.method = "PUT".into();
        let token = e.handle(&put, now).body;
        let auth = [("x-aws-ec2-metadata-token", token.as_str())];
        let r = e.handle(
            &get("/latest/meta-data/iam/security-credentials/", &auth),
            now,
        );
        assert_eq!((r.status, r.body.as_str()), (200, AWS_ROLE));
        let before = unix_now();
        let r = e.handle(
            &get(
                &format!("/latest/meta-data/iam/security-credentials/{AWS_ROLE}"),
                &auth,
            ),
            now,
        );
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["AccessKeyId"], AWS_ACCESS_KEY_ID);
        for field in ["SecretAccessKey", "Token", "Expiration", "LastUpdated"] {
            assert!(v[field].is_string(), "{field} in {}", r.body);
        }
        let expiration = v["Expiration"].as_str().unwrap_or_default();
        let expected: Vec<String> = (0..=2)
            .map(|d| rfc3339(before + d + AWS_CREDENTIALS_LIFETIME))
            .collect();
        assert!(expected.iter().any(|x| x == expiration), "{expiration}");
        assert_eq!(
            e.handle(
                &get(
                    "/latest/meta-data/iam/security-credentials/other-role",
                    &auth
                ),
                now
            )
            .status,
            404
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn gcp_metadata_flavor() {
        let mut e = Emulator::new(Options {
            flavor: Flavor::Gcp,
            ..Default::default()
        });
        let now = Instant::now();
        let r = e.handle(&get("/computeMetadata/v1/instance/name", &[]), now);
        assert_eq!(r.status, 403);
        assert!(r.body.contains("Missing Metadata-Flavor:Google header"));
        let r = e.handle(
            &get(
                "/computeMetadata/v1/instance/name",
                &[("Metadata-Flavor", "Google")],
            ),
            now,
        );
        assert_eq!(r.status, 200);
        assert!(
            r.headers
                .contains(&("Metadata-Flavor", "Google".to_owned()))
        );
        assert_eq!(e.handle(&get("/", &[]), now).status, 200);
        let xff = [
            ("Metadata-Flavor", "Google"),
            ("X-Forwarded-For", "1.2.3.4"),
        ];
        assert_eq!(
            e.handle(&get("/computeMetadata/v1/instance/name", &xff), now)
                .status,
            403
        );
    }
}
