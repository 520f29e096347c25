//! What cloud metadata traffic looks like: the addresses of the metadata services and the requests
//! real clients send them (docs/metadata-services.md). The checks test policies against these.

use imdsguard_policy::HttpRequest;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Azure IMDS, AWS IMDS and the GCP metadata server all answer here.
pub const IMDS_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254));

/// Azure's WireServer: it serves instance metadata and the HostGAPlugin too (TCP 80 and 32526).
pub const WIRESERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16));
pub const WIRESERVER_PORTS: [u16; 2] = [80, 32526];

/// The IPv6 metadata addresses: AWS (Nitro) and GCP.
pub const IMDS_V6: [(IpAddr, &str); 2] = [
    (
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
        "AWS",
    ),
    (
        IpAddr::V6(Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254)),
        "GCP",
    ),
];

/// One request a real client sends to a metadata service.
#[derive(Debug, Clone, Copy)]
pub struct TypicalRequest {
    pub cloud: &'static str,
    pub method: &'static str,
    /// The request target, query included, as Envoy matches `path` against it.
    pub path: &'static str,
    /// A managed-identity or instance-role credential request.
    pub token: bool,
}

const fn req(cloud: &'static str, method: &'static str, path: &'static str) -> TypicalRequest {
    TypicalRequest {
        cloud,
        method,
        path,
        token: false,
    }
}

const fn token(cloud: &'static str, path: &'static str) -> TypicalRequest {
    TypicalRequest {
        cloud,
        method: "GET",
        path,
        token: true,
    }
}

pub const TYPICAL_REQUESTS: &[TypicalRequest] = &[
    req("Azure", "GET", "/metadata/instance?api-version=2021-02-01"),
    req(
        "Azure",
        "GET",
        "/metadata/instance/compute?api-version=2021-02-01&format=json",
    ),
    req(
        "Azure",
        "GET",
        "/metadata/instance/compute/location?api-version=2021-02-01&format=text",
    ),
    token(
        "Azure",
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F",
    ),
    req(
        "Azure",
        "GET",
        "/metadata/identity/info?api-version=2018-02-01",
    ),
    req(
        "Azure",
        "GET",
        "/metadata/attested/document?api-version=2020-09-01",
    ),
    req(
        "Azure",
        "GET",
        "/metadata/scheduledevents?api-version=2020-07-01",
    ),
    req(
        "Azure",
        "GET",
        "/metadata/loadbalancer?api-version=2020-10-01",
    ),
    req("Azure", "GET", "/metadata/versions"),
    req("AWS", "PUT", "/latest/api/token"),
    req("AWS", "GET", "/latest/meta-data/"),
    req("AWS", "GET", "/latest/meta-data/instance-id"),
    req("AWS", "GET", "/latest/meta-data/placement/region"),
    req("AWS", "GET", "/latest/meta-data/iam/info"),
    token(
        "AWS",
        "/latest/meta-data/iam/security-credentials/node-instance-role",
    ),
    req("AWS", "GET", "/latest/dynamic/instance-identity/document"),
    req("AWS", "GET", "/latest/user-data"),
    token(
        "GCP",
        "/computeMetadata/v1/instance/service-accounts/default/token",
    ),
    req("GCP", "GET", "/computeMetadata/v1/project/project-id"),
    req("GCP", "GET", "/computeMetadata/v1/instance/zone"),
    req("GCP", "GET", "/computeMetadata/v1/instance/?recursive=true"),
];

impl TypicalRequest {
    /// The request as the proxy would judge it, with the header each cloud requires.
    pub fn http(&self, host: IpAddr) -> HttpRequest {
        let header = match self.cloud {
            "Azure" => ("Metadata", "true"),
            "GCP" => ("Metadata-Flavor", "Google"),
            _ => ("User-Agent", "aws-sdk"),
        };
        HttpRequest {
            method: self.method.to_owned(),
            path: self.path.to_owned(),
            host: host.to_string(),
            headers: vec![(header.0.to_owned(), header.1.to_owned())],
        }
    }

    /// The path without its query.
    pub fn route(&self) -> &'static str {
        self.path.split_once('?').map_or(self.path, |(r, _)| r)
    }
}

/// The Azure instance-metadata request every check uses to ask "is IMDS reachable?".
pub fn instance_request() -> &'static TypicalRequest {
    &TYPICAL_REQUESTS[0]
}
