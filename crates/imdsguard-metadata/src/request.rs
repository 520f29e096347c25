//! What an HTTP request to a metadata service asks for: a credential (which kind, for which
//! resource or audience, as which identity) or plain instance metadata; and the requests real
//! clients send (docs/metadata-services.md#what-clients-send).
//!
//! Paths are read as the services read them: percent-decoded before routing (so an encoded `?`
//! starts the query), Azure's `/metadata` case-insensitively. The reading does not depend on the
//! address the request went to, since one address carries several clouds' services.

use crate::percent::percent_decode;
use crate::services::Cloud;
use serde::Serialize;

/// An HTTP request target split as the metadata services read it: the path percent-decoded, the
/// query as decoded pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget {
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl RequestTarget {
    /// Reads a URL as Hubble records it (`http://host:80/metadata/…?a=b`) or an origin-form
    /// target (`/metadata/…`). The fragment is dropped; keys and values are decoded with the
    /// lenient decoder ([`percent_decode`]).
    pub fn parse(url: &str) -> RequestTarget {
        let rest = url
            .split_once("://")
            .map(|(_, after)| after.find('/').map_or("/", |i| &after[i..]))
            .unwrap_or(url);
        let rest = rest.split('#').next().unwrap_or_default();
        let (raw_path, raw_query) = rest.split_once('?').unwrap_or((rest, ""));
        let decoded = percent_decode(raw_path);
        // A `?` that only appears after decoding splits again, as IMDS does.
        let (path, extra) = match decoded.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (decoded.into_owned(), None),
        };
        let mut query = Vec::new();
        for part in extra.iter().map(String::as_str).chain([raw_query]) {
            for pair in part.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                query.push((
                    percent_decode(k).into_owned(),
                    percent_decode(v).into_owned(),
                ));
            }
        }
        RequestTarget { path, query }
    }

    /// The first value of `key` (services that accept a repeated key refuse the request anyway).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The credential this target asks for, from its method and path alone; see [`classify`]
    /// for what the headers change.
    pub fn credential_request(&self, method: &str) -> Option<CredentialRequest> {
        let path = self.path.trim_end_matches('/');
        let lower = path.to_ascii_lowercase();
        let plain = |kind, resource: &str| CredentialRequest {
            kind,
            resource: resource.to_owned(),
            identity: String::new(),
        };
        // `/metadata` is case-insensitive in IMDS; the rest of Azure's path is matched the same
        // way so that a look-alike spelling still shows up as a token request.
        if lower == "/metadata/identity/oauth2/token" {
            let identity = ["client_id", "object_id", "msi_res_id", "mi_res_id"]
                .iter()
                .find_map(|k| self.param(k).map(|v| format!("{k}={v}")))
                .unwrap_or_default();
            return Some(CredentialRequest {
                kind: CredentialKind::AzureManagedIdentity,
                resource: self.param("resource").unwrap_or_default().to_owned(),
                identity,
            });
        }
        if lower == "/latest/api/token" && method.eq_ignore_ascii_case("PUT") {
            return Some(plain(CredentialKind::AwsSessionToken, ""));
        }
        if let Some(role) = under(path, "/latest/meta-data/iam/security-credentials") {
            return Some(plain(CredentialKind::AwsRoleCredentials, role));
        }
        if let Some(role) = under(path, "/latest/meta-data/ram/security-credentials") {
            return Some(plain(CredentialKind::AlibabaRoleCredentials, role));
        }
        if path == "/v1/credentials" {
            return Some(plain(CredentialKind::EksPodIdentity, ""));
        }
        // The WireServer's certificates and the HostGAPlugin's extension settings carry the VM's
        // secrets (encrypted to the VM agent's key, which a pod could ask for its own).
        if (lower == "/machine" || lower.starts_with("/machine/"))
            && self
                .param("comp")
                .is_some_and(|c| c.eq_ignore_ascii_case("certificates"))
        {
            return Some(plain(CredentialKind::WireServerCertificates, ""));
        }
        if lower == "/vmsettings" {
            return Some(plain(CredentialKind::HostGaPluginSettings, ""));
        }
        let account = path.strip_prefix("/computeMetadata/v1/instance/service-accounts/")?;
        let (account, what) = account.rsplit_once('/')?;
        let (kind, resource) = match what {
            "token" => (
                CredentialKind::GcpAccessToken,
                self.param("scopes").unwrap_or_default(),
            ),
            "identity" => (
                CredentialKind::GcpIdentityToken,
                self.param("audience").unwrap_or_default(),
            ),
            _ => return None,
        };
        Some(CredentialRequest {
            kind,
            resource: resource.to_owned(),
            identity: account.to_owned(),
        })
    }
}

/// `rest` when `path` is `prefix` or below it (`prefix/rest`), with leading slashes dropped.
fn under<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then(|| rest.trim_start_matches('/'))
}

/// What a credential request asks for. The serialized names are the UI's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    /// Azure `GET /metadata/identity/oauth2/token?resource=…` (a managed identity's token).
    AzureManagedIdentity,
    /// AWS IMDSv2 `PUT /latest/api/token` (a session token for later metadata reads; Alibaba
    /// Cloud's hardened mode uses the same path).
    AwsSessionToken,
    /// AWS `GET /latest/meta-data/iam/security-credentials/<role>` (the role's keys; no role:
    /// the role's name).
    AwsRoleCredentials,
    /// GCP `…/service-accounts/<account>/token` (an OAuth access token).
    GcpAccessToken,
    /// GCP `…/service-accounts/<account>/identity?audience=…` (an OIDC identity token).
    GcpIdentityToken,
    /// The EKS Pod Identity agent's `GET /v1/credentials` (the pod's role's keys).
    EksPodIdentity,
    /// Alibaba Cloud `GET /latest/meta-data/ram/security-credentials/<role>` (the RAM role's
    /// STS keys).
    AlibabaRoleCredentials,
    /// Azure WireServer `GET /machine/…?comp=certificates` (the VM's certificates).
    WireServerCertificates,
    /// Azure HostGAPlugin `GET /vmSettings` (extension settings, protected ones included).
    HostGaPluginSettings,
}

impl CredentialKind {
    pub fn cloud(self) -> Cloud {
        match self {
            CredentialKind::AzureManagedIdentity
            | CredentialKind::WireServerCertificates
            | CredentialKind::HostGaPluginSettings => Cloud::Azure,
            CredentialKind::AwsSessionToken
            | CredentialKind::AwsRoleCredentials
            | CredentialKind::EksPodIdentity => Cloud::Aws,
            CredentialKind::GcpAccessToken | CredentialKind::GcpIdentityToken => Cloud::Gcp,
            CredentialKind::AlibabaRoleCredentials => Cloud::Alibaba,
        }
    }

    /// Whether the answer lets its holder act as an identity beyond the metadata service. An
    /// IMDSv2 session token only opens further metadata reads, so it does not.
    pub fn grants_credentials(self) -> bool {
        self != CredentialKind::AwsSessionToken
    }

    /// The kind in words.
    pub fn name(self) -> &'static str {
        match self {
            CredentialKind::AzureManagedIdentity => "Azure managed identity token",
            CredentialKind::AwsSessionToken => "AWS IMDSv2 session token",
            CredentialKind::AwsRoleCredentials => "AWS role credentials",
            CredentialKind::GcpAccessToken => "GCP access token",
            CredentialKind::GcpIdentityToken => "GCP identity token",
            CredentialKind::EksPodIdentity => "EKS Pod Identity credentials",
            CredentialKind::AlibabaRoleCredentials => "Alibaba Cloud RAM role credentials",
            CredentialKind::WireServerCertificates => "Azure WireServer certificates",
            CredentialKind::HostGaPluginSettings => "Azure HostGAPlugin extension settings",
        }
    }

    /// Why a request for this credential with these headers gets none, if it does not.
    fn refusal(self, headers: &[(String, String)]) -> Option<Refusal> {
        let value = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let forwarded_refused = matches!(
            self,
            CredentialKind::AzureManagedIdentity
                | CredentialKind::AwsSessionToken
                | CredentialKind::GcpAccessToken
                | CredentialKind::GcpIdentityToken
        );
        if forwarded_refused && value("X-Forwarded-For").is_some() {
            return Some(Refusal::ForwardedFor);
        }
        match self {
            // The token endpoint wants `true` in lower case, unlike the rest of IMDS.
            CredentialKind::AzureManagedIdentity => {
                (value("Metadata") != Some("true")).then_some(Refusal::MissingHeader("Metadata"))
            }
            CredentialKind::GcpAccessToken | CredentialKind::GcpIdentityToken => {
                let flavor = value("Metadata-Flavor") == Some("Google");
                let legacy = value("X-Google-Metadata-Request")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                (!flavor && !legacy).then_some(Refusal::MissingHeader("Metadata-Flavor"))
            }
            CredentialKind::AwsSessionToken => {
                let aws = value("X-aws-ec2-metadata-token-ttl-seconds").is_some();
                let alibaba = value("X-aliyun-ecs-metadata-token-ttl-seconds").is_some();
                (!aws && !alibaba).then_some(Refusal::MissingHeader(
                    "X-aws-ec2-metadata-token-ttl-seconds",
                ))
            }
            CredentialKind::EksPodIdentity => value("Authorization")
                .is_none()
                .then_some(Refusal::MissingHeader("Authorization")),
            // IMDSv1 may be allowed, and the rest have no header that is known to be required.
            CredentialKind::AwsRoleCredentials
            | CredentialKind::AlibabaRoleCredentials
            | CredentialKind::WireServerCertificates
            | CredentialKind::HostGaPluginSettings => None,
        }
    }
}

/// A request for a credential.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CredentialRequest {
    pub kind: CredentialKind,
    /// What the token is for: Azure's `resource`, AWS's or Alibaba's role, GCP's `scopes` or
    /// `audience` (empty when the request does not say).
    pub resource: String,
    /// Which identity was asked for: Azure's `client_id`/`object_id`/`msi_res_id`/`mi_res_id`
    /// (as `key=value`), GCP's service account; empty for the default one.
    pub identity: String,
}

/// Why a metadata service refuses a credential request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The named header, which the service requires, is missing or has the wrong value.
    MissingHeader(&'static str),
    /// `X-Forwarded-For` is present: the request came through a proxy.
    ForwardedFor,
}

/// What a request means to the service that gets it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Meaning {
    /// It asks for a credential, and would get one if the identity exists.
    Credential(CredentialRequest),
    /// It names a credential but the service refuses it for its headers. SDKs probe for IMDS
    /// this way (Azure's Go SDK sends a token request without `Metadata`).
    RefusedCredential {
        request: CredentialRequest,
        reason: Refusal,
    },
    /// Anything else: instance metadata, a listing, a probe of `/`.
    Metadata,
}

/// What `method` `target` with `headers` (names in any case) asks a metadata service for.
pub fn classify(method: &str, target: &RequestTarget, headers: &[(String, String)]) -> Meaning {
    let Some(request) = target.credential_request(method) else {
        return Meaning::Metadata;
    };
    match request.kind.refusal(headers) {
        Some(reason) => Meaning::RefusedCredential { request, reason },
        None => Meaning::Credential(request),
    }
}

/// One request a real client sends to a metadata service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypicalRequest {
    pub cloud: Cloud,
    pub method: &'static str,
    /// The request target, query included, as Envoy matches `path` against it.
    pub path: &'static str,
}

impl TypicalRequest {
    /// The path without its query.
    pub fn route(&self) -> &'static str {
        self.path.split_once('?').map_or(self.path, |(r, _)| r)
    }

    /// Whether the answer is a credential (see [`CredentialKind::grants_credentials`]).
    pub fn grants_credentials(&self) -> bool {
        RequestTarget::parse(self.path)
            .credential_request(self.method)
            .is_some_and(|c| c.kind.grants_credentials())
    }
}

const fn req(cloud: Cloud, method: &'static str, path: &'static str) -> TypicalRequest {
    TypicalRequest {
        cloud,
        method,
        path,
    }
}

/// What SDKs and agents send to 169.254.169.254, Azure's first: the linter tests policies
/// against these, in this order.
pub const TYPICAL_REQUESTS: &[TypicalRequest] = &[
    req(
        Cloud::Azure,
        "GET",
        "/metadata/instance?api-version=2021-02-01",
    ),
    req(
        Cloud::Azure,
        "GET",
        "/metadata/instance/compute?api-version=2021-02-01&format=json",
    ),
    req(
        Cloud::Azure,
        "GET",
        "/metadata/instance/compute/location?api-version=2021-02-01&format=text",
    ),
    req(
        Cloud::Azure,
        "GET",
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F",
    ),
    req(
        Cloud::Azure,
        "GET",
        "/metadata/identity/info?api-version=2018-02-01",
    ),
    req(
        Cloud::Azure,
        "GET",
        "/metadata/attested/document?api-version=2020-09-01",
    ),
    req(
        Cloud::Azure,
        "GET",
        "/metadata/scheduledevents?api-version=2020-07-01",
    ),
    req(
        Cloud::Azure,
        "GET",
        "/metadata/loadbalancer?api-version=2020-10-01",
    ),
    req(Cloud::Azure, "GET", "/metadata/versions"),
    req(Cloud::Aws, "PUT", "/latest/api/token"),
    req(Cloud::Aws, "GET", "/latest/meta-data/"),
    req(Cloud::Aws, "GET", "/latest/meta-data/instance-id"),
    req(Cloud::Aws, "GET", "/latest/meta-data/placement/region"),
    req(Cloud::Aws, "GET", "/latest/meta-data/iam/info"),
    req(
        Cloud::Aws,
        "GET",
        "/latest/meta-data/iam/security-credentials/node-instance-role",
    ),
    req(
        Cloud::Aws,
        "GET",
        "/latest/dynamic/instance-identity/document",
    ),
    req(Cloud::Aws, "GET", "/latest/user-data"),
    req(
        Cloud::Gcp,
        "GET",
        "/computeMetadata/v1/instance/service-accounts/default/token",
    ),
    req(Cloud::Gcp, "GET", "/computeMetadata/v1/project/project-id"),
    req(Cloud::Gcp, "GET", "/computeMetadata/v1/instance/zone"),
    req(
        Cloud::Gcp,
        "GET",
        "/computeMetadata/v1/instance/?recursive=true",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn kind_of(method: &str, url: &str) -> Option<(CredentialKind, String, String)> {
        RequestTarget::parse(url)
            .credential_request(method)
            .map(|c| (c.kind, c.resource, c.identity))
    }

    #[test]
    fn targets_split_like_imds_reads_them() {
        let t = RequestTarget::parse(
            "http://169.254.169.254:80/metadata/identity/oauth2/token?api-version=2021-02-01&resource=https%3A%2F%2Fvault.azure.net",
        );
        assert_eq!(t.path, "/metadata/identity/oauth2/token");
        assert_eq!(t.param("api-version"), Some("2021-02-01"));
        assert_eq!(t.param("resource"), Some("https://vault.azure.net"));

        let t = RequestTarget::parse("/metadata/scheduledevents%3Fapi-version=2019-08-01");
        assert_eq!(t.path, "/metadata/scheduledevents");
        assert_eq!(t.param("api-version"), Some("2019-08-01"));

        let t = RequestTarget::parse("http://[fd00:ec2::254]:80");
        assert_eq!(t.path, "/");
        assert!(t.query.is_empty());

        let t = RequestTarget::parse("/a%zz/b?k%3D=v%4#frag");
        assert_eq!(t.path, "/a%zz/b");
        assert_eq!(t.query, [("k=".to_owned(), "v%4".to_owned())]);
    }

    #[test]
    fn azure_managed_identity() {
        let got = kind_of(
            "GET",
            "/METADATA/identity/oauth2/token/?resource=https%3A%2F%2Fmanagement.azure.com%2F&client_id=abc",
        );
        assert_eq!(
            got,
            Some((
                CredentialKind::AzureManagedIdentity,
                "https://management.azure.com/".into(),
                "client_id=abc".into()
            ))
        );
        let got = kind_of(
            "GET",
            "/metadata/identity/oauth2/token?resource=r&mi_res_id=/subscriptions/x",
        );
        assert_eq!(got.map(|g| g.2), Some("mi_res_id=/subscriptions/x".into()));
        // Smuggled through an encoded `?`: IMDS sees the token endpoint, so does this.
        let got = kind_of("GET", "/metadata/identity/oauth2/token%3Fresource=r");
        assert_eq!(got.map(|g| g.1), Some("r".into()));
        assert_eq!(kind_of("GET", "/metadata/identity/info"), None);
    }

    #[test]
    fn aws_session_token_and_role_credentials() {
        assert_eq!(
            kind_of("PUT", "http://169.254.169.254/latest/api/token"),
            Some((
                CredentialKind::AwsSessionToken,
                String::new(),
                String::new()
            ))
        );
        assert_eq!(kind_of("GET", "/latest/api/token"), None);
        assert_eq!(
            kind_of(
                "GET",
                "/latest/meta-data/iam/security-credentials/node-role"
            ),
            Some((
                CredentialKind::AwsRoleCredentials,
                "node-role".into(),
                String::new()
            ))
        );
        // The listing of role names counts: it is the first step of every SDK.
        assert_eq!(
            kind_of("GET", "/latest/meta-data/iam/security-credentials/").map(|g| g.0),
            Some(CredentialKind::AwsRoleCredentials)
        );
        assert_eq!(
            kind_of("GET", "/latest/meta-data/iam/security-credentialsx"),
            None
        );
        assert_eq!(kind_of("GET", "/latest/meta-data/iam/info"), None);
    }

    #[test]
    fn eks_pod_identity() {
        assert_eq!(
            kind_of("GET", "http://169.254.170.23/v1/credentials").map(|g| g.0),
            Some(CredentialKind::EksPodIdentity)
        );
        assert_eq!(kind_of("GET", "/v1/credentialsx"), None);
    }

    #[test]
    fn gcp_tokens() {
        assert_eq!(
            kind_of(
                "GET",
                "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token?scopes=https://www.googleapis.com/auth/cloud-platform",
            ),
            Some((
                CredentialKind::GcpAccessToken,
                "https://www.googleapis.com/auth/cloud-platform".into(),
                "default".into()
            ))
        );
        assert_eq!(
            kind_of(
                "GET",
                "/computeMetadata/v1/instance/service-accounts/sa@p.iam.gserviceaccount.com/identity?audience=https%3A%2F%2Fexample.com",
            ),
            Some((
                CredentialKind::GcpIdentityToken,
                "https://example.com".into(),
                "sa@p.iam.gserviceaccount.com".into()
            ))
        );
        assert_eq!(
            kind_of(
                "GET",
                "/computeMetadata/v1/instance/service-accounts/default/email"
            ),
            None
        );
        assert_eq!(
            kind_of("GET", "/computeMetadata/v1/project/project-id"),
            None
        );
    }

    #[test]
    fn alibaba_ram_role() {
        assert_eq!(
            kind_of(
                "GET",
                "http://100.100.100.200/latest/meta-data/ram/security-credentials/EcsRamRole"
            ),
            Some((
                CredentialKind::AlibabaRoleCredentials,
                "EcsRamRole".into(),
                String::new()
            ))
        );
        assert_eq!(
            CredentialKind::AlibabaRoleCredentials.cloud(),
            Cloud::Alibaba
        );
    }

    #[test]
    fn wireserver_secrets() {
        assert_eq!(
            kind_of(
                "GET",
                "http://168.63.129.16/machine/abc/def?comp=certificates&incarnation=3"
            )
            .map(|g| g.0),
            Some(CredentialKind::WireServerCertificates)
        );
        assert_eq!(kind_of("GET", "/machine/?comp=goalstate"), None);
        assert_eq!(
            kind_of("GET", "http://168.63.129.16:32526/vmSettings").map(|g| g.0),
            Some(CredentialKind::HostGaPluginSettings)
        );
    }

    #[test]
    fn instance_metadata_is_no_credential() {
        for (method, url) in [
            ("GET", "/metadata/instance?api-version=2021-02-01"),
            ("GET", "/"),
            ("GET", "/latest/meta-data/instance-id"),
            ("GET", "/openstack/latest/meta_data.json"),
            ("GET", ""),
        ] {
            assert_eq!(kind_of(method, url), None, "{method} {url}");
            assert_eq!(
                classify(method, &RequestTarget::parse(url), &[]),
                Meaning::Metadata
            );
        }
    }

    #[test]
    fn headers_decide_whether_a_credential_request_is_answered() {
        let azure = RequestTarget::parse("/metadata/identity/oauth2/token?resource=r");
        assert!(matches!(
            classify("GET", &azure, &headers(&[("metadata", "true")])),
            Meaning::Credential(_)
        ));
        for h in [vec![], headers(&[("Metadata", "True")])] {
            assert!(matches!(
                classify("GET", &azure, &h),
                Meaning::RefusedCredential {
                    reason: Refusal::MissingHeader("Metadata"),
                    ..
                }
            ));
        }
        assert!(matches!(
            classify(
                "GET",
                &azure,
                &headers(&[("Metadata", "true"), ("X-Forwarded-For", "10.0.0.1")])
            ),
            Meaning::RefusedCredential {
                reason: Refusal::ForwardedFor,
                ..
            }
        ));

        let gcp =
            RequestTarget::parse("/computeMetadata/v1/instance/service-accounts/default/token");
        assert!(matches!(
            classify("GET", &gcp, &headers(&[("Metadata-Flavor", "Google")])),
            Meaning::Credential(_)
        ));
        assert!(matches!(
            classify(
                "GET",
                &gcp,
                &headers(&[("X-Google-Metadata-Request", "True")])
            ),
            Meaning::Credential(_)
        ));
        assert!(matches!(
            classify("GET", &gcp, &[]),
            Meaning::RefusedCredential { .. }
        ));

        let session = RequestTarget::parse("/latest/api/token");
        assert!(matches!(
            classify(
                "PUT",
                &session,
                &headers(&[("X-aws-ec2-metadata-token-ttl-seconds", "21600")])
            ),
            Meaning::Credential(_)
        ));
        assert!(matches!(
            classify(
                "PUT",
                &session,
                &headers(&[("x-aliyun-ecs-metadata-token-ttl-seconds", "60")])
            ),
            Meaning::Credential(_)
        ));
        assert!(matches!(
            classify("PUT", &session, &[]),
            Meaning::RefusedCredential { .. }
        ));

        let eks = RequestTarget::parse("/v1/credentials");
        assert!(matches!(
            classify("GET", &eks, &[]),
            Meaning::RefusedCredential {
                reason: Refusal::MissingHeader("Authorization"),
                ..
            }
        ));
        assert!(matches!(
            classify("GET", &eks, &headers(&[("Authorization", "eyJ…")])),
            Meaning::Credential(_)
        ));

        // IMDSv1 may be allowed: a role request without a token is still a credential request.
        let role = RequestTarget::parse("/latest/meta-data/iam/security-credentials/r");
        assert!(matches!(
            classify("GET", &role, &[]),
            Meaning::Credential(_)
        ));
    }

    #[test]
    fn typical_requests_and_the_credentials_among_them() {
        let credentials: Vec<(Cloud, &str)> = TYPICAL_REQUESTS
            .iter()
            .filter(|r| r.grants_credentials())
            .map(|r| (r.cloud, r.route()))
            .collect();
        assert_eq!(
            credentials,
            [
                (Cloud::Azure, "/metadata/identity/oauth2/token"),
                (
                    Cloud::Aws,
                    "/latest/meta-data/iam/security-credentials/node-instance-role"
                ),
                (
                    Cloud::Gcp,
                    "/computeMetadata/v1/instance/service-accounts/default/token"
                ),
            ]
        );
        assert_eq!(TYPICAL_REQUESTS[0].cloud, Cloud::Azure);
        assert_eq!(TYPICAL_REQUESTS[0].route(), "/metadata/instance");
        assert!(!CredentialKind::AwsSessionToken.grants_credentials());
    }
}
