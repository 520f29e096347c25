//! IP address criteria (`source_ip`, `source_ip_xlated`, `destination_ip`): exact addresses and
//! CIDRs with Go's `net.IPNet` view of IPv4-mapped IPv6.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::FilterError;
use crate::flow::Flow;

/// Which address of the flow an IP criterion reads.
#[derive(Debug, Clone, Copy)]
pub(super) enum IpField {
    Source,
    SourceXlated,
    Destination,
}

impl IpField {
    pub(super) fn get(self, f: &Flow) -> &str {
        match (f.ip.as_ref(), self) {
            (None, _) => "",
            (Some(ip), IpField::Source) => &ip.source,
            (Some(ip), IpField::SourceXlated) => &ip.source_xlated,
            (Some(ip), IpField::Destination) => &ip.destination,
        }
    }
}

/// A network as Go's `net.IPNet` sees it: IPv4 and IPv4-mapped IPv6 both in the 4-byte form.
#[derive(Debug, Clone, Copy)]
enum GoNet {
    V4(Ipv4Net),
    V6(Ipv6Net),
}

impl GoNet {
    fn new(net: IpNet) -> Self {
        match net.trunc() {
            IpNet::V4(n) => GoNet::V4(n),
            IpNet::V6(n) => match n.network().to_ipv4_mapped() {
                // Go's networkNumberAndMask keeps the last 32 bits of the mask.
                Some(a) => GoNet::V4(
                    Ipv4Net::new(a, n.prefix_len().saturating_sub(96)).unwrap_or_default(),
                ),
                None => GoNet::V6(n),
            },
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip4 = match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        match (self, ip4, ip) {
            (GoNet::V4(n), Some(a), _) => n.contains(&a),
            (GoNet::V6(n), None, IpAddr::V6(a)) => n.contains(&a),
            _ => false,
        }
    }
}

/// Exact addresses (compared as text, like Hubble) and CIDRs.
#[derive(Debug, Clone)]
pub(super) struct IpMatcher {
    exact: Vec<String>,
    cidrs: Vec<GoNet>,
}

impl IpMatcher {
    pub(super) fn new(values: &[String]) -> Result<Self, FilterError> {
        let mut m = IpMatcher {
            exact: Vec::new(),
            cidrs: Vec::new(),
        };
        for v in values {
            if v.contains('/') {
                let net: IpNet = v
                    .parse()
                    .map_err(|_| FilterError::InvalidCidr { value: v.clone() })?;
                m.cidrs.push(GoNet::new(net));
            } else {
                v.parse::<IpAddr>()
                    .map_err(|_| FilterError::InvalidIp { value: v.clone() })?;
                m.exact.push(v.clone());
            }
        }
        Ok(m)
    }

    pub(super) fn matches(&self, ip: &str) -> bool {
        if ip.is_empty() {
            return false;
        }
        if self.exact.iter().any(|e| e == ip) {
            return true;
        }
        if self.cidrs.is_empty() {
            return false;
        }
        match ip.parse::<IpAddr>() {
            Ok(addr) => self.cidrs.iter().any(|n| n.contains(addr)),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testutil::*;

    #[test]
    fn ip_exact_and_cidr() {
        let f = FlowFilter {
            source_ip: s(&["10.0.0.1", "192.168.0.0/16", "fd00::/8"]),
            ..ff()
        };
        let flow = |src: &str| Flow {
            ip: ip(src, ""),
            ..Default::default()
        };
        check(
            f,
            &[
                (flow("10.0.0.1"), true),
                (flow("10.0.0.2"), false),
                (flow("192.168.3.4"), true),
                (flow("::ffff:192.168.3.4"), true),
                (flow("fd00::1"), true),
                (flow("fe80::1"), false),
                (flow(""), false),
                (Flow::default(), false),
            ],
        );
        // Host bits in a CIDR are fine (Go's ParseCIDR masks them).
        check(
            FlowFilter {
                destination_ip: s(&["10.1.2.3/8"]),
                ..ff()
            },
            &[(
                Flow {
                    ip: ip("", "10.9.9.9"),
                    ..Default::default()
                },
                true,
            )],
        );
        // SNAT (source_ip_xlated).
        check(
            FlowFilter {
                source_ip_xlated: s(&["1.2.3.4"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        ip: Some(Ip {
                            source_xlated: "1.2.3.4".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        ip: ip("1.2.3.4", ""),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        assert_eq!(
            build_err(FlowFilter {
                source_ip: s(&["10.0.0.0/33"]),
                ..ff()
            }),
            FilterError::InvalidCidr {
                value: "10.0.0.0/33".into()
            }
        );
        assert_eq!(
            build_err(FlowFilter {
                destination_ip: s(&["nope"]),
                ..ff()
            }),
            FilterError::InvalidIp {
                value: "nope".into()
            }
        );
        assert_eq!(
            build_err(FlowFilter {
                source_ip_xlated: s(&["1.2.3"]),
                ..ff()
            })
            .to_string(),
            "invalid IP address in filter: \"1.2.3\""
        );
    }
}
