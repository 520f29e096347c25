//! What cloud metadata traffic looks like to the checks: imdsguard-metadata's addresses and the
//! requests real clients send (docs/metadata-services.md), as the engine's types. The checks test
//! policies against these.

use imdsguard_metadata::{Cloud, Service};
use imdsguard_policy::HttpRequest;
use std::net::IpAddr;

pub use imdsguard_metadata::{TYPICAL_REQUESTS, TypicalRequest};

/// Azure IMDS, AWS IMDS and the GCP metadata server all answer here.
pub const IMDS_V4: IpAddr = IpAddr::V4(imdsguard_metadata::IMDS_V4);

/// Azure's WireServer: it serves instance metadata and the HostGAPlugin too.
pub const WIRESERVER: IpAddr = IpAddr::V4(imdsguard_metadata::WIRESERVER);
pub const WIRESERVER_PORTS: [u16; 2] = imdsguard_metadata::WIRESERVER_PORTS;

/// The IPv6 metadata addresses IG1502 looks at, with their cloud. Only AWS's and GCP's IMDS, as
/// the check documents (docs/policy-lint.md): the table's other IPv6 rows (the EKS Pod Identity
/// agent, OpenStack's link-local address) would widen what the check reports.
pub fn imds_v6() -> impl Iterator<Item = (IpAddr, Cloud)> {
    [Service::AwsImds, Service::GcpMetadata]
        .into_iter()
        .flat_map(Service::endpoints)
        .filter(|e| e.address.is_ipv6())
        .map(|e| (e.address, e.service.cloud()))
}

/// A typical request as the proxy would judge it.
pub trait ToHttp {
    fn http(&self, host: IpAddr) -> HttpRequest;
}

impl ToHttp for TypicalRequest {
    /// With the header the cloud requires; AWS requires none, so its requests carry what an SDK
    /// sends anyway.
    fn http(&self, host: IpAddr) -> HttpRequest {
        let header = self
            .cloud
            .required_header()
            .unwrap_or(("User-Agent", "aws-sdk"));
        HttpRequest {
            method: self.method.to_owned(),
            path: self.path.to_owned(),
            host: host.to_string(),
            headers: vec![(header.0.to_owned(), header.1.to_owned())],
        }
    }
}

/// The Azure instance-metadata request every check uses to ask "is IMDS reachable?".
pub fn instance_request() -> &'static TypicalRequest {
    &TYPICAL_REQUESTS[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checks_see_the_same_addresses_as_before() {
        let v6: Vec<String> = imds_v6().map(|(ip, c)| format!("{ip} ({c})")).collect();
        assert_eq!(v6, ["fd00:ec2::254 (AWS)", "fd20:ce::254 (GCP)"]);
        assert_eq!(IMDS_V4.to_string(), "169.254.169.254");
        assert_eq!(WIRESERVER.to_string(), "168.63.129.16");
        assert_eq!(WIRESERVER_PORTS, [80, 32526]);
    }

    #[test]
    fn each_cloud_gets_its_header() {
        let headers = |cloud: Cloud| {
            let r = TYPICAL_REQUESTS
                .iter()
                .find(|r| r.cloud == cloud)
                .expect("a request of each cloud");
            r.http(IMDS_V4).headers
        };
        assert_eq!(
            headers(Cloud::Azure),
            [("Metadata".to_owned(), "true".to_owned())]
        );
        assert_eq!(
            headers(Cloud::Gcp),
            [("Metadata-Flavor".to_owned(), "Google".to_owned())]
        );
        assert_eq!(
            headers(Cloud::Aws),
            [("User-Agent".to_owned(), "aws-sdk".to_owned())]
        );
        assert_eq!(instance_request().route(), "/metadata/instance");
    }
}
