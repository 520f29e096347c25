//! The table of metadata services: which cloud serves what at which address and ports.
//!
//! One row per (service, address). An address may carry several services: 169.254.169.254 is
//! Azure's, AWS's, GCP's and OpenStack's, so a lookup answers "which services may be here", and
//! a node cannot tell which one is behind the address from the address alone.

use ipnet::IpNet;
use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addresses and host names of the table as text, for `concat!` in other crates' constant
/// strings (a `const` cannot be formatted at compile time). A test keeps each arm equal to its
/// constant.
#[macro_export]
macro_rules! address_text {
    (IMDS_V4) => {
        "169.254.169.254"
    };
    (WIRESERVER) => {
        "168.63.129.16"
    };
    (AWS_IMDS_V6) => {
        "fd00:ec2::254"
    };
    (EKS_POD_IDENTITY_V4) => {
        "169.254.170.23"
    };
    (EKS_POD_IDENTITY_V6) => {
        "fd00:ec2::23"
    };
    (GCP_METADATA_V6) => {
        "fd20:ce::254"
    };
    (GCP_METADATA_HOST) => {
        "metadata.google.internal"
    };
    (GKE_METADATA_V4) => {
        "169.254.169.252"
    };
    (ALIBABA_METADATA_V4) => {
        "100.100.100.200"
    };
    (OPENSTACK_METADATA_V6) => {
        "fe80::a9fe:a9fe"
    };
}

/// The link-local instance metadata address of Azure, AWS, GCP and OpenStack.
pub const IMDS_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Azure's WireServer: the VM agent's channel, DHCP, DNS, and the HostGAPlugin.
pub const WIRESERVER: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);
/// The WireServer's ports that serve the VM agent protocol and the HostGAPlugin; AKS drops
/// exactly these from pods. Its DNS on 53 is ordinary traffic.
pub const WIRESERVER_PORTS: [u16; 2] = [80, 32526];
/// AWS IMDS over IPv6 (Nitro instances, when enabled).
pub const AWS_IMDS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// The EKS Pod Identity agent, a DaemonSet on host network that hands pods their role's keys.
pub const EKS_POD_IDENTITY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 23);
pub const EKS_POD_IDENTITY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23);
/// GCP's metadata server over IPv6 (seen in SSRF blocklists; see docs/metadata-services.md).
pub const GCP_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254);
/// The name GCP's clients use for the metadata server; it resolves to [`IMDS_V4`].
pub const GCP_METADATA_HOST: &str = address_text!(GCP_METADATA_HOST);
/// GKE's metadata server (Workload Identity), a node DaemonSet that pods are redirected to.
pub const GKE_METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 252);
pub const GKE_METADATA_PORT: u16 = 988;
/// Alibaba Cloud ECS's metadata service.
pub const ALIBABA_METADATA_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
/// OpenStack's metadata service over IPv6 (fe80::a9fe:a9fe mirrors 169.254.169.254).
pub const OPENSTACK_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xa9fe, 0xa9fe);

/// A cloud, or a cloud software.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    Azure,
    Aws,
    Gcp,
    Alibaba,
    OpenStack,
}

impl Cloud {
    /// The name as messages print it (`AWS`, not `Aws`).
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Azure => "Azure",
            Cloud::Aws => "AWS",
            Cloud::Gcp => "GCP",
            Cloud::Alibaba => "Alibaba Cloud",
            Cloud::OpenStack => "OpenStack",
        }
    }

    /// The header every metadata request of this cloud must carry, if there is a fixed one.
    /// AWS's IMDSv2 header carries a per-session token, so it is not fixed.
    pub fn required_header(self) -> Option<(&'static str, &'static str)> {
        match self {
            Cloud::Azure => Some(("Metadata", "true")),
            Cloud::Gcp => Some(("Metadata-Flavor", "Google")),
            Cloud::Aws | Cloud::Alibaba | Cloud::OpenStack => None,
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    AzureImds,
    AzureWireServer,
    AwsImds,
    EksPodIdentity,
    GcpMetadata,
    GkeMetadata,
    AlibabaMetadata,
    OpenStackMetadata,
}

impl Service {
    pub fn cloud(self) -> Cloud {
        match self {
            Service::AzureImds | Service::AzureWireServer => Cloud::Azure,
            Service::AwsImds | Service::EksPodIdentity => Cloud::Aws,
            Service::GcpMetadata | Service::GkeMetadata => Cloud::Gcp,
            Service::AlibabaMetadata => Cloud::Alibaba,
            Service::OpenStackMetadata => Cloud::OpenStack,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::AzureImds => "Azure IMDS",
            Service::AzureWireServer => "Azure WireServer",
            Service::AwsImds => "AWS IMDS",
            Service::EksPodIdentity => "EKS Pod Identity agent",
            Service::GcpMetadata => "GCP metadata server",
            Service::GkeMetadata => "GKE metadata server",
            Service::AlibabaMetadata => "Alibaba Cloud metadata service",
            Service::OpenStackMetadata => "OpenStack metadata service",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Service::AzureImds
            | Service::AwsImds
            | Service::GcpMetadata
            | Service::AlibabaMetadata
            | Service::OpenStackMetadata => Kind::Imds,
            Service::AzureWireServer => Kind::WireServer,
            Service::EksPodIdentity => Kind::PodIdentityAgent,
            Service::GkeMetadata => Kind::GkeMetadataServer,
        }
    }

    /// This service's rows of the table.
    pub fn endpoints(self) -> impl Iterator<Item = &'static Endpoint> {
        ENDPOINTS.iter().filter(move |e| e.service == self)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a reader of flows calls a metadata endpoint when it cannot know the cloud: every
/// service at one address shares its kind (a test checks), so the kind of an address:port is
/// one answer where the services are several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An instance metadata service: Azure, AWS, GCP, Alibaba Cloud, OpenStack.
    Imds,
    /// Azure's WireServer (VM agent channel; third parties report it also answers IMDS paths).
    WireServer,
    /// The EKS Pod Identity agent.
    PodIdentityAgent,
    /// GKE's metadata server.
    GkeMetadataServer,
}

impl Kind {
    /// The label the UI puts before the address (`IMDS 169.254.169.254`).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Imds => "IMDS",
            Kind::WireServer => "WireServer",
            Kind::PodIdentityAgent => "EKS Pod Identity",
            Kind::GkeMetadataServer => "GKE metadata server",
        }
    }
}

/// The ports a service answers on at one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// Every port: the address belongs to the service alone.
    Any,
    /// Only these TCP ports: the address also carries ordinary traffic on others.
    Tcp(&'static [u16]),
}

impl Ports {
    pub fn contains(self, port: u16) -> bool {
        match self {
            Ports::Any => true,
            Ports::Tcp(ports) => ports.contains(&port),
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub service: Service,
    pub address: IpAddr,
    pub ports: Ports,
    /// Names that resolve to this address and that clients use instead of it.
    pub hostnames: &'static [&'static str],
}

impl Endpoint {
    /// Whether this row serves `ip`:`port`; an IPv4-mapped IPv6 address counts as its IPv4
    /// address, as the kernel delivers it to the same place.
    pub fn serves(&self, ip: IpAddr, port: u16) -> bool {
        self.address == ip.to_canonical() && self.ports.contains(port)
    }

    pub fn kind(&self) -> Kind {
        self.service.kind()
    }
}

const fn v4(service: Service, address: Ipv4Addr, ports: Ports) -> Endpoint {
    Endpoint {
        service,
        address: IpAddr::V4(address),
        ports,
        hostnames: &[],
    }
}

const fn v6(service: Service, address: Ipv6Addr) -> Endpoint {
    Endpoint {
        service,
        address: IpAddr::V6(address),
        ports: Ports::Any,
        hostnames: &[],
    }
}

/// Every metadata endpoint imdsguard knows (docs/metadata-services.md). Adding one is one row
/// here, plus its tests below.
pub static ENDPOINTS: &[Endpoint] = &[
    v4(Service::AzureImds, IMDS_V4, Ports::Any),
    v4(
        Service::AzureWireServer,
        WIRESERVER,
        Ports::Tcp(&WIRESERVER_PORTS),
    ),
    v4(Service::AwsImds, IMDS_V4, Ports::Any),
    v6(Service::AwsImds, AWS_IMDS_V6),
    v4(Service::EksPodIdentity, EKS_POD_IDENTITY_V4, Ports::Any),
    v6(Service::EksPodIdentity, EKS_POD_IDENTITY_V6),
    Endpoint {
        hostnames: &[GCP_METADATA_HOST],
        ..v4(Service::GcpMetadata, IMDS_V4, Ports::Any)
    },
    v6(Service::GcpMetadata, GCP_METADATA_V6),
    v4(
        Service::GkeMetadata,
        GKE_METADATA_V4,
        Ports::Tcp(&[GKE_METADATA_PORT]),
    ),
    v4(Service::AlibabaMetadata, ALIBABA_METADATA_V4, Ports::Any),
    v4(Service::OpenStackMetadata, IMDS_V4, Ports::Any),
    v6(Service::OpenStackMetadata, OPENSTACK_METADATA_V6),
];

/// The rows that serve `ip`:`port` (IPv4-mapped IPv6 counts as IPv4), in table order.
pub fn endpoints_at(ip: IpAddr, port: u16) -> impl Iterator<Item = &'static Endpoint> {
    ENDPOINTS.iter().filter(move |e| e.serves(ip, port))
}

/// The services that may answer at `ip`:`port`.
pub fn services_at(ip: IpAddr, port: u16) -> impl Iterator<Item = Service> {
    endpoints_at(ip, port).map(|e| e.service)
}

/// What is at `ip`:`port`, if it is a metadata endpoint.
pub fn kind_at(ip: IpAddr, port: u16) -> Option<Kind> {
    endpoints_at(ip, port).next().map(Endpoint::kind)
}

/// Whether some metadata service answers at `ip`, on some port.
pub fn is_metadata_address(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ENDPOINTS.iter().any(|e| e.address == ip)
}

/// The rows a host name stands for (case-insensitive; a trailing dot is allowed, as in DNS).
pub fn endpoints_named(host: &str) -> impl Iterator<Item = &'static Endpoint> {
    let host = host.strip_suffix('.').unwrap_or(host).to_owned();
    ENDPOINTS
        .iter()
        .filter(move |e| e.hostnames.iter().any(|h| h.eq_ignore_ascii_case(&host)))
}

/// The addresses to keep every pod away from until its policy says otherwise: each address of
/// the table as a host prefix, once, in table order, then each IPv4 address's IPv4-mapped IPv6
/// form (a dual-stack socket can reach the IPv4 service through it).
///
/// Prefixes carry no ports: a row limited to some ports (the WireServer, GKE's metadata server)
/// still contributes its whole address. Callers that must leave the other ports open (the
/// WireServer's DNS) need [`ENDPOINTS`] and its [`Ports`].
pub fn protected_prefixes() -> Vec<IpNet> {
    let mut addresses: Vec<IpAddr> = Vec::new();
    for e in ENDPOINTS {
        if !addresses.contains(&e.address) {
            addresses.push(e.address);
        }
    }
    let mapped: Vec<IpAddr> = addresses
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        })
        .collect();
    addresses
        .into_iter()
        .chain(mapped)
        .map(IpNet::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn services(addr: &str, port: u16) -> Vec<Service> {
        services_at(ip(addr), port).collect()
    }

    #[test]
    fn azure_imds_and_wireserver() {
        for port in [80, 443, 8080] {
            assert!(services(address_text!(IMDS_V4), port).contains(&Service::AzureImds));
        }
        for port in WIRESERVER_PORTS {
            assert_eq!(
                services(address_text!(WIRESERVER), port),
                [Service::AzureWireServer]
            );
        }
        // DNS, DHCP and health probes to the WireServer are ordinary traffic.
        for port in [53, 67, 443] {
            assert!(services(address_text!(WIRESERVER), port).is_empty());
        }
        assert!(is_metadata_address(IpAddr::V4(WIRESERVER)));
    }

    #[test]
    fn aws_imds_and_eks_pod_identity() {
        assert!(services(address_text!(IMDS_V4), 80).contains(&Service::AwsImds));
        assert_eq!(services(address_text!(AWS_IMDS_V6), 80), [Service::AwsImds]);
        assert_eq!(services("fd00:ec2:0:0::254", 80), [Service::AwsImds]);
        for addr in [
            address_text!(EKS_POD_IDENTITY_V4),
            address_text!(EKS_POD_IDENTITY_V6),
        ] {
            assert_eq!(services(addr, 80), [Service::EksPodIdentity]);
            assert_eq!(kind_at(ip(addr), 80), Some(Kind::PodIdentityAgent));
        }
    }

    #[test]
    fn gcp_metadata_and_gke_metadata_server() {
        assert!(services(address_text!(IMDS_V4), 80).contains(&Service::GcpMetadata));
        assert_eq!(
            services(address_text!(GCP_METADATA_V6), 80),
            [Service::GcpMetadata]
        );
        let named: Vec<&Endpoint> = endpoints_named(GCP_METADATA_HOST).collect();
        assert_eq!(named.len(), 1);
        assert_eq!(
            (named[0].service, named[0].address),
            (Service::GcpMetadata, IpAddr::V4(IMDS_V4))
        );
        assert_eq!(endpoints_named("Metadata.Google.Internal.").count(), 1);
        assert_eq!(endpoints_named("metadata.google.internal.evil").count(), 0);
        assert_eq!(
            services(address_text!(GKE_METADATA_V4), GKE_METADATA_PORT),
            [Service::GkeMetadata]
        );
        assert!(services(address_text!(GKE_METADATA_V4), 80).is_empty());
    }

    #[test]
    fn alibaba_and_openstack() {
        assert_eq!(
            services(address_text!(ALIBABA_METADATA_V4), 80),
            [Service::AlibabaMetadata]
        );
        assert!(services(address_text!(IMDS_V4), 80).contains(&Service::OpenStackMetadata));
        assert_eq!(
            services(address_text!(OPENSTACK_METADATA_V6), 80),
            [Service::OpenStackMetadata]
        );
    }

    #[test]
    fn the_shared_address_is_four_services_of_one_kind() {
        assert_eq!(
            services(address_text!(IMDS_V4), 80),
            [
                Service::AzureImds,
                Service::AwsImds,
                Service::GcpMetadata,
                Service::OpenStackMetadata
            ]
        );
        assert_eq!(kind_at(IpAddr::V4(IMDS_V4), 80), Some(Kind::Imds));
    }

    #[test]
    fn ipv4_mapped_addresses_match_their_ipv4_rows() {
        for e in ENDPOINTS {
            let IpAddr::V4(v4) = e.address else { continue };
            let port = match e.ports {
                Ports::Any => 80,
                Ports::Tcp(ports) => ports[0],
            };
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            assert!(e.serves(mapped, port), "{mapped}");
            assert_eq!(
                kind_at(ip(&format!("::ffff:{v4}")), port),
                Some(e.kind()),
                "{v4}"
            );
            assert!(is_metadata_address(mapped));
        }
    }

    #[test]
    fn other_addresses_are_not_metadata() {
        for addr in [
            "169.254.169.253",
            "169.254.170.2",
            "100.100.100.201",
            "10.0.0.1",
            "::1",
            "fd00:ec2::255",
            "fe80::1",
            // IPv4-compatible (not mapped) IPv6 is a different address.
            "::169.254.169.254",
        ] {
            assert_eq!(kind_at(ip(addr), 80), None, "{addr}");
            assert!(!is_metadata_address(ip(addr)), "{addr}");
        }
    }

    #[test]
    fn one_kind_per_address_and_port() {
        for e in ENDPOINTS {
            for other in ENDPOINTS.iter().filter(|o| o.address == e.address) {
                assert_eq!(
                    e.kind(),
                    other.kind(),
                    "{} and {}",
                    e.service,
                    other.service
                );
            }
        }
    }

    #[test]
    fn labels_the_ui_prints() {
        assert_eq!(Kind::Imds.label(), "IMDS");
        assert_eq!(Kind::WireServer.label(), "WireServer");
        assert_eq!(kind_at(IpAddr::V6(AWS_IMDS_V6), 80), Some(Kind::Imds));
        assert_eq!(kind_at(IpAddr::V6(GCP_METADATA_V6), 80), Some(Kind::Imds));
        assert_eq!(
            kind_at(IpAddr::V4(GKE_METADATA_V4), GKE_METADATA_PORT).map(Kind::label),
            Some("GKE metadata server")
        );
    }

    #[test]
    fn every_service_has_a_row_and_its_cloud() {
        let all = [
            Service::AzureImds,
            Service::AzureWireServer,
            Service::AwsImds,
            Service::EksPodIdentity,
            Service::GcpMetadata,
            Service::GkeMetadata,
            Service::AlibabaMetadata,
            Service::OpenStackMetadata,
        ];
        for s in all {
            assert!(s.endpoints().next().is_some(), "{s}");
        }
        assert_eq!(Service::EksPodIdentity.cloud(), Cloud::Aws);
        assert_eq!(Service::GkeMetadata.cloud(), Cloud::Gcp);
        assert_eq!(Cloud::Aws.to_string(), "AWS");
    }

    #[test]
    fn protected_prefixes_are_every_address_and_its_mapped_form() {
        let got: Vec<String> = protected_prefixes().iter().map(IpNet::to_string).collect();
        assert_eq!(
            got,
            [
                "169.254.169.254/32",
                "168.63.129.16/32",
                "fd00:ec2::254/128",
                "169.254.170.23/32",
                "fd00:ec2::23/128",
                "fd20:ce::254/128",
                "169.254.169.252/32",
                "100.100.100.200/32",
                "fe80::a9fe:a9fe/128",
                "::ffff:169.254.169.254/128",
                "::ffff:168.63.129.16/128",
                "::ffff:169.254.170.23/128",
                "::ffff:169.254.169.252/128",
                "::ffff:100.100.100.200/128",
            ]
        );
        let unique: BTreeSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len());
        // The four the datapath protected before this table existed are all still there.
        for old in [
            "169.254.169.254/32",
            "fd00:ec2::254/128",
            "fd20:ce::254/128",
            "168.63.129.16/32",
        ] {
            assert!(got.iter().any(|g| g == old), "{old}");
        }
    }

    #[test]
    fn address_text_agrees_with_the_constants() {
        assert_eq!(address_text!(IMDS_V4), IMDS_V4.to_string());
        assert_eq!(address_text!(WIRESERVER), WIRESERVER.to_string());
        assert_eq!(address_text!(AWS_IMDS_V6), AWS_IMDS_V6.to_string());
        assert_eq!(
            address_text!(EKS_POD_IDENTITY_V4),
            EKS_POD_IDENTITY_V4.to_string()
        );
        assert_eq!(
            address_text!(EKS_POD_IDENTITY_V6),
            EKS_POD_IDENTITY_V6.to_string()
        );
        assert_eq!(address_text!(GCP_METADATA_V6), GCP_METADATA_V6.to_string());
        assert_eq!(address_text!(GKE_METADATA_V4), GKE_METADATA_V4.to_string());
        assert_eq!(
            address_text!(ALIBABA_METADATA_V4),
            ALIBABA_METADATA_V4.to_string()
        );
        assert_eq!(
            address_text!(OPENSTACK_METADATA_V6),
            OPENSTACK_METADATA_V6.to_string()
        );
        assert_eq!(address_text!(GCP_METADATA_HOST), GCP_METADATA_HOST);
    }
}
