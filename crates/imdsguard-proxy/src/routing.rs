//! The policy routing the datapath's proxy redirect needs: packets assigned to the proxy's socket
//! with `bpf_sk_assign` keep their non-local destination, so the mark the datapath sets selects
//! a table where every address is local (as Cilium's `ip rule fwmark 0x200/0xf00 lookup 2004`).
//!
//! # Why the priority is fixed
//!
//! The kernel evaluates policy-routing rules in priority order, lowest first, and the first rule
//! whose lookup yields a route decides. A rule added without a priority lands just below the
//! lowest existing one, so where it lands depends on what ran before (32765 on a bare node), and
//! any rule another component adds at a lower priority (AWS VPC CNI, Azure CNI, a lab at 90)
//! then routes redirected packets past the proxy: the SYN is forwarded to the real destination
//! and the request is never judged. So the rule goes at [`PREF`] (9, Cilium's choice for the same
//! rule, ahead of everything CNIs add), and [`install`] moves a rule with our selector found at
//! any other priority there.
//!
//! # Shadowing
//!
//! A fixed priority still leaves rules at lower priorities (or at the same one, added earlier:
//! the kernel keeps equal priorities in insertion order) that could take redirected packets
//! first. A rule *shadows* ours when it is evaluated before ours and some redirected packet can
//! match it, and what it does then sends that packet elsewhere: a packet whose fwmark carries
//! our mark under `0xf00`, from any pod address, arriving on any interface but `lo`, to any
//! destination. [`status`] reports, per address family, whether our rule and route are there,
//! at which priority, and which rules shadow them ([`shadowing`] is the list alone); the agent
//! checks it at start and on every link change, and fails closed for the pods it affects
//! ([`Status::reaches_proxy`]).
//!
//! Everything goes through rtnetlink on a socket of this process ([`imdsguard_netns::rtnl`]): no
//! `ip` program is run.

use imdsguard_netns::rtnl::{Rtnl, context};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, Nla};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{
    RuleAction, RuleAttribute, RuleFlags, RuleHeader, RuleMessage, RulePortRange, RuleUidRange,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::fmt;
use std::io;
use std::net::IpAddr;

/// The mark the datapath sets on packets it assigns to the proxy (`Options::proxy_mark` in
/// imdsguard-datapath), and the routing table that mark selects (Cilium's 0x200 and 2004).
pub const MARK: u32 = 0x200;
pub const TABLE: u32 = 2004;

/// The priority of our rule: ahead of the rules CNIs add (AWS VPC CNI's start at 512), and the
/// same as Cilium's for the same selector, so the two agree.
pub const PREF: u32 = 9;

/// The bits of the fwmark the datapath owns; others may be set by anything (a CNI's
/// `CONNMARK --restore-mark`), so checks treat them as unknown.
pub const MARK_MASK: u32 = 0xf00;

/// An address family with its own rule list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn netlink(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A rule evaluated before ours that can take redirected packets away from the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadow {
    pub family: Family,
    pub priority: u32,
    /// The rule as `ip rule` prints it: `5: from all to 169.254.169.254 lookup 100`.
    pub rule: String,
    parsed: Rule,
    redirected: Redirected,
    our_priority: u32,
}

impl Shadow {
    /// Whether the rule can catch redirected packets from a pod with source address `src` (of
    /// any family: one of the other family is never caught). A rule with a `from` selector
    /// catches only some pods; every other selector is about something the pod does not fix
    /// (destination, ports, the interface it arrives on under a bridge), so it counts as
    /// catching.
    pub fn may_catch_from(&self, src: IpAddr) -> bool {
        Family::of(src) == self.family
            && self.parsed.diverts(
                &Redirected {
                    src: Some(src),
                    ..self.redirected
                },
                self.our_priority,
            )
    }
}

impl fmt::Display for Shadow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rule {}", self.family, self.rule)
    }
}

/// What the kernel holds for the redirect in one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyStatus {
    pub family: Family,
    /// The priority of our rule (the first with our selector, as the kernel evaluates them);
    /// `None` when it is missing (install has not run, or something removed it).
    pub rule: Option<u32>,
    /// Whether the table has its `local default dev lo` route; without it the rule selects a
    /// table that routes nothing and the kernel goes on to the next rules.
    pub route: bool,
    /// The rules ahead of ours that can catch redirected packets (ahead of where [`install`]
    /// would put it when it is missing), in evaluation order.
    pub shadowed_by: Vec<Shadow>,
}

impl FamilyStatus {
    /// Whether every redirected packet of this family reaches the proxy.
    pub fn intact(&self) -> bool {
        self.rule.is_some() && self.route && self.shadowed_by.is_empty()
    }

    /// What keeps redirected packets of this family from the proxy, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.rule.is_none() {
            out.push(format!("{}: the proxy's rule is missing", self.family));
        }
        if !self.route {
            out.push(format!(
                "{}: the proxy's table has no `local default dev lo` route",
                self.family
            ));
        }
        out.extend(
            self.shadowed_by
                .iter()
                .map(|s| format!("{}: shadowed by rule {}", s.family, s.rule)),
        );
        out
    }
}

impl fmt::Display for FamilyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rule {
            Some(p) => write!(f, "{}: rule at priority {p}", self.family)?,
            None => write!(f, "{}: rule missing", self.family)?,
        }
        if !self.route {
            f.write_str(", route missing")?;
        }
        if self.shadowed_by.is_empty() {
            f.write_str(", not shadowed")
        } else {
            f.write_str(", shadowed by ")?;
            for (i, s) in self.shadowed_by.iter().enumerate() {
                if i > 0 {
                    f.write_str("; ")?;
                }
                write!(f, "`{}`", s.rule)?;
            }
            Ok(())
        }
    }
}

/// What the kernel holds for the redirect, per address family (IPv6 absent when the kernel has
/// none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub families: Vec<FamilyStatus>,
}

impl Status {
    /// Whether every redirected packet, of every family, reaches the proxy.
    pub fn intact(&self) -> bool {
        self.families.iter().all(FamilyStatus::intact)
    }

    pub fn family(&self, family: Family) -> Option<&FamilyStatus> {
        self.families.iter().find(|s| s.family == family)
    }

    /// Every shadowing rule, IPv4 first.
    pub fn shadows(&self) -> impl Iterator<Item = &Shadow> {
        self.families.iter().flat_map(|s| s.shadowed_by.iter())
    }

    /// What keeps redirected packets from the proxy, one line each (empty when intact).
    pub fn problems(&self) -> Vec<String> {
        self.families
            .iter()
            .flat_map(FamilyStatus::problems)
            .collect()
    }

    /// Whether redirected packets from a pod with source address `src` reach the proxy: our
    /// rule and route are there for its family and no rule ahead can catch them. Where this is
    /// false, the pod's HTTP-filtered traffic must fail closed.
    pub fn reaches_proxy(&self, src: IpAddr) -> bool {
        self.family(Family::of(src)).is_some_and(|s| {
            s.rule.is_some() && s.route && !s.shadowed_by.iter().any(|r| r.may_catch_from(src))
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.families.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// Makes the state exact, for IPv4 and (when the kernel has it) IPv6: the `local default dev lo`
/// route in `table` (replaced), and one rule `fwmark <mark>/0xf00 lookup <table>` at [`PREF`];
/// rules with that selector at other priorities are removed. Idempotent.
pub fn install(mark: u32, table: u32) -> io::Result<()> {
    let mut nl = Rtnl::open()?;
    let lo = loopback_index()?;
    for family in [Family::V4, Family::V6] {
        let Some(rules) = nl.rules(family)? else {
            continue;
        };
        // The route first: once the rule exists, marked packets must find a table that
        // delivers them locally rather than one that sends them on to the next rules.
        nl.replace_local_default(family, table, lo)?;
        let ours: Vec<&Rule> = rules.iter().filter(|r| r.is_ours(mark, table)).collect();
        let mut kept = false;
        if !ours.iter().any(|r| r.priority == PREF) {
            nl.add_rule(family, mark, table, PREF)?;
            kept = true;
        }
        // Removed only after ours is at PREF, so redirected packets always have a rule.
        for r in ours {
            if r.priority == PREF && !kept {
                kept = true;
                continue;
            }
            nl.del_rule(family, mark, table, r.priority)?;
        }
    }
    Ok(())
}

/// Whether a rule into `table` exists in either family (so a test or the demo knows whether it
/// added it).
pub fn installed(table: u32) -> bool {
    let Ok(mut nl) = Rtnl::open() else {
        return false;
    };
    [Family::V4, Family::V6].into_iter().any(|family| {
        nl.rules(family).is_ok_and(|rules| {
            rules
                .unwrap_or_default()
                .iter()
                .any(|r| r.action == Action::Lookup(table))
        })
    })
}

/// Removes what `install` added: rules with our selector at any priority, and every route in
/// `table`. Best effort: what cannot be removed stays.
pub fn uninstall(mark: u32, table: u32) {
    let Ok(mut nl) = Rtnl::open() else {
        return;
    };
    for family in [Family::V4, Family::V6] {
        let Ok(Some(rules)) = nl.rules(family) else {
            continue;
        };
        for r in rules.iter().filter(|r| r.is_ours(mark, table)) {
            let _ = nl.del_rule(family, mark, table, r.priority);
        }
        if let Ok(routes) = nl.routes(family, table) {
            for route in routes {
                let _ = nl.ack(RouteNetlinkMessage::DelRoute(route), 0);
            }
        }
    }
}

/// Whether the redirect's rule and route are there, where, and what shadows them, per family.
pub fn status(mark: u32, table: u32) -> io::Result<Status> {
    let mut nl = Rtnl::open()?;
    let lo = loopback_index()?;
    let mut families = Vec::new();
    for family in [Family::V4, Family::V6] {
        let Some(rules) = nl.rules(family)? else {
            continue;
        };
        let route = nl
            .routes(family, table)?
            .iter()
            .any(|r| is_local_default(r, lo));
        families.push(family_status(family, &rules, mark, table, route));
    }
    Ok(Status { families })
}

/// The rules ahead of ours that can catch redirected packets, every family (see [`status`] for
/// whether ours is there at all).
pub fn shadowing(mark: u32, table: u32) -> io::Result<Vec<Shadow>> {
    Ok(status(mark, table)?.shadows().cloned().collect())
}

fn family_status(
    family: Family,
    rules: &[Rule],
    mark: u32,
    table: u32,
    route: bool,
) -> FamilyStatus {
    let ours = rules.iter().position(|r| r.is_ours(mark, table));
    // The kernel appends a rule after those of equal priority, so a missing rule would land
    // behind every rule up to PREF.
    let (ahead, our_priority) = match ours {
        Some(i) => (&rules[..i], rules[i].priority),
        None => (
            &rules[..rules.partition_point(|r| r.priority <= PREF)],
            PREF,
        ),
    };
    let every = Redirected {
        mark,
        table,
        src: None,
    };
    let shadowed_by = ahead
        .iter()
        .filter(|r| r.diverts(&every, our_priority))
        .map(|r| Shadow {
            family,
            priority: r.priority,
            rule: r.to_string(),
            parsed: r.clone(),
            redirected: every,
            our_priority,
        })
        .collect();
    FamilyStatus {
        family,
        rule: ours.map(|i| rules[i].priority),
        route,
        shadowed_by,
    }
}

/// The redirected packets a check is about, every one (`src: None`) or one pod's: the mark the
/// datapath gives them and the table that mark should select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Redirected {
    mark: u32,
    table: u32,
    src: Option<IpAddr>,
}

/// How one selector meets a set of packets: whether some packet satisfies it and whether some
/// does not (both matter, since a `not` rule matches where any selector fails).
#[derive(Clone, Copy)]
struct Meets {
    some: bool,
    not_all: bool,
}

const ALL: Meets = Meets {
    some: true,
    not_all: false,
};
const NONE: Meets = Meets {
    some: false,
    not_all: true,
};
const SOME: Meets = Meets {
    some: true,
    not_all: true,
};

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// `lookup`; table 0 with `l3mdev` (the VRF's table).
    Lookup(u32),
    Goto(u32),
    Nop,
    Blackhole,
    Unreachable,
    Prohibit,
    Other(u8),
}

impl Default for Action {
    /// An action this code does not know: it can catch a packet.
    fn default() -> Action {
        Action::Other(0)
    }
}

const RT_TABLE_LOCAL: u32 = 255;
const FRA_PAD: u16 = 18;
const IPPROTO_TCP: u8 = 6;

/// A rule as dumped, with what matching and printing need.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Rule {
    priority: u32,
    invert: bool,
    src: Option<(IpAddr, u8)>,
    dst: Option<(IpAddr, u8)>,
    tos: u8,
    /// (mark, mask)
    fwmark: Option<(u32, u32)>,
    iif: Option<String>,
    iif_detached: bool,
    oif: Option<String>,
    oif_detached: bool,
    /// A goto whose target priority has no rule yet: it goes on to the next rule until one is
    /// added there.
    unresolved: bool,
    l3mdev: bool,
    uid_range: Option<(u32, u32)>,
    ip_proto: Option<u8>,
    sport: Option<(u16, u16)>,
    dport: Option<(u16, u16)>,
    tun_id: Option<u64>,
    /// Attribute types this crate does not know, taken as selectors on any packet field.
    unknown: Vec<u16>,
    suppress_prefixlen: Option<u32>,
    suppress_ifgroup: Option<u32>,
    action: Action,
}

impl Rule {
    fn parse(msg: &RuleMessage) -> Rule {
        let h = &msg.header;
        let mut table = u32::from(h.table);
        let mut goto = 0;
        let (mut mark, mut mask) = (None, None);
        let mut r = Rule {
            invert: h.flags.contains(RuleFlags::Invert),
            tos: h.tos,
            iif_detached: h.flags.contains(RuleFlags::IifDetached),
            oif_detached: h.flags.contains(RuleFlags::OifDetached),
            unresolved: h.flags.contains(RuleFlags::Unresolved),
            ..Rule::default()
        };
        for a in &msg.attributes {
            match a {
                RuleAttribute::Destination(ip) => r.dst = Some((*ip, h.dst_len)),
                RuleAttribute::Source(ip) => r.src = Some((*ip, h.src_len)),
                RuleAttribute::Iifname(n) => r.iif = Some(n.clone()),
                RuleAttribute::Oifname(n) => r.oif = Some(n.clone()),
                RuleAttribute::Goto(t) => goto = *t,
                RuleAttribute::Priority(p) => r.priority = *p,
                RuleAttribute::FwMark(m) => mark = Some(*m),
                RuleAttribute::FwMask(m) => mask = Some(*m),
                RuleAttribute::TunId(t) if *t != 0 => r.tun_id = Some(*t),
                // The kernel dumps these with -1 for "not set".
                RuleAttribute::SuppressIfGroup(g) if *g != u32::MAX => {
                    r.suppress_ifgroup = Some(*g)
                }
                RuleAttribute::SuppressPrefixLen(l) if *l != u32::MAX => {
                    r.suppress_prefixlen = Some(*l)
                }
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::L3MDev(on) => r.l3mdev = *on,
                RuleAttribute::UidRange(RuleUidRange { start, end }) => {
                    r.uid_range = Some((*start, *end))
                }
                RuleAttribute::IpProtocol(p) => r.ip_proto = Some(u8::from(*p)),
                RuleAttribute::SourcePortRange(RulePortRange { start, end }) => {
                    r.sport = Some((*start, *end))
                }
                RuleAttribute::DestinationPortRange(RulePortRange { start, end }) => {
                    r.dport = Some((*start, *end))
                }
                // Neither selects packets: a tag on the route found, and who added the rule.
                RuleAttribute::Realm(_) | RuleAttribute::Protocol(_) => {}
                // Their "not set" values, left out above.
                RuleAttribute::TunId(_)
                | RuleAttribute::SuppressIfGroup(_)
                | RuleAttribute::SuppressPrefixLen(_) => {}
                other if other.kind() == FRA_PAD => {}
                other => r.unknown.push(other.kind()),
            }
        }
        // The kernel dumps the mask whenever a mark is set; a mark alone is the full mask.
        if mark.is_some() || mask.is_some() {
            r.fwmark = Some((mark.unwrap_or(0), mask.unwrap_or(u32::MAX)));
        }
        r.action = match h.action {
            RuleAction::ToTable => Action::Lookup(table),
            RuleAction::Goto => Action::Goto(goto),
            RuleAction::Nop => Action::Nop,
            RuleAction::Blackhole => Action::Blackhole,
            RuleAction::Unreachable => Action::Unreachable,
            RuleAction::Prohibit => Action::Prohibit,
            other => Action::Other(u8::from(other)),
        };
        r
    }

    /// Exactly `fwmark <mark>/0xf00 lookup <table>`, nothing else: a rule that also selects on
    /// something else is someone else's and stays.
    fn is_ours(&self, mark: u32, table: u32) -> bool {
        self.action == Action::Lookup(table)
            && self.fwmark == Some((mark, MARK_MASK))
            && !self.invert
            && self.src.is_none()
            && self.dst.is_none()
            && self.tos == 0
            && self.iif.is_none()
            && self.oif.is_none()
            && !self.l3mdev
            && self.uid_range.is_none()
            && self.ip_proto.is_none()
            && self.sport.is_none()
            && self.dport.is_none()
            && self.tun_id.is_none()
            && self.unknown.is_empty()
            && self.suppress_prefixlen.is_none()
            && self.suppress_ifgroup.is_none()
    }

    /// How each selector meets the packets, as the kernel matches them (`fib_rule_match`,
    /// `fib4_rule_match`, `fib6_rule_match`) for a packet routed on input from a pod.
    fn selectors(&self, p: &Redirected) -> Vec<Meets> {
        let mut out = Vec::new();
        if let Some(sel) = self.src {
            out.push(match p.src {
                _ if sel.1 == 0 => ALL,
                None => SOME,
                Some(src) if in_prefix(src, sel) => ALL,
                Some(_) => NONE,
            });
        }
        if let Some((_, len)) = self.dst {
            out.push(if len == 0 { ALL } else { SOME });
        }
        if self.tos != 0 {
            out.push(SOME);
        }
        if let Some((m, k)) = self.fwmark {
            // Only our bits are known; the rule can go either way on the others.
            let some = (m ^ p.mark) & k & MARK_MASK == 0;
            out.push(Meets {
                some,
                not_all: !some || k & !MARK_MASK != 0,
            });
        }
        if let Some(iif) = &self.iif {
            // Redirected packets come in on a pod's interface (a veth, or the bridge over it),
            // never on lo; a rule whose interface is gone matches nothing until it comes back,
            // and the agent checks again on link changes.
            out.push(if self.iif_detached || iif == "lo" {
                NONE
            } else {
                SOME
            });
        }
        if self.oif.is_some() {
            // Input routing has no output interface yet: only locally generated traffic can
            // match an oif selector.
            out.push(NONE);
        }
        if self.l3mdev {
            // A pod's interface could be enslaved to a VRF.
            out.push(SOME);
        }
        if let Some((start, _)) = self.uid_range {
            // Forwarded packets carry uid 0 (`sock_net_uid(net, NULL)`).
            out.push(if start == 0 { ALL } else { NONE });
        }
        if let Some(proto) = self.ip_proto {
            // The datapath redirects TCP only.
            out.push(if proto == IPPROTO_TCP { ALL } else { NONE });
        }
        for range in [self.sport, self.dport].into_iter().flatten() {
            out.push(if range == (0, u16::MAX) { ALL } else { SOME });
        }
        if self.tun_id.is_some() {
            // Only packets from a collect_md tunnel carry a tunnel id; pods' interfaces aren't.
            out.push(NONE);
        }
        out.extend(self.unknown.iter().map(|_| SOME));
        out
    }

    /// Whether the rule can match some of the packets.
    fn matches(&self, p: &Redirected) -> bool {
        let selectors = self.selectors(p);
        if self.invert {
            selectors.iter().any(|s| s.not_all)
        } else {
            selectors.iter().all(|s| s.some)
        }
    }

    /// Whether, ahead of our rule at `our_priority`, this rule can send some of the packets
    /// elsewhere than the proxy.
    fn diverts(&self, p: &Redirected, our_priority: u32) -> bool {
        let harmless = match self.action {
            // The local table holds only the node's own addresses and redirected packets go to
            // others, so its lookup finds nothing and the kernel goes on to the next rule.
            Action::Lookup(RT_TABLE_LOCAL) => true,
            // Another component's rule into our table does what ours does.
            Action::Lookup(t) if t == p.table => true,
            Action::Nop => true,
            // A goto that lands at or before our rule still reaches it. One past it counts even
            // unresolved: the rule that resolves it can come at any time, and adding a rule is
            // no link change that would make the agent look again.
            Action::Goto(target) => target <= our_priority,
            _ => false,
        };
        !harmless && self.matches(p)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.priority)?;
        if self.invert {
            f.write_str("not ")?;
        }
        match self.src {
            Some(p) if p.1 > 0 => write!(f, "from {}", Prefix(p))?,
            _ => f.write_str("from all")?,
        }
        if let Some(p) = self.dst.filter(|p| p.1 > 0) {
            write!(f, " to {}", Prefix(p))?;
        }
        if self.tos != 0 {
            write!(f, " tos {:#x}", self.tos)?;
        }
        if let Some((m, k)) = self.fwmark {
            write!(f, " fwmark {m:#x}")?;
            if k != u32::MAX {
                write!(f, "/{k:#x}")?;
            }
        }
        if let Some(iif) = &self.iif {
            write!(f, " iif {iif}")?;
            if self.iif_detached {
                f.write_str(" [detached]")?;
            }
        }
        if let Some(oif) = &self.oif {
            write!(f, " oif {oif}")?;
            if self.oif_detached {
                f.write_str(" [detached]")?;
            }
        }
        if let Some((a, b)) = self.uid_range {
            write!(f, " uidrange {a}-{b}")?;
        }
        if let Some(p) = self.ip_proto {
            match p {
                IPPROTO_TCP => f.write_str(" ipproto tcp")?,
                17 => f.write_str(" ipproto udp")?,
                1 => f.write_str(" ipproto icmp")?,
                58 => f.write_str(" ipproto ipv6-icmp")?,
                n => write!(f, " ipproto {n}")?,
            }
        }
        for (name, range) in [("sport", self.sport), ("dport", self.dport)] {
            match range {
                Some((a, b)) if a == b => write!(f, " {name} {a}")?,
                Some((a, b)) => write!(f, " {name} {a}-{b}")?,
                None => {}
            }
        }
        if let Some(id) = self.tun_id {
            write!(f, " tun_id {id}")?;
        }
        for kind in &self.unknown {
            write!(f, " [attribute {kind}]")?;
        }
        match self.action {
            Action::Lookup(0) if self.l3mdev => f.write_str(" lookup [l3mdev-table]")?,
            Action::Lookup(t) => match t {
                RT_TABLE_LOCAL => f.write_str(" lookup local")?,
                254 => f.write_str(" lookup main")?,
                253 => f.write_str(" lookup default")?,
                t => write!(f, " lookup {t}")?,
            },
            Action::Goto(t) => {
                write!(f, " goto {t}")?;
                if self.unresolved {
                    f.write_str(" [unresolved]")?;
                }
            }
            Action::Nop => f.write_str(" nop")?,
            Action::Blackhole => f.write_str(" blackhole")?,
            Action::Unreachable => f.write_str(" unreachable")?,
            Action::Prohibit => f.write_str(" prohibit")?,
            Action::Other(n) => write!(f, " action {n}")?,
        }
        if let Some(n) = self.suppress_prefixlen {
            write!(f, " suppress_prefixlength {n}")?;
        }
        if let Some(n) = self.suppress_ifgroup {
            write!(f, " suppress_ifgroup {n}")?;
        }
        Ok(())
    }
}

/// An address and prefix length, printed as `ip` does (no length when it covers one address).
struct Prefix((IpAddr, u8));

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ip, len) = self.0;
        if len == Family::of(ip).bits() {
            write!(f, "{ip}")
        } else {
            write!(f, "{ip}/{len}")
        }
    }
}

fn in_prefix(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn is_local_default(route: &RouteMessage, lo: u32) -> bool {
    route.header.kind == RouteType::Local
        && route.header.destination_prefix_length == 0
        && route.attributes.contains(&RouteAttribute::Oif(lo))
}

fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

/// The header's 8-bit table field, for tables that fit (the attribute carries the rest).
fn short_table(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(0)
}

fn loopback_index() -> io::Result<u32> {
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    let i = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if i == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("finding lo: {}", io::Error::last_os_error()),
        ));
    }
    Ok(i)
}

fn our_rule(family: Family, mark: u32, table: u32, priority: u32) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header = RuleHeader {
        family: family.netlink(),
        table: short_table(table),
        action: RuleAction::ToTable,
        ..Default::default()
    };
    msg.attributes = vec![
        RuleAttribute::Priority(priority),
        RuleAttribute::FwMark(mark),
        RuleAttribute::FwMask(MARK_MASK),
        RuleAttribute::Table(table),
    ];
    msg
}

fn describe_ours(mark: u32, table: u32, priority: u32) -> String {
    format!("{priority}: from all fwmark {mark:#x}/{MARK_MASK:#x} lookup {table}")
}

/// The requests the redirect's routing makes, on the shared rtnetlink socket.
trait Redirect {
    fn rules(&mut self, family: Family) -> io::Result<Option<Vec<Rule>>>;
    fn routes(&mut self, family: Family, table: u32) -> io::Result<Vec<RouteMessage>>;
    fn replace_local_default(&mut self, family: Family, table: u32, lo: u32) -> io::Result<()>;
    fn add_rule(&mut self, family: Family, mark: u32, table: u32, priority: u32) -> io::Result<()>;
    fn del_rule(&mut self, family: Family, mark: u32, table: u32, priority: u32) -> io::Result<()>;
}

impl Redirect for Rtnl {
    /// The family's rules in evaluation order; `None` when the kernel has no such family.
    fn rules(&mut self, family: Family) -> io::Result<Option<Vec<Rule>>> {
        let mut req = RuleMessage::default();
        req.header.family = family.netlink();
        match self.dump(RouteNetlinkMessage::GetRule(req)) {
            Ok(msgs) => Ok(Some(
                msgs.iter()
                    .filter_map(|m| match m {
                        RouteNetlinkMessage::NewRule(r) if r.header.family == family.netlink() => {
                            Some(Rule::parse(r))
                        }
                        _ => None,
                    })
                    .collect(),
            )),
            Err(e) if family == Family::V6 && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                Ok(None)
            }
            Err(e) => Err(context(e, format_args!("listing {family} rules"))),
        }
    }

    /// The routes of `table` in the family.
    fn routes(&mut self, family: Family, table: u32) -> io::Result<Vec<RouteMessage>> {
        let mut req = RouteMessage::default();
        req.header.address_family = family.netlink();
        req.header.table = short_table(table);
        req.attributes = vec![RouteAttribute::Table(table)];
        match self.dump(RouteNetlinkMessage::GetRoute(req)) {
            Ok(msgs) => Ok(msgs
                .into_iter()
                .filter_map(|m| match m {
                    RouteNetlinkMessage::NewRoute(r)
                        if r.header.address_family == family.netlink()
                            && route_table(&r) == table =>
                    {
                        Some(r)
                    }
                    _ => None,
                })
                .collect()),
            // A filtered dump of a table that does not exist yet.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Vec::new()),
            Err(e) => Err(context(
                e,
                format_args!("listing {family} routes of table {table}"),
            )),
        }
    }

    fn replace_local_default(&mut self, family: Family, table: u32, lo: u32) -> io::Result<()> {
        let mut route = RouteMessage::default();
        route.header = RouteHeader {
            address_family: family.netlink(),
            table: short_table(table),
            protocol: RouteProtocol::Boot,
            scope: RouteScope::Host,
            kind: RouteType::Local,
            ..Default::default()
        };
        route.attributes = vec![RouteAttribute::Table(table), RouteAttribute::Oif(lo)];
        self.ack(
            RouteNetlinkMessage::NewRoute(route),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map_err(|e| {
            context(
                e,
                format_args!("adding {family} route `local default dev lo table {table}`"),
            )
        })
    }

    fn add_rule(&mut self, family: Family, mark: u32, table: u32, priority: u32) -> io::Result<()> {
        match self.ack(
            RouteNetlinkMessage::NewRule(our_rule(family, mark, table, priority)),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            // Added by someone else since the dump (another agent, Cilium): the same rule.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map_err(|e| {
                context(
                    e,
                    format_args!(
                        "adding {family} rule `{}`",
                        describe_ours(mark, table, priority)
                    ),
                )
            }),
        }
    }

    /// Deletes one rule with our selector at `priority`. The kernel takes the attributes left
    /// out as "any", so a rule at that priority with more selectors than ours could go instead;
    /// neither iproute2 nor rtnetlink can say "no source selector".
    fn del_rule(&mut self, family: Family, mark: u32, table: u32, priority: u32) -> io::Result<()> {
        match self.ack(
            RouteNetlinkMessage::DelRule(our_rule(family, mark, table, priority)),
            0,
        ) {
            // Already gone.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r.map_err(|e| {
                context(
                    e,
                    format_args!(
                        "removing {family} rule `{}`",
                        describe_ours(mark, table, priority)
                    ),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(priority: u32, action: Action) -> Rule {
        Rule {
            priority,
            action,
            ..Rule::default()
        }
    }

    fn diverts(r: &Rule) -> bool {
        r.diverts(
            &Redirected {
                mark: MARK,
                table: TABLE,
                src: None,
            },
            PREF,
        )
    }

    #[test]
    fn fwmark_selectors_count_only_the_datapaths_bits() {
        let mut r = rule(5, Action::Lookup(100));
        r.fwmark = Some((0x100, 0xf00));
        assert!(!diverts(&r), "another mark under our mask");
        r.fwmark = Some((0x200, 0xf00));
        assert!(diverts(&r), "our mark, another table");
        // Bits outside 0xf00 are not ours to know: a rule on them may match.
        r.fwmark = Some((0x280, 0xf80));
        assert!(diverts(&r));
        r.fwmark = Some((0x80, 0x80));
        assert!(diverts(&r));
        // `not fwmark 0x200/0xf00` matches none of ours; with a wider mask it can.
        r.invert = true;
        r.fwmark = Some((0x200, 0xf00));
        assert!(!diverts(&r));
        r.fwmark = Some((0x200, u32::MAX));
        assert!(diverts(&r));
    }

    #[test]
    fn selectors_redirected_packets_cannot_meet() {
        let mut r = rule(5, Action::Lookup(100));
        r.iif = Some("lo".into());
        assert!(!diverts(&r));
        r.invert = true;
        assert!(diverts(&r), "not iif lo");

        let mut r = rule(5, Action::Lookup(100));
        r.iif = Some("eth0".into());
        assert!(diverts(&r), "a pod's interface may have any name");
        r.iif_detached = true;
        assert!(!diverts(&r));

        let mut r = rule(5, Action::Lookup(100));
        r.oif = Some("eth0".into());
        assert!(!diverts(&r));

        let mut r = rule(5, Action::Lookup(100));
        r.uid_range = Some((1000, 2000));
        assert!(!diverts(&r));
        r.uid_range = Some((0, 0));
        assert!(diverts(&r));

        let mut r = rule(5, Action::Lookup(100));
        r.ip_proto = Some(17);
        assert!(!diverts(&r));
        r.ip_proto = Some(IPPROTO_TCP);
        assert!(diverts(&r));

        let mut r = rule(5, Action::Lookup(100));
        r.tun_id = Some(7);
        assert!(!diverts(&r));
    }

    #[test]
    fn actions_that_leave_the_packet_to_later_rules() {
        assert!(!diverts(&rule(0, Action::Lookup(RT_TABLE_LOCAL))));
        assert!(!diverts(&rule(5, Action::Nop)));
        assert!(!diverts(&rule(5, Action::Goto(PREF))));
        assert!(diverts(&rule(5, Action::Goto(100))));
        assert!(!diverts(&rule(5, Action::Lookup(TABLE))));
        assert!(diverts(&rule(5, Action::Lookup(254))));
        assert!(diverts(&rule(5, Action::Blackhole)));
        assert!(diverts(&rule(5, Action::Unreachable)));
        assert!(diverts(&rule(5, Action::Prohibit)));
    }

    #[test]
    fn a_source_selector_catches_only_its_pods() {
        let mut r = rule(5, Action::Lookup(100));
        r.src = Some(("10.1.0.0".parse().unwrap(), 16));
        let s = Shadow {
            family: Family::V4,
            priority: 5,
            rule: r.to_string(),
            parsed: r.clone(),
            redirected: Redirected {
                mark: MARK,
                table: TABLE,
                src: None,
            },
            our_priority: PREF,
        };
        assert!(diverts(&r));
        assert!(s.may_catch_from("10.1.2.3".parse().unwrap()));
        assert!(!s.may_catch_from("10.2.0.1".parse().unwrap()));
        assert!(!s.may_catch_from("fd00::1".parse().unwrap()));
        assert_eq!(s.rule, "5: from 10.1.0.0/16 lookup 100");
    }

    #[test]
    fn rules_print_as_ip_rule_does() {
        let mut r = rule(90, Action::Lookup(100));
        r.dst = Some(("169.254.169.254".parse().unwrap(), 32));
        assert_eq!(r.to_string(), "90: from all to 169.254.169.254 lookup 100");
        let mut r = rule(PREF, Action::Lookup(TABLE));
        r.fwmark = Some((MARK, MARK_MASK));
        assert_eq!(r.to_string(), describe_ours(MARK, TABLE, PREF));
        assert!(r.is_ours(MARK, TABLE));
        r.invert = true;
        r.iif = Some("lo".into());
        assert_eq!(
            r.to_string(),
            "9: not from all fwmark 0x200/0xf00 iif lo lookup 2004"
        );
        assert!(!r.is_ours(MARK, TABLE));
        assert_eq!(
            rule(0, Action::Lookup(255)).to_string(),
            "0: from all lookup local"
        );
        assert_eq!(
            rule(5, Action::Blackhole).to_string(),
            "5: from all blackhole"
        );
    }

    #[test]
    fn prefixes() {
        let net = ("10.1.0.0".parse().unwrap(), 16);
        assert!(in_prefix("10.1.255.1".parse().unwrap(), net));
        assert!(!in_prefix("10.2.0.1".parse().unwrap(), net));
        assert!(in_prefix(
            "1.2.3.4".parse().unwrap(),
            ("0.0.0.0".parse().unwrap(), 0)
        ));
        let net6 = ("fd00:1::".parse().unwrap(), 32);
        assert!(in_prefix("fd00:1::5".parse().unwrap(), net6));
        assert!(!in_prefix("fd00:2::5".parse().unwrap(), net6));
    }
}
