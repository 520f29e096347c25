//! The host-side interface of a pod, found from the pod's address as the kernel routes it, so
//! nothing depends on a CNI's interface names: a route straight to the pod's veth (Calico, Azure
//! CNI, Cilium-less setups with /32 routes), or a bridge (kubenet, bridge CNI), where the pod's
//! MAC address in the bridge's forwarding table names the port. All of it is asked of the
//! kernel over rtnetlink (`ip route get`, `ip neigh`, `bridge fdb` and `ip link`, without the
//! programs).

use crate::rtnl::Rtnl;
use crate::{NetnsError, Result};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkExtentMask, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;

/// The interface the host sends each address out of, when that is a pod's own link, on one
/// rtnetlink socket for all (a node has a hundred pods, and the agent looks again when links
/// change): `None` for an address with no route, one reached through a gateway, a local
/// address, or a bridge port not learned yet.
pub fn host_interfaces(ips: &[IpAddr]) -> Result<HashMap<IpAddr, Option<String>>> {
    let mut out: HashMap<IpAddr, Option<String>> = ips.iter().map(|ip| (*ip, None)).collect();
    if ips.is_empty() {
        return Ok(out);
    }
    let mut nl = Rtnl::open().map_err(netlink("looking up pod interfaces"))?;
    let mut direct: Vec<(IpAddr, u32)> = Vec::new();
    for &ip in out.keys() {
        let mut req = RouteMessage::default();
        req.header.address_family = family(ip);
        req.header.destination_prefix_length = bits(ip);
        req.attributes = vec![RouteAttribute::Destination(RouteAddress::from(ip))];
        match nl.get(RouteNetlinkMessage::GetRoute(req)) {
            Ok(answers) => {
                if let Some(oif) = answers.iter().find_map(|m| match m {
                    RouteNetlinkMessage::NewRoute(r) => direct_route_oif(r),
                    _ => None,
                }) {
                    direct.push((ip, oif));
                }
            }
            // No route (unreachable, prohibited, no default): not a pod of this host, now.
            Err(e) if e.raw_os_error().is_some() => {}
            Err(e) => return Err(netlink(format!("looking up the route to {ip}"))(e)),
        }
    }
    if direct.is_empty() {
        return Ok(out);
    }
    let links = links(&mut nl)?;
    let mut bridges = Bridges::default();
    for (ip, oif) in direct {
        let Some(link) = links.get(&oif) else {
            // Gone (or new) since the route was read: looked up again later.
            continue;
        };
        let dev = if link.name == "lo" {
            None
        } else if link.kind == Some(Kind::Bridge) {
            bridges.port_of(&mut nl, &links, ip, oif)?
        } else {
            Some(link.name.clone())
        };
        out.insert(ip, dev);
    }
    Ok(out)
}

/// Every veth in this network namespace: the host sides of pods, whatever the CNI names them.
pub fn veths() -> Result<Vec<String>> {
    let mut nl = Rtnl::open().map_err(netlink("listing veths"))?;
    let mut links: Vec<(u32, Link)> = links(&mut nl)?.into_iter().collect();
    links.sort_by_key(|(index, _)| *index);
    Ok(links
        .into_iter()
        .filter(|(_, l)| l.kind == Some(Kind::Veth))
        .map(|(_, l)| l.name)
        .collect())
}

/// The output interface of a route answer that reaches the address directly: unicast, with no
/// gateway (`ip route get` printing neither a type nor `via`).
fn direct_route_oif(route: &RouteMessage) -> Option<u32> {
    if route.header.kind != RouteType::Unicast {
        return None;
    }
    let mut oif = None;
    for a in &route.attributes {
        match a {
            RouteAttribute::Gateway(_) | RouteAttribute::Via(_) => return None,
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    oif
}

/// The kinds of link this module tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Veth,
    Bridge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    name: String,
    kind: Option<Kind>,
    /// The bridge (or bond, VRF) it is a port of.
    master: Option<u32>,
}

impl Link {
    fn parse(msg: &LinkMessage) -> Option<Link> {
        let mut link = Link {
            name: String::new(),
            kind: None,
            master: None,
        };
        for a in &msg.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Controller(m) => link.master = Some(*m),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(InfoKind::Veth) => link.kind = Some(Kind::Veth),
                            LinkInfo::Kind(InfoKind::Bridge) => link.kind = Some(Kind::Bridge),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        (!link.name.is_empty()).then_some(link)
    }
}

/// Every link of the namespace, by index (`ip link show`).
fn links(nl: &mut Rtnl) -> Result<HashMap<u32, Link>> {
    let mut req = LinkMessage::default();
    req.attributes = vec![LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats])];
    let answers = nl
        .dump(RouteNetlinkMessage::GetLink(req))
        .map_err(netlink("listing links"))?;
    Ok(answers
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some((l.header.index, Link::parse(l)?)),
            _ => None,
        })
        .collect())
}

/// The neighbour tables and forwarding databases of the bridges looked at so far, each read
/// once per lookup however many pods sit behind it.
#[derive(Default)]
struct Bridges {
    /// (bridge, family) → each neighbour's link-layer address (`ip neigh show dev <bridge>`).
    neighbours: HashMap<(u32, u8), HashMap<IpAddr, Vec<u8>>>,
    /// bridge → (MAC, interface) in the kernel's order (`bridge fdb show br <bridge>`).
    fdb: HashMap<u32, Vec<(Vec<u8>, u32)>>,
}

impl Bridges {
    /// The port of `bridge` behind which the kernel last saw `ip`, by its MAC address.
    fn port_of(
        &mut self,
        nl: &mut Rtnl,
        links: &HashMap<u32, Link>,
        ip: IpAddr,
        bridge: u32,
    ) -> Result<Option<String>> {
        let neighbours = match self.neighbours.entry((bridge, u8::from(family(ip)))) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(neighbours(nl, family(ip), bridge)?),
        };
        let Some(mac) = neighbours.get(&ip) else {
            return Ok(None);
        };
        let fdb = match self.fdb.entry(bridge) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(fdb(nl, links, bridge)?),
        };
        Ok(bridge_port(fdb, mac)
            .and_then(|i| links.get(&i))
            .map(|l| l.name.clone()))
    }
}

/// The neighbours on `dev` of one family that have a link-layer address.
fn neighbours(nl: &mut Rtnl, family: AddressFamily, dev: u32) -> Result<HashMap<IpAddr, Vec<u8>>> {
    let mut req = NeighbourMessage::default();
    req.header.family = family;
    req.attributes = vec![NeighbourAttribute::IfIndex(dev)];
    let answers = nl
        .dump(RouteNetlinkMessage::GetNeighbour(req))
        .map_err(netlink("listing neighbours"))?;
    Ok(answers
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n)
                if n.header.family == family && n.header.ifindex == dev =>
            {
                neighbour(n)
            }
            _ => None,
        })
        .collect())
}

fn neighbour(n: &NeighbourMessage) -> Option<(IpAddr, Vec<u8>)> {
    let mut ip = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some((*v4).into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => ip = Some((*v6).into()),
            NeighbourAttribute::LinkLayerAddress(l) if !l.is_empty() => mac = Some(l.clone()),
            _ => {}
        }
    }
    Some((ip?, mac?))
}

/// The forwarding database of `bridge`: its own entries and its ports'.
fn fdb(nl: &mut Rtnl, links: &HashMap<u32, Link>, bridge: u32) -> Result<Vec<(Vec<u8>, u32)>> {
    let mut req = NeighbourMessage::default();
    req.header.family = AddressFamily::Bridge;
    req.attributes = vec![NeighbourAttribute::Controller(bridge)];
    let answers = nl
        .dump(RouteNetlinkMessage::GetNeighbour(req))
        .map_err(netlink("listing the bridge's forwarding database"))?;
    let on_bridge = |i: u32| i == bridge || links.get(&i).is_some_and(|l| l.master == Some(bridge));
    Ok(answers
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n)
                if n.header.family == AddressFamily::Bridge && on_bridge(n.header.ifindex) =>
            {
                n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(mac) => {
                        Some((mac.clone(), n.header.ifindex))
                    }
                    _ => None,
                })
            }
            _ => None,
        })
        .collect())
}

/// The interface of the first forwarding entry for `mac`.
fn bridge_port(fdb: &[(Vec<u8>, u32)], mac: &[u8]) -> Option<u32> {
    fdb.iter().find(|(m, _)| m == mac).map(|(_, i)| *i)
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn bits(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn netlink(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetnsError {
    let what = what.into();
    move |source| NetnsError::Netlink { what, source }
}

/// Tells when a network interface appears, changes or goes (rtnetlink's link group), so a new
/// pod's veth can be guarded at once rather than at the next periodic scan.
pub struct LinkWatch {
    fd: std::os::fd::OwnedFd,
}

impl LinkWatch {
    pub fn new() -> std::io::Result<LinkWatch> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_nl is valid; the fields that matter are set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: `addr` is a valid sockaddr_nl of the given length.
        let rc = unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(LinkWatch { fd })
    }

    /// Whether any link event arrived since the last call (a lost event counts as one).
    pub fn changed(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 8192];
        let mut any = false;
        loop {
            // SAFETY: `buf` is writable for its whole length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                any = true;
                continue;
            }
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                any = true;
                continue;
            }
            return any;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn route(kind: RouteType, attributes: Vec<RouteAttribute>) -> RouteMessage {
        let mut r = RouteMessage::default();
        r.header.kind = kind;
        r.attributes = attributes;
        r
    }

    #[test]
    fn only_direct_routes_name_a_pod_interface() {
        let gw = RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            direct_route_oif(&route(RouteType::Unicast, vec![RouteAttribute::Oif(7)])),
            Some(7)
        );
        assert_eq!(
            direct_route_oif(&route(RouteType::Unicast, vec![gw, RouteAttribute::Oif(2)])),
            None
        );
        assert_eq!(
            direct_route_oif(&route(RouteType::Local, vec![RouteAttribute::Oif(1)])),
            None
        );
        assert_eq!(
            direct_route_oif(&route(RouteType::Unreachable, vec![RouteAttribute::Oif(1)])),
            None
        );
        assert_eq!(direct_route_oif(&route(RouteType::Unicast, vec![])), None);
    }

    #[test]
    fn a_bridge_port_is_found_by_the_pods_mac() {
        let fdb = vec![
            (vec![0x33, 0x33, 0, 0, 0, 1], 4),
            (vec![0x0a, 0x58, 0x0a, 0xf4, 0, 7], 9),
            (vec![0x0a, 0x58, 0x0a, 0xf4, 0, 7], 12),
        ];
        assert_eq!(bridge_port(&fdb, &[0x0a, 0x58, 0x0a, 0xf4, 0, 7]), Some(9));
        assert_eq!(bridge_port(&fdb, &[0x0a, 0x58, 0x0a, 0xf4, 0, 8]), None);
    }

    /// Runs `f` on a thread of its own in a new network namespace with lo up, so the links and
    /// routes it adds (with iproute2: tests may) are nobody else's; skipped, saying why, when
    /// not root.
    fn in_netns(f: impl FnOnce() + Send + 'static) {
        if !crate::can_create_namespaces() {
            eprintln!("skipped: creating a network namespace needs root");
            return;
        }
        let outcome = std::thread::spawn(move || {
            // SAFETY: unshare changes only this thread's namespace, and this thread is ours.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Children start where this thread is, or `ip` would change the machine.
            let ours = std::fs::read_link("/proc/thread-self/ns/net")?;
            let child = run("readlink", &["/proc/self/ns/net"]).expect("readlink");
            assert_eq!(child.trim(), ours.to_string_lossy());
            f();
            Ok(())
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("skipped: cannot create a network namespace: {e}"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    fn sh(program: &str, line: &str) {
        let args: Vec<&str> = line.split_whitespace().collect();
        run(program, &args).unwrap_or_else(|e| panic!("{program} {line}: {e}"));
    }

    #[test]
    fn pods_are_found_by_direct_routes_and_behind_bridges() {
        in_netns(|| {
            for line in [
                "link set lo up",
                // A routed pod (Calico): a /32 and a /128 straight to its veth.
                "link add igh1 type veth peer name igp1",
                "link set igh1 up",
                "link set igp1 up",
                "route add 10.9.0.2/32 dev igh1",
                "-6 route add fd00:9::2/128 dev igh1",
                // A subnet on a link, one behind a gateway, and one unreachable.
                "link add igd0 type veth peer name igd1",
                "link set igd0 up",
                "link set igd1 up",
                "addr add 10.8.0.1/24 dev igd0",
                "route add 10.7.0.0/24 via 10.8.0.2",
                "route add unreachable 10.4.0.0/24",
                // A bridged pod (kubenet): its MAC in the neighbour table and the bridge's
                // forwarding database, behind port igh2.
                "link add igbr type bridge",
                "link add igh2 type veth peer name igp2",
                "link set igh2 master igbr",
                "link set igbr up",
                "link set igh2 up",
                "link set igp2 up",
                "addr add 10.6.0.1/24 dev igbr",
                "-6 addr add fd00:6::1/64 dev igbr nodad",
                "neigh replace 10.6.0.7 lladdr 0a:58:0a:06:00:07 dev igbr nud permanent",
                "-6 neigh replace fd00:6::7 lladdr 0a:58:0a:06:00:07 dev igbr nud permanent",
                // A neighbour whose MAC no port has learned.
                "neigh replace 10.6.0.8 lladdr 0a:58:0a:06:00:08 dev igbr nud permanent",
            ] {
                sh("ip", line);
            }
            sh("bridge", "fdb add 0a:58:0a:06:00:07 dev igh2 master static");
            let want: Vec<(IpAddr, Option<&str>)> = vec![
                (Ipv4Addr::new(10, 9, 0, 2).into(), Some("igh1")),
                (
                    "fd00:9::2".parse::<Ipv6Addr>().unwrap().into(),
                    Some("igh1"),
                ),
                (Ipv4Addr::new(10, 8, 0, 9).into(), Some("igd0")),
                (Ipv4Addr::new(10, 8, 0, 1).into(), None),
                (Ipv4Addr::new(127, 0, 0, 1).into(), None),
                (Ipv4Addr::new(10, 7, 0, 5).into(), None),
                (Ipv4Addr::new(10, 4, 0, 5).into(), None),
                (Ipv4Addr::new(10, 5, 0, 1).into(), None),
                (Ipv4Addr::new(10, 6, 0, 7).into(), Some("igh2")),
                (
                    "fd00:6::7".parse::<Ipv6Addr>().unwrap().into(),
                    Some("igh2"),
                ),
                (Ipv4Addr::new(10, 6, 0, 8).into(), None),
                (Ipv4Addr::new(10, 6, 0, 9).into(), None),
            ];
            let ips: Vec<IpAddr> = want.iter().map(|(ip, _)| *ip).collect();
            let found = host_interfaces(&ips).expect("host_interfaces");
            assert_eq!(found.len(), want.len());
            for (ip, dev) in want {
                assert_eq!(found[&ip].as_deref(), dev, "{ip}");
            }
            assert!(host_interfaces(&[]).expect("none").is_empty());

            let mut v = veths().expect("veths");
            v.sort();
            assert_eq!(v, ["igd0", "igd1", "igh1", "igh2", "igp1", "igp2"]);
        });
    }
}
