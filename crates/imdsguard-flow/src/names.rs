//! The names and texts Hubble prints for numbers in flows
//! (docs/hubble.md#verdicts-event-types-and-drop-reasons).

use std::borrow::Cow;

/// Cilium's drop reason text (`pkg/monitor/api/drop.go`), as the compact printer shows it for drop
/// events. Unknown codes print as `"<code>, 0"`, as Hubble does. 130-198 are checked against
/// drop.go's table (gaps are codes it has no text for); 199-201 are left out until checked.
pub fn drop_reason_text(code: u32) -> Cow<'static, str> {
    let text = match code {
        130 => "Invalid source mac",
        131 => "Invalid destination mac",
        132 => "Invalid source ip",
        133 => "Policy denied",
        134 => "Invalid packet",
        135 => "CT: Truncated or invalid header",
        136 => "Fragmentation needed",
        137 => "CT: Unknown L4 protocol",
        138 => "CT: Can't create entry from packet",
        139 => "Unsupported L3 protocol",
        140 => "Missed tail call",
        141 => "Error writing to packet",
        142 => "Unknown L4 protocol",
        143 => "Unknown ICMPv4 code",
        144 => "Unknown ICMPv4 type",
        145 => "Unknown ICMPv6 code",
        146 => "Unknown ICMPv6 type",
        147 => "Error retrieving tunnel key",
        148 => "Error retrieving tunnel options",
        149 => "Invalid Geneve option",
        150 => "Unknown L3 target address",
        151 => "Stale or unroutable IP",
        152 => "No matching local container found",
        153 => "Error while correcting L3 checksum",
        154 => "Error while correcting L4 checksum",
        155 => "CT: Map insertion failed",
        156 => "Invalid IPv6 extension header",
        157 => "IP fragmentation not supported",
        158 => "Service backend not found",
        160 => "No tunnel/encapsulation endpoint (datapath BUG!)",
        161 => "NAT 46/64 not enabled",
        162 => "Reached EDT rate-limiting drop horizon",
        163 => "Unknown connection tracking state",
        164 => "Local host is unreachable",
        165 => "No configuration available to perform policy decision",
        166 => "Unsupported L2 protocol",
        167 => "No mapping for NAT masquerade",
        168 => "Unsupported protocol for NAT masquerade",
        169 => "FIB lookup failed",
        170 => "Encapsulation traffic is prohibited",
        171 => "Invalid identity",
        172 => "Unknown sender",
        173 => "NAT not needed",
        174 => "Is a ClusterIP",
        175 => "First logical datagram fragment not found",
        176 => "Forbidden ICMPv6 message",
        177 => "Denied by LB src range check",
        178 => "Socket lookup failed",
        179 => "Socket assign failed",
        180 => "Proxy redirection not supported for protocol",
        181 => "Policy denied by denylist",
        182 => "VLAN traffic disallowed by VLAN filter",
        183 => "Incorrect VNI from VTEP",
        184 => "Failed to update or lookup TC buffer",
        185 => "No SID was found for the IP address",
        186 => "SRv6 state was removed during tail call",
        187 => "L3 translation from IPv4 to IPv6 failed (NAT46)",
        188 => "L3 translation from IPv6 to IPv4 failed (NAT64)",
        189 => "Authentication required",
        190 => "No conntrack map found",
        191 => "No nat map found",
        192 => "Invalid ClusterID",
        193 => "Unsupported packet protocol for DSR encapsulation",
        194 => "No egress gateway found",
        195 => "Traffic is unencrypted",
        196 => "TTL exceeded",
        197 => "No node ID found",
        198 => "Rate limited",
        202 => "Host datapath not ready",
        203 => "Endpoint policy program not available",
        204 => "No Egress IP configured",
        205 => "Punt to proxy",
        _ => return Cow::Owned(format!("{code}, 0")),
    };
    Cow::Borrowed(text)
}

/// The name of a protobuf enum value, or its number when this build does not know it (Hubble prints
/// numbers for values newer than its protos).
pub fn enum_name<E: TryFrom<i32>>(v: i32, name: impl Fn(E) -> &'static str) -> Cow<'static, str> {
    match E::try_from(v) {
        Ok(e) => Cow::Borrowed(name(e)),
        Err(_) => Cow::Owned(v.to_string()),
    }
}

/// The datapath trace observation point names (`event_type.sub_type` numbering, not the enum's).
pub fn trace_point_name(sub_type: i32) -> Cow<'static, str> {
    const NAMES: [&str; 14] = [
        "to-endpoint",
        "to-proxy",
        "to-host",
        "to-stack",
        "to-overlay",
        "from-endpoint",
        "from-proxy",
        "from-host",
        "from-stack",
        "from-overlay",
        "from-network",
        "to-network",
        "from-crypto",
        "to-crypto",
    ];
    usize::try_from(sub_type)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map(|s| Cow::Borrowed(*s))
        .unwrap_or_else(|| Cow::Owned(sub_type.to_string()))
}

/// The datapath sub_type of a trace observation point name, for `--type trace:to-proxy`.
pub fn trace_point_by_name(name: &str) -> Option<i32> {
    (0..14).find(|i| trace_point_name(*i) == name)
}

/// `api.PolicyMatchType.String()`.
pub fn match_type_name(value: u32) -> &'static str {
    match value {
        0 => "none",
        1 => "L3-Only",
        2 => "L3-L4",
        3 => "L4-Only",
        4 => "all",
        5 => "L3-Proto",
        6 => "Proto-Only",
        _ => "unknown",
    }
}

const RESERVED: [&str; 11] = [
    "unknown",
    "host",
    "world",
    "unmanaged",
    "health",
    "init",
    "remote-node",
    "kube-apiserver",
    "ingress",
    "world-ipv4",
    "world-ipv6",
];

/// `(host)`, `(world)` … for reserved identities, `(ID:<n>)` otherwise.
pub fn identity_token(identity: u32) -> String {
    match reserved_identity_name(identity) {
        Some(name) => format!("({name})"),
        None => format!("(ID:{identity})"),
    }
}

/// The name of a reserved identity (`host`, `world` …), `None` for any other.
pub fn reserved_identity_name(identity: u32) -> Option<&'static str> {
    RESERVED.get(identity as usize).copied()
}

/// Parses `--identity` values: a reserved name or a decimal number.
pub fn identity_by_name(s: &str) -> Option<u32> {
    if let Some(i) = RESERVED.iter().position(|n| *n == s) {
        return Some(i as u32);
    }
    if s == "overlay-to-encrypt" {
        return Some(11);
    }
    s.parse().ok()
}

/// Monitor event types and their `--type` names.
pub const EVENT_TYPES: [(i32, &str); 8] = [
    (1, "drop"),
    (2, "debug"),
    (3, "capture"),
    (4, "trace"),
    (5, "policy-verdict"),
    (7, "trace-sock"),
    (129, "l7"),
    (130, "agent"),
];

pub const EVENT_DROP: i32 = 1;
pub const EVENT_CAPTURE: i32 = 3;
pub const EVENT_TRACE: i32 = 4;
pub const EVENT_POLICY_VERDICT: i32 = 5;
pub const EVENT_TRACE_SOCK: i32 = 7;
pub const EVENT_L7: i32 = 129;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(drop_reason_text(181), "Policy denied by denylist");
        assert_eq!(drop_reason_text(156), "Invalid IPv6 extension header");
        assert_eq!(drop_reason_text(157), "IP fragmentation not supported");
        assert_eq!(
            drop_reason_text(175),
            "First logical datagram fragment not found"
        );
        assert_eq!(drop_reason_text(159), "159, 0");
        assert_eq!(drop_reason_text(999), "999, 0");
        assert_eq!(trace_point_name(0), "to-endpoint");
        assert_eq!(trace_point_name(11), "to-network");
        assert_eq!(trace_point_name(42), "42");
        assert_eq!(identity_token(4), "(health)");
        assert_eq!(identity_token(16777218), "(ID:16777218)");
        assert_eq!(identity_by_name("world"), Some(2));
        assert_eq!(match_type_name(2), "L3-L4");
    }
}
