//! The datapath's binary interface, mirrored from `bpf/datapath.h`: map keys and values and the
//! event record. Plain data with explicit padding; the sizes are asserted at compile time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The pin layout. Pinned maps are reused as they are, so a change to any struct here or in
/// `datapath.h` must bump this: a new agent then starts a fresh tree next to the old one.
/// 3: the audit view (`AUDIT_VIEW_GENERATION` rows, `EP_AUDIT_*` flags); a v2 program would
/// ignore them and drop nothing an audit policy denies, but also report nothing, so it is replaced.
/// 4: the 128-byte event with the socket and process behind it, the `sock_procs` and
/// `cgroup_endpoints` maps, and the cgroup hooks.
pub const LAYOUT_VERSION: u32 = 4;

pub const EP_READY: u32 = 1 << 0;
pub const EP_EGRESS_ENFORCED: u32 = 1 << 1;
pub const EP_INGRESS_ENFORCED: u32 = 1 << 2;
pub const EP_AUDIT: u32 = 1 << 3;
/// The endpoint has a full view (an audit-mode policy selects it): its rows are under
/// `generation | AUDIT_VIEW_GENERATION`, looked up when the enforced view lets a packet through.
pub const EP_AUDIT_VIEW: u32 = 1 << 4;
/// The full view enforces (default deny) egress / ingress.
pub const EP_AUDIT_EGRESS_ENFORCED: u32 = 1 << 5;
pub const EP_AUDIT_INGRESS_ENFORCED: u32 = 1 << 6;
/// A hostNetwork pod's entry in `cgroup_endpoints`: judged at connect()/sendmsg() by the cgroup
/// hooks, since its packets never cross a pod interface.
pub const EP_HOST_NETWORK: u32 = 1 << 7;

/// The remote identity of the full view's "who turns default deny on" row, one per direction
/// where an audit policy does: (prefix length 104, identity this, protocol 0, port 0) → the rule
/// ID a full-view miss (133) is reported against. No identity is ever this, so no packet's
/// lookup meets the row.
pub const AUDIT_DEFAULT_DENY_IDENTITY: u32 = u32::MAX;

/// The generation bit of the full view's policy rows. The enforced view's rows use the
/// endpoint's generation as is; generations themselves stay below this bit.
pub const AUDIT_VIEW_GENERATION: u32 = 1 << 31;

pub const IPC_PROTECTED: u32 = 1 << 0;

pub const IFACE_HAS_V4: u32 = 1 << 0;
pub const IFACE_HAS_V6: u32 = 1 << 1;

/// `Config::flags`: a routing rule ahead of the proxy's would take redirected packets elsewhere,
/// so the datapath drops them instead of redirecting.
pub const CFG_PROXY_ROUTE_SHADOWED: u32 = 1 << 0;
/// `Config::flags`: answer a policy deny (`--deny-response reject`): ECONNREFUSED at the cgroup
/// hooks, a TCP RST or an ICMP unreachable back into the pod at TC. Without it denials are
/// silent drops.
pub const CFG_DENY_REJECT: u32 = 1 << 1;

pub const POL_DENY: u8 = 1 << 0;
pub const POLICY_FIXED_BITS: u32 = 104;
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

pub const EV_POLICY_VERDICT: u8 = 1;
pub const EV_DROP: u8 = 2;
pub const EV_TRACE: u8 = 3;

/// `Event::proc_flags`: the socket's cookie and cgroup id are known.
pub const PROC_HAS_SOCK: u32 = 1 << 0;
/// The process (pid, uid, comm) is known: the socket met a cgroup hook.
pub const PROC_HAS_TASK: u32 = 1 << 1;
/// Judged at connect()/sendmsg() by a cgroup hook: there was no packet, `ifindex` is 0 and the
/// source address may be unspecified.
pub const PROC_FROM_HOOK: u32 = 1 << 2;
/// The deny was answered: ECONNREFUSED at the hook, a TCP RST or ICMP unreachable at TC.
pub const PROC_REJECTED: u32 = 1 << 3;

/// The counters, in the order of `enum counter` in `datapath.h`.
pub const COUNTER_NAMES: [&str; 17] = [
    "packets",
    "allowed",
    "denied",
    "redirected",
    "audited",
    "reply",
    "established",
    "proxy_down",
    "not_ready",
    "ringbuf_full",
    "invalid_source",
    "unsupported_l3",
    "fragment_dropped",
    "invalid_packet",
    // Denials answered with a TCP RST or ICMP unreachable (`--deny-response reject`).
    "rejected",
    // connect()/sendmsg() refused by a cgroup hook (hostNetwork pods).
    "hook_denied",
    // connect()/sendmsg() of a hostNetwork pod whose policy is not in place yet: allowed.
    "hook_not_ready",
];

/// `hostnet_redirects` key: a redirected hostNetwork connection by its client port on loopback.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostnetKey {
    /// 4 or 6: the family of the connection the proxy accepts (a v4-mapped socket's is 4).
    pub ipver: u16,
    /// The client's local port, host order.
    pub port: u16,
    pub pad: u32,
}

/// `hostnet_redirects` value: where a redirected hostNetwork connection was going, and who made it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostnetValue {
    /// The original destination.
    pub daddr: Addr,
    /// Host order.
    pub dport: u16,
    pub pad: u16,
    pub ep_id: u32,
    /// 0 when unknown.
    pub pid: u32,
    pub uid: u32,
    pub comm: [u8; 16],
    pub cgroup_id: u64,
    pub cookie: u64,
    /// CLOCK_MONOTONIC when the sockops program filed it (the SYN was about to leave).
    pub created_ns: u64,
}

impl HostnetValue {
    /// The command name: bytes up to the first NUL, lossy UTF-8.
    pub fn comm(&self) -> String {
        let end = self.comm.iter().position(|b| *b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }
}

/// An address as the maps hold it: IPv4 is IPv4-mapped (`::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Addr(pub [u8; 16]);

/// A prefix as the maps key it. They hold IPv4 as IPv4-mapped IPv6, so `::ffff:a.b.c.d/128` and
/// `a.b.c.d/32` are one key there. A mapped prefix is therefore written as its IPv4 form;
/// otherwise the second write would replace the first, and with it the address's identity.
pub fn canonical_prefix(net: &ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(ipnet::IpNet::V4)
                .unwrap_or(*net),
            None => *net,
        },
        _ => *net,
    }
}

impl Addr {
    pub fn ip(&self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(v4) => Addr(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => Addr(v6.octets()),
        }
    }
}

impl From<Ipv4Addr> for Addr {
    fn from(ip: Ipv4Addr) -> Addr {
        Addr::from(IpAddr::V4(ip))
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointInfo {
    pub ep_id: u32,
    pub identity: u32,
    pub generation: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpcacheValue {
    pub identity: u32,
    pub flags: u32,
}

/// The data part of a policy LPM key (the prefix length travels beside it).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PolicyKey {
    pub ep_id: u32,
    pub generation: u32,
    pub identity: u32,
    pub dir: u8,
    pub proto: u8,
    /// Network byte order, so that a port prefix is the port's high bits.
    pub dport_be: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyValue {
    pub flags: u8,
    /// The protocol and port bits of the key (`mapstate::Key::prefix_len`).
    pub prefixlen_l4: u8,
    pub proxy_rank: u8,
    pub match_type: u8,
    pub proxy_port: u16,
    pub pad: u16,
    pub rule_id: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtKey {
    pub lo_addr: Addr,
    pub hi_addr: Addr,
    pub lo_port_be: u16,
    pub hi_port_be: u16,
    pub ifindex: u32,
    pub proto: u8,
    pub pad: [u8; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtValue {
    pub created_ns: u64,
    pub flags: u32,
    pub rule_id: u32,
    pub proxy_port: u16,
    pub dir: u8,
    pub orig_lo: u8,
    pub pad: [u8; 2],
    pub epoch: u32,
    pub pad2: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// Bumped after every table change: connections judged under an older epoch are judged again.
    pub policy_epoch: u32,
    /// `CFG_*` bits.
    pub flags: u32,
}

/// A pod's host-side interface: the addresses its pod may send from, and its endpoint.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IfaceInfo {
    pub ip4: Addr,
    pub ip6: Addr,
    /// `IFACE_HAS_*` bits.
    pub flags: u32,
    pub ep_id: u32,
    pub identity: u32,
    pub pad: u32,
}

impl IfaceInfo {
    /// The interface of an endpoint with these addresses (the first of each family is the pod's;
    /// Kubernetes gives a pod at most one per family).
    pub fn new(ips: &[IpAddr], ep_id: u32, identity: u32) -> IfaceInfo {
        let mut i = IfaceInfo {
            ep_id,
            identity,
            ..Default::default()
        };
        for ip in ips {
            match ip {
                IpAddr::V4(_) if i.flags & IFACE_HAS_V4 == 0 => {
                    i.ip4 = Addr::from(*ip);
                    i.flags |= IFACE_HAS_V4;
                }
                IpAddr::V6(_) if i.flags & IFACE_HAS_V6 == 0 => {
                    i.ip6 = Addr::from(*ip);
                    i.flags |= IFACE_HAS_V6;
                }
                _ => {}
            }
        }
        i
    }
}

/// One datapath event, decoded from the ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub saddr: Addr,
    pub daddr: Addr,
    pub ep_id: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub rule_id: u32,
    pub ifindex: u32,
    pub pkt_len: u32,
    /// Host order. For ICMP, `sport` is the code and `dport` the type.
    pub sport: u16,
    pub dport: u16,
    pub proxy_port: u16,
    pub kind: u8,
    pub sub_type: u8,
    pub proto: u8,
    pub ipver: u8,
    pub tcp_flags: u8,
    pub dir: u8,
    pub verdict: u8,
    pub match_type: u8,
    pub is_reply: bool,
    /// `bpf_get_socket_cookie` of the sending socket; 0 when unknown.
    pub sock_cookie: u64,
    /// The cgroup v2 id (the directory's inode number) of the sending socket's cgroup.
    pub cgroup_id: u64,
    /// The thread group id in the host's pid namespace; 0 when unknown.
    pub pid: u32,
    pub uid: u32,
    /// The task's comm, NUL-padded.
    pub comm: [u8; 16],
    /// `PROC_*` bits: which of the fields above are known, and how the event came to be.
    pub proc_flags: u32,
}

impl Event {
    pub const SIZE: usize = 128;

    /// The process name: `comm` up to its first NUL, lossy UTF-8.
    pub fn comm(&self) -> String {
        let end = self
            .comm
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.comm.len());
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }

    /// Decodes a ring-buffer record; `None` if it is not one whole event.
    pub fn decode(b: &[u8]) -> Option<Event> {
        let b: &[u8; Self::SIZE] = b.get(..Self::SIZE)?.try_into().ok()?;
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let be16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let mut saddr = [0; 16];
        saddr.copy_from_slice(&b[8..24]);
        let mut daddr = [0; 16];
        daddr.copy_from_slice(&b[24..40]);
        let u64_at = |i: usize| {
            let mut v = [0; 8];
            v.copy_from_slice(&b[i..i + 8]);
            u64::from_ne_bytes(v)
        };
        let mut comm = [0; 16];
        comm.copy_from_slice(&b[104..120]);
        Some(Event {
            ts_ns: u64_at(0),
            saddr: Addr(saddr),
            daddr: Addr(daddr),
            ep_id: u32_at(40),
            src_identity: u32_at(44),
            dst_identity: u32_at(48),
            rule_id: u32_at(52),
            ifindex: u32_at(56),
            pkt_len: u32_at(60),
            sport: be16_at(64),
            dport: be16_at(66),
            proxy_port: u16::from_ne_bytes([b[68], b[69]]),
            kind: b[70],
            sub_type: b[71],
            proto: b[72],
            ipver: b[73],
            tcp_flags: b[74],
            dir: b[75],
            verdict: b[76],
            match_type: b[77],
            is_reply: b[78] != 0,
            sock_cookie: u64_at(80),
            cgroup_id: u64_at(88),
            pid: u32_at(96),
            uid: u32_at(100),
            comm,
            proc_flags: u32_at(120),
        })
    }

    /// The inverse of `decode`, for tests and replay.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.ts_ns.to_ne_bytes());
        b[8..24].copy_from_slice(&self.saddr.0);
        b[24..40].copy_from_slice(&self.daddr.0);
        for (i, v) in [
            self.ep_id,
            self.src_identity,
            self.dst_identity,
            self.rule_id,
            self.ifindex,
            self.pkt_len,
        ]
        .into_iter()
        .enumerate()
        {
            b[40 + 4 * i..44 + 4 * i].copy_from_slice(&v.to_ne_bytes());
        }
        b[64..66].copy_from_slice(&self.sport.to_be_bytes());
        b[66..68].copy_from_slice(&self.dport.to_be_bytes());
        b[68..70].copy_from_slice(&self.proxy_port.to_ne_bytes());
        b[70] = self.kind;
        b[71] = self.sub_type;
        b[72] = self.proto;
        b[73] = self.ipver;
        b[74] = self.tcp_flags;
        b[75] = self.dir;
        b[76] = self.verdict;
        b[77] = self.match_type;
        b[78] = u8::from(self.is_reply);
        b[80..88].copy_from_slice(&self.sock_cookie.to_ne_bytes());
        b[88..96].copy_from_slice(&self.cgroup_id.to_ne_bytes());
        b[96..100].copy_from_slice(&self.pid.to_ne_bytes());
        b[100..104].copy_from_slice(&self.uid.to_ne_bytes());
        b[104..120].copy_from_slice(&self.comm);
        b[120..124].copy_from_slice(&self.proc_flags.to_ne_bytes());
        b
    }
}

const _: () = {
    assert!(size_of::<Addr>() == 16);
    assert!(size_of::<EndpointInfo>() == 16);
    assert!(size_of::<IpcacheValue>() == 8);
    assert!(size_of::<PolicyKey>() == 16);
    assert!(size_of::<PolicyValue>() == 12);
    assert!(size_of::<CtKey>() == 44);
    assert!(size_of::<CtValue>() == 32);
    assert!(size_of::<Config>() == 8);
    assert!(size_of::<IfaceInfo>() == 48);
    assert!(size_of::<HostnetKey>() == 8);
    assert!(size_of::<HostnetValue>() == 72);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_round_trip() {
        for ip in ["10.244.1.17", "169.254.169.254", "fd00:ec2::254", "::1"] {
            let ip: IpAddr = ip.parse().expect("test address");
            assert_eq!(Addr::from(ip).ip(), ip);
        }
        assert_eq!(
            Addr::from(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))).0[10..],
            [0xff, 0xff, 1, 2, 3, 4]
        );
    }

    #[test]
    fn events_round_trip() {
        let e = Event {
            ts_ns: 123_456_789,
            saddr: Addr::from(Ipv4Addr::new(10, 0, 0, 1)),
            daddr: Addr::from(Ipv4Addr::new(169, 254, 169, 254)),
            ep_id: 7,
            src_identity: 14226,
            dst_identity: 16_777_217,
            rule_id: 3,
            ifindex: 42,
            pkt_len: 74,
            sport: 40132,
            dport: 80,
            proxy_port: 15001,
            kind: EV_POLICY_VERDICT,
            sub_type: 0,
            proto: 6,
            ipver: 4,
            tcp_flags: 2,
            dir: DIR_EGRESS,
            verdict: 2,
            match_type: 1,
            is_reply: false,
            sock_cookie: 4101,
            cgroup_id: 120,
            pid: 17708,
            uid: 1337,
            comm: *b"python3\0\0\0\0\0\0\0\0\0",
            proc_flags: PROC_HAS_SOCK | PROC_HAS_TASK,
        };
        assert_eq!(Event::decode(&e.encode()), Some(e));
        assert_eq!(Event::decode(&e.encode()[..127]), None);
        assert_eq!(e.comm(), "python3");
        let full = Event {
            comm: *b"0123456789abcdef",
            ..e
        };
        assert_eq!(full.comm(), "0123456789abcdef");
    }
}
