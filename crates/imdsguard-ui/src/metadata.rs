//! What counts as a call to a cloud metadata service (docs/metadata-services.md), and which of
//! those calls ask for credentials.
//!
//! The addresses are the ones the datapath protects (`imdsguard_datapath::sync::DEFAULT_PROTECTED`,
//! kept in step by a test): Azure IMDS, AWS IMDS and GCP's metadata server at 169.254.169.254 (any
//! port), AWS's and GCP's IPv6 metadata addresses fd00:ec2::254 and fd20:ce::254 (any port), and
//! Azure's WireServer at 168.63.129.16 on
//! the ports AKS blocks for pods (TCP 80 and 32526; its DNS on 53 is ordinary traffic).

use serde::Serialize;
use std::net::IpAddr;

/// A metadata service, as the UI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetadataService {
    /// Azure IMDS, AWS IMDS and GCP's metadata server (IPv4 and IPv6).
    Imds,
    /// Azure's WireServer (VM agent channel; third parties report it also answers IMDS paths).
    WireServer,
}

impl MetadataService {
    pub fn label(self) -> &'static str {
        match self {
            MetadataService::Imds => "IMDS",
            MetadataService::WireServer => "WireServer",
        }
    }
}

const IMDS_V4: [u8; 4] = [169, 254, 169, 254];
const WIRESERVER: [u8; 4] = [168, 63, 129, 16];
/// fd00:ec2::254 (AWS)
const IMDS_V6: [u16; 8] = [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254];
/// fd20:ce::254 (GCP)
const GCP_V6: [u16; 8] = [0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254];
const WIRESERVER_PORTS: [u32; 2] = [80, 32526];

/// The metadata service at `ip`:`port` (an address as Hubble prints it; IPv4-mapped IPv6 counts
/// as IPv4), or None.
pub fn metadata_service(ip: &str, port: u32) -> Option<MetadataService> {
    let ip: IpAddr = ip.parse().ok()?;
    match ip.to_canonical() {
        IpAddr::V4(v4) if v4.octets() == IMDS_V4 => Some(MetadataService::Imds),
        IpAddr::V4(v4) if v4.octets() == WIRESERVER && WIRESERVER_PORTS.contains(&port) => {
            Some(MetadataService::WireServer)
        }
        IpAddr::V6(v6) if v6.segments() == IMDS_V6 || v6.segments() == GCP_V6 => {
            Some(MetadataService::Imds)
        }
        _ => None,
    }
}

/// What a credential request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    /// Azure `GET /metadata/identity/oauth2/token?resource=…` (a managed identity's token).
    AzureManagedIdentity,
    /// AWS IMDSv2 `PUT /latest/api/token` (a session token for later metadata reads).
    AwsSessionToken,
    /// AWS `GET /latest/meta-data/iam/security-credentials/<role>` (the role's keys; no role: the
    /// role's name).
    AwsRoleCredentials,
    /// GCP `…/service-accounts/<account>/token` (an OAuth access token).
    GcpAccessToken,
    /// GCP `…/service-accounts/<account>/identity?audience=…` (an OIDC identity token).
    GcpIdentityToken,
}

/// A request for credentials, read from an HTTP method and URL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CredentialRequest {
    pub kind: CredentialKind,
    /// What the token is for: Azure's `resource`, AWS's role, GCP's `scopes` or `audience`
    /// (empty when the request does not say).
    pub resource: String,
    /// Which identity was asked for: Azure's `client_id`/`object_id`/`msi_res_id`/`mi_res_id`
    /// (as `key=value`), GCP's service account; empty for the default one.
    pub identity: String,
}

/// An HTTP request target split as the metadata services read it: the path percent-decoded (IMDS
/// decodes before routing, so `%3F` in a path starts the query), the query as decoded pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget {
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl RequestTarget {
    /// Reads a URL as Hubble records it (`http://169.254.169.254:80/metadata/…?a=b`) or an
    /// origin-form target (`/metadata/…`).
    pub fn parse(url: &str) -> RequestTarget {
        let rest = url
            .split_once("://")
            .map(|(_, after)| after.find('/').map_or("/", |i| &after[i..]))
            .unwrap_or(url);
        let rest = rest.split('#').next().unwrap_or_default();
        let (raw_path, raw_query) = rest.split_once('?').unwrap_or((rest, ""));
        let decoded = percent_decode(raw_path);
        // A `?` that only appears after decoding splits again, as IMDS does
        // (docs/metadata-services.md).
        let (path, extra) = match decoded.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (decoded, None),
        };
        let mut query = Vec::new();
        for part in extra.iter().map(String::as_str).chain([raw_query]) {
            for pair in part.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                query.push((percent_decode(k), percent_decode(v)));
            }
        }
        RequestTarget { path, query }
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The credential request this is, if any (docs/metadata-services.md).
    pub fn credential_request(&self, method: &str) -> Option<CredentialRequest> {
        let path = self.path.trim_end_matches('/');
        let lower = path.to_ascii_lowercase();
        // `/metadata` is case-insensitive in IMDS; the rest of the path is matched the same way
        // so that a look-alike spelling still shows up as a token request.
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
            return Some(CredentialRequest {
                kind: CredentialKind::AwsSessionToken,
                resource: String::new(),
                identity: String::new(),
            });
        }
        if let Some(role) = path.strip_prefix("/latest/meta-data/iam/security-credentials") {
            return Some(CredentialRequest {
                kind: CredentialKind::AwsRoleCredentials,
                resource: role.trim_start_matches('/').to_owned(),
                identity: String::new(),
            });
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

/// Decodes `%XX` escapes; a malformed escape stays as it is, and bytes that are not UTF-8 are
/// replaced (this text is for display and matching, never forwarded).
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_addresses_and_ports() {
        use MetadataService::*;
        for (ip, port, want) in [
            ("169.254.169.254", 80, Some(Imds)),
            ("169.254.169.254", 8080, Some(Imds)),
            ("::ffff:169.254.169.254", 80, Some(Imds)),
            ("fd00:ec2::254", 80, Some(Imds)),
            ("fd00:ec2:0:0::254", 80, Some(Imds)),
            ("fd20:ce::254", 80, Some(Imds)),
            ("168.63.129.16", 80, Some(WireServer)),
            ("168.63.129.16", 32526, Some(WireServer)),
            ("168.63.129.16", 53, None),
            ("169.254.169.253", 80, None),
            ("fd00:ec2::23", 80, None),
            ("10.0.0.1", 80, None),
            ("", 80, None),
            ("not an ip", 80, None),
        ] {
            assert_eq!(metadata_service(ip, port), want, "{ip}:{port}");
        }
    }

    /// The UI reports on exactly the addresses the datapath keeps pods away from.
    #[cfg(target_os = "linux")]
    #[test]
    fn same_addresses_as_the_datapath_protects() {
        for cidr in imdsguard_datapath::sync::DEFAULT_PROTECTED {
            let (ip, len) = cidr.split_once('/').unwrap();
            assert!(len == "32" || len == "128", "{cidr}");
            assert!(metadata_service(ip, 80).is_some(), "{cidr}");
        }
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

        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%zz%41"), "a%zzA");
    }

    #[test]
    fn credential_requests_of_each_cloud() {
        use CredentialKind::*;
        let cases = [
            (
                "GET",
                "http://169.254.169.254:80/metadata/identity/oauth2/token?api-version=2021-02-01&resource=https://api.kusto.windows.net",
                Some((AzureManagedIdentity, "https://api.kusto.windows.net", "")),
            ),
            (
                "GET",
                "/METADATA/identity/oauth2/token/?resource=https%3A%2F%2Fmanagement.azure.com%2F&client_id=abc",
                Some((
                    AzureManagedIdentity,
                    "https://management.azure.com/",
                    "client_id=abc",
                )),
            ),
            (
                "PUT",
                "http://169.254.169.254/latest/api/token",
                Some((AwsSessionToken, "", "")),
            ),
            ("GET", "http://169.254.169.254/latest/api/token", None),
            (
                "GET",
                "http://169.254.169.254/latest/meta-data/iam/security-credentials/node-role",
                Some((AwsRoleCredentials, "node-role", "")),
            ),
            (
                "GET",
                "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token?scopes=https://www.googleapis.com/auth/cloud-platform",
                Some((
                    GcpAccessToken,
                    "https://www.googleapis.com/auth/cloud-platform",
                    "default",
                )),
            ),
            (
                "GET",
                "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/sa@p.iam.gserviceaccount.com/identity?audience=https://example.com",
                Some((
                    GcpIdentityToken,
                    "https://example.com",
                    "sa@p.iam.gserviceaccount.com",
                )),
            ),
            (
                "GET",
                "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/email",
                None,
            ),
            (
                "GET",
                "http://169.254.169.254/metadata/instance?api-version=2021-02-01",
                None,
            ),
        ];
        for (method, url, want) in cases {
            let got = RequestTarget::parse(url).credential_request(method);
            let got = got
                .as_ref()
                .map(|c| (c.kind, c.resource.as_str(), c.identity.as_str()));
            assert_eq!(got, want, "{method} {url}");
        }
    }
}
