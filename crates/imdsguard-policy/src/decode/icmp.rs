//! The `icmps` block of a rule: ICMP and ICMPv6 types by number or by Cilium's names.

use super::{Cx, R};
use crate::api::IcmpField;
use imdsguard_manifest::Field;

impl Cx<'_> {
    pub(super) fn icmps(&mut self, f: &Field) -> R<Vec<IcmpField>> {
        let mut out = Vec::new();
        for rule in f.seq()? {
            let m = rule.map(&["fields"])?;
            let fields = match m.get("fields") {
                Some(fl) => fl.seq()?,
                None => Vec::new(),
            };
            if fields.len() > 40 {
                return Err(rule.error("too many ICMP fields, the max is 40"));
            }
            for field in fields {
                let fm = field.map(&["type", "family"])?;
                let v6 = match fm.get("family") {
                    Some(fam) => match fam.str()? {
                        "IPv4" | "" => false,
                        "IPv6" => true,
                        other => {
                            return Err(fam.error(format!(
                                "{other:?} is not a valid ICMP family (IPv4, IPv6)"
                            )));
                        }
                    },
                    None => false,
                };
                let tf = fm.required("type")?;
                let t = tf.str()?;
                let icmp_type = match t.parse::<u8>() {
                    Ok(n) => n,
                    Err(_) => icmp_type_by_name(t, v6).ok_or_else(|| {
                        tf.error(format!("{t:?} is not a valid ICMP{} type (a number 0-255 or a name such as EchoRequest)", if v6 { "v6" } else { "" }))
                    })?,
                };
                out.push(IcmpField { v6, icmp_type });
            }
        }
        Ok(out)
    }
}

fn icmp_type_by_name(name: &str, v6: bool) -> Option<u8> {
    let v4: &[(&str, u8)] = &[
        ("EchoReply", 0),
        ("DestinationUnreachable", 3),
        ("Redirect", 5),
        ("Echo", 8),
        ("EchoRequest", 8),
        ("RouterAdvertisement", 9),
        ("RouterSelection", 10),
        ("TimeExceeded", 11),
        ("ParameterProblem", 12),
        ("Timestamp", 13),
        ("TimestampReply", 14),
        ("Photuris", 40),
        ("ExtendedEchoRequest", 42),
        ("ExtendedEchoReply", 43),
    ];
    let v6t: &[(&str, u8)] = &[
        ("DestinationUnreachable", 1),
        ("PacketTooBig", 2),
        ("TimeExceeded", 3),
        ("ParameterProblem", 4),
        ("EchoRequest", 128),
        ("EchoReply", 129),
        ("MulticastListenerQuery", 130),
        ("MulticastListenerReport", 131),
        ("MulticastListenerDone", 132),
        ("RouterSolicitation", 133),
        ("RouterAdvertisement", 134),
        ("NeighborSolicitation", 135),
        ("NeighborAdvertisement", 136),
        ("RedirectMessage", 137),
        ("RouterRenumbering", 138),
        ("ICMPNodeInformationQuery", 139),
        ("ICMPNodeInformationResponse", 140),
        ("InverseNeighborDiscoverySolicitation", 141),
        ("InverseNeighborDiscoveryAdvertisement", 142),
        ("HomeAgentAddressDiscoveryRequest", 144),
        ("HomeAgentAddressDiscoveryReply", 145),
        ("MobilePrefixSolicitation", 146),
        ("MobilePrefixAdvertisement", 147),
        ("DuplicateAddressRequestCodeSuffix", 157),
        ("DuplicateAddressConfirmationCodeSuffix", 158),
        ("ExtendedEchoRequest", 160),
        ("ExtendedEchoReply", 161),
    ];
    let table = if v6 { v6t } else { v4 };
    table.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}
