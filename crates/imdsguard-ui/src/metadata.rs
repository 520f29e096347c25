//! What counts as a call to a cloud metadata service, and which of those calls ask for
//! credentials. The knowledge is imdsguard-metadata's (docs/metadata-services.md): its table of
//! services, the same one the datapath protects by default, and its reading of request targets.
//! This module only adapts it to flows, whose addresses are text and whose ports are `u32`.

use std::net::IpAddr;

/// A metadata service as the UI names it (`IMDS`, `WireServer` …; serialized `imds`,
/// `wire-server` …).
pub use imdsguard_metadata::Kind as MetadataService;
pub use imdsguard_metadata::{CredentialKind, CredentialRequest, RequestTarget};

/// The metadata service at `ip`:`port` (an address as Hubble prints it; IPv4-mapped IPv6 counts
/// as IPv4), or None.
pub fn metadata_service(ip: &str, port: u32) -> Option<MetadataService> {
    let ip: IpAddr = ip.parse().ok()?;
    // A port past u16 comes from no real flow; as 0, which no row lists, it still finds the
    // services that own every port of their address.
    let port = u16::try_from(port).unwrap_or(0);
    imdsguard_metadata::kind_at(ip, port)
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
            ("169.254.169.254", 70_000, Some(Imds)),
            ("::ffff:169.254.169.254", 80, Some(Imds)),
            ("fd00:ec2::254", 80, Some(Imds)),
            ("fd00:ec2:0:0::254", 80, Some(Imds)),
            ("fd20:ce::254", 80, Some(Imds)),
            ("168.63.129.16", 80, Some(WireServer)),
            ("168.63.129.16", 32526, Some(WireServer)),
            ("::ffff:168.63.129.16", 32526, Some(WireServer)),
            ("168.63.129.16", 53, None),
            ("168.63.129.16", 70_000, None),
            ("169.254.169.253", 80, None),
            ("fd00:ec2::23", 80, Some(PodIdentityAgent)),
            ("169.254.170.23", 80, Some(PodIdentityAgent)),
            ("169.254.169.252", 988, Some(GkeMetadataServer)),
            ("169.254.169.252", 80, None),
            ("100.100.100.200", 80, Some(Imds)),
            ("fe80::a9fe:a9fe", 80, Some(Imds)),
            ("10.0.0.1", 80, None),
            ("", 80, None),
            ("not an ip", 80, None),
        ] {
            assert_eq!(metadata_service(ip, port), want, "{ip}:{port}");
        }
    }

    /// assets/app.js names services and credentials by these.
    #[test]
    fn json_names_the_page_knows() {
        use serde_json::json;
        for (kind, name) in [
            (MetadataService::Imds, "imds"),
            (MetadataService::WireServer, "wire-server"),
            (MetadataService::PodIdentityAgent, "pod-identity-agent"),
            (MetadataService::GkeMetadataServer, "gke-metadata-server"),
        ] {
            assert_eq!(json!(kind), json!(name));
        }
        for (kind, name) in [
            (
                CredentialKind::AzureManagedIdentity,
                "azure-managed-identity",
            ),
            (CredentialKind::AwsSessionToken, "aws-session-token"),
            (CredentialKind::AwsRoleCredentials, "aws-role-credentials"),
            (CredentialKind::GcpAccessToken, "gcp-access-token"),
            (CredentialKind::GcpIdentityToken, "gcp-identity-token"),
            (CredentialKind::EksPodIdentity, "eks-pod-identity"),
            (
                CredentialKind::AlibabaRoleCredentials,
                "alibaba-role-credentials",
            ),
            (
                CredentialKind::WireServerCertificates,
                "wire-server-certificates",
            ),
            (
                CredentialKind::HostGaPluginSettings,
                "host-ga-plugin-settings",
            ),
        ] {
            assert_eq!(json!(kind), json!(name));
        }
    }

    /// The UI reports on every address the datapath keeps pods away from by default.
    #[test]
    fn same_addresses_as_the_datapath_protects() {
        for net in imdsguard_metadata::protected_prefixes() {
            assert_eq!(net.prefix_len(), net.max_prefix_len(), "{net}");
            let ip = net.addr().to_string();
            let found = [80, 988]
                .iter()
                .any(|p| metadata_service(&ip, *p).is_some());
            assert!(found, "{net}");
        }
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
                "http://169.254.170.23/v1/credentials",
                Some((EksPodIdentity, "", "")),
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
