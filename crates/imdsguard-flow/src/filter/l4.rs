//! L4 criteria: protocols (with the L7 record kinds Hubble counts among them), ports and TCP
//! flags.

use crate::flow::{Flow, TcpFlags, layer4, layer7};

// One bit a protocol, so that a filter's protocols are one mask.
const P_ICMP4: u16 = 1;
const P_ICMP6: u16 = 1 << 1;
const P_TCP: u16 = 1 << 2;
const P_UDP: u16 = 1 << 3;
const P_SCTP: u16 = 1 << 4;
const P_VRRP: u16 = 1 << 5;
const P_IGMP: u16 = 1 << 6;
const P_DNS: u16 = 1 << 7;
const P_HTTP: u16 = 1 << 8;
const P_KAFKA: u16 = 1 << 9;

/// The L4 protocol and L7 record of a flow, one bit each.
pub(super) fn protocol_bits(f: &Flow) -> u16 {
    let l4 = match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(layer4::Protocol::Tcp(_)) => P_TCP,
        Some(layer4::Protocol::Udp(_)) => P_UDP,
        Some(layer4::Protocol::IcmPv4(_)) => P_ICMP4,
        Some(layer4::Protocol::IcmPv6(_)) => P_ICMP6,
        Some(layer4::Protocol::Sctp(_)) => P_SCTP,
        Some(layer4::Protocol::Vrrp(_)) => P_VRRP,
        Some(layer4::Protocol::Igmp(_)) => P_IGMP,
        None => 0,
    };
    #[allow(deprecated)]
    let l7 = match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
        Some(layer7::Record::Dns(_)) => P_DNS,
        Some(layer7::Record::Http(_)) => P_HTTP,
        Some(layer7::Record::Kafka(_)) => P_KAFKA,
        None => 0,
    };
    l4 | l7
}

/// The TCP flags in the order of Hubble's `TCPFlags` message, one bit each.
pub(super) fn tcp_flag_bits(t: &TcpFlags) -> u16 {
    [t.fin, t.syn, t.rst, t.psh, t.ack, t.urg, t.ece, t.cwr, t.ns]
        .iter()
        .enumerate()
        .fold(0, |acc, (i, set)| if *set { acc | (1 << i) } else { acc })
}

/// A `protocol` filter entry, any case, as the bits of [`protocol_bits`].
pub(super) fn protocol_mask(name: &str) -> Option<u16> {
    Some(match name.to_lowercase().as_str() {
        "icmp" => P_ICMP4 | P_ICMP6,
        "icmpv4" => P_ICMP4,
        "icmpv6" => P_ICMP6,
        "tcp" => P_TCP,
        "udp" => P_UDP,
        "sctp" => P_SCTP,
        "vrrp" => P_VRRP,
        "igmp" => P_IGMP,
        "dns" => P_DNS,
        "http" => P_HTTP,
        "kafka" => P_KAFKA,
        _ => return None,
    })
}

/// A port as Go's `strconv.ParseUint(s, 10, 16)` reads it: digits only (no sign), not empty.
pub(super) fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testutil::*;

    #[test]
    fn protocol() {
        let l4 = |p: layer4::Protocol| Flow {
            l4: Some(Layer4 { protocol: Some(p) }),
            ..Default::default()
        };
        let icmp4 = l4(layer4::Protocol::IcmPv4(Default::default()));
        let icmp6 = l4(layer4::Protocol::IcmPv6(Default::default()));
        let udp = l4(layer4::Protocol::Udp(Udp::default()));
        let vrrp = l4(layer4::Protocol::Vrrp(Default::default()));
        let dns = Flow {
            l7: Some(Layer7 {
                record: Some(layer7::Record::Dns(Dns::default())),
                ..Default::default()
            }),
            ..udp.clone()
        };
        check(
            FlowFilter {
                protocol: s(&["ICMP", "vrrp"]),
                ..ff()
            },
            &[
                (icmp4.clone(), true),
                (icmp6.clone(), true),
                (vrrp, true),
                (udp.clone(), false),
            ],
        );
        check(
            FlowFilter {
                protocol: s(&["icmpv6"]),
                ..ff()
            },
            &[(icmp4, false), (icmp6, true)],
        );
        check(
            FlowFilter {
                protocol: s(&["dns"]),
                ..ff()
            },
            &[(dns.clone(), true), (udp.clone(), false)],
        );
        check(
            FlowFilter {
                protocol: s(&["udp"]),
                ..ff()
            },
            &[(dns, true), (udp, true)],
        );
        check(
            FlowFilter {
                protocol: s(&["http"]),
                ..ff()
            },
            &[(http_flow("GET", "/", 200), true), (Flow::default(), false)],
        );
        assert_eq!(
            build_err(FlowFilter {
                protocol: s(&["tcp", "quic"]),
                ..ff()
            })
            .to_string(),
            "invalid protocol filter: unknown protocol: \"quic\""
        );
    }

    #[test]
    fn ports_only_for_tcp_udp_sctp() {
        let f = FlowFilter {
            source_port: s(&["53", "080"]),
            ..ff()
        };
        let udp = |src: u32| Flow {
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::Udp(Udp {
                    source_port: src,
                    destination_port: 1,
                })),
            }),
            ..Default::default()
        };
        let icmp = Flow {
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::IcmPv4(Default::default())),
            }),
            ..Default::default()
        };
        check(
            f,
            &[
                (udp(53), true),
                (udp(80), true),
                (udp(54), false),
                (
                    Flow {
                        l4: tcp(53, 1, None),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        l4: Some(Layer4 {
                            protocol: Some(layer4::Protocol::Sctp(crate::flow::Sctp {
                                source_port: 53,
                                destination_port: 0,
                            })),
                        }),
                        ..Default::default()
                    },
                    true,
                ),
                (icmp, false),
                (Flow::default(), false),
            ],
        );
        check(
            FlowFilter {
                destination_port: s(&["0"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        l4: tcp(1, 0, None),
                        ..Default::default()
                    },
                    true,
                ),
                (Flow::default(), false),
            ],
        );
        for bad in ["", "+80", "65536", "http", "-1"] {
            assert!(
                matches!(
                    build_err(FlowFilter {
                        destination_port: s(&[bad]),
                        ..ff()
                    }),
                    FilterError::InvalidPort {
                        field: "destination_port",
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tcp_flags_subset() {
        let syn = TcpFlags {
            syn: true,
            ..Default::default()
        };
        let syn_ack = TcpFlags {
            syn: true,
            ack: true,
            ..Default::default()
        };
        let fin = TcpFlags {
            fin: true,
            ..Default::default()
        };
        let flow = |f: Option<TcpFlags>| Flow {
            l4: tcp(1, 2, f),
            ..Default::default()
        };
        check(
            FlowFilter {
                tcp_flags: vec![syn_ack, fin],
                ..ff()
            },
            &[
                (flow(Some(syn_ack)), true),
                (
                    flow(Some(TcpFlags {
                        psh: true,
                        ..syn_ack
                    })),
                    true,
                ),
                (flow(Some(syn)), false),
                (
                    flow(Some(TcpFlags {
                        fin: true,
                        ack: true,
                        ..Default::default()
                    })),
                    true,
                ),
                (flow(None), false),
                (Flow::default(), false),
            ],
        );
    }
}
