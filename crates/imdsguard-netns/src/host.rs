//! The host-side interface of a pod, found from the pod's address as the kernel routes it, so
//! nothing depends on a CNI's interface names: a route straight to the pod's veth (Calico, Azure
//! CNI, Cilium-less setups with /32 routes), or a bridge (kubenet, bridge CNI), where the pod's
//! MAC address in the bridge's forwarding table names the port.

use crate::{Result, run};
use std::net::IpAddr;

/// The interface the host sends each address out of, when that is a pod's own link, with one
/// `ip` process for all (a node has a hundred pods, and the agent looks again when links
/// change): `None` for an address with no route, one reached through a gateway, a local
/// address, or a bridge port not learned yet.
pub fn host_interfaces(
    ips: &[IpAddr],
) -> Result<std::collections::HashMap<IpAddr, Option<String>>> {
    use std::io::Write;
    let mut out: std::collections::HashMap<IpAddr, Option<String>> =
        ips.iter().map(|ip| (*ip, None)).collect();
    if ips.is_empty() {
        return Ok(out);
    }
    let mut child = std::process::Command::new("ip")
        .args(["-o", "-force", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|source| crate::NetnsError::Spawn {
            command: "ip -o -force -batch -".into(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let script: String = ips.iter().map(|ip| format!("route get {ip}\n")).collect();
        // A failed write leaves lookups unanswered: they stay `None` and are tried again.
        let _ = stdin.write_all(script.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|source| crate::NetnsError::Spawn {
            command: "ip -o -force -batch -".into(),
            source,
        })?;
    // Failed lookups print nothing on stdout, so each answer is matched by its address.
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        let addr = match first {
            "local" | "unreachable" | "blackhole" | "prohibit" | "broadcast" | "multicast" => {
                continue;
            }
            a => a,
        };
        let (Ok(ip), Some(dev)) = (addr.parse::<IpAddr>(), direct_route_dev(line)) else {
            continue;
        };
        if let Some(slot) = out.get_mut(&ip) {
            *slot = bridge_port_of(ip, dev)?;
        }
    }
    Ok(out)
}

/// The device itself, or the bridge port behind it where it is a bridge.
fn bridge_port_of(ip: IpAddr, dev: String) -> Result<Option<String>> {
    if !std::path::Path::new(&format!("/sys/class/net/{dev}/bridge")).exists() {
        return Ok(Some(dev));
    }
    let neigh = run("ip", &["neigh", "show", &ip.to_string(), "dev", &dev])?;
    let Some(mac) = neighbour_mac(&neigh) else {
        return Ok(None);
    };
    let fdb = run("bridge", &["fdb", "show", "br", &dev])?;
    Ok(bridge_port(&fdb, &mac))
}

/// Every veth in this network namespace: the host sides of pods, whatever the CNI names them.
pub fn veths() -> Result<Vec<String>> {
    let out = run("ip", &["-o", "link", "show", "type", "veth"])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next()?.to_owned())
        })
        .collect())
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

/// The device of a route that reaches the address directly (no gateway, not local).
pub fn direct_route_dev(route_get: &str) -> Option<String> {
    let first = route_get.lines().next()?;
    let words: Vec<&str> = first.split_whitespace().collect();
    if matches!(
        words.first(),
        Some(&("local" | "unreachable" | "blackhole" | "prohibit" | "broadcast" | "multicast"))
    ) || words.contains(&"via")
    {
        return None;
    }
    let dev = words
        .iter()
        .position(|w| *w == "dev")
        .and_then(|i| words.get(i + 1))?;
    (*dev != "lo").then(|| (*dev).to_owned())
}

fn neighbour_mac(neigh: &str) -> Option<String> {
    let words: Vec<&str> = neigh.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "lladdr")?;
    words.get(i + 1).map(|m| m.to_ascii_lowercase())
}

fn bridge_port(fdb: &str, mac: &str) -> Option<String> {
    fdb.lines().find_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        if words.first().map(|m| m.to_ascii_lowercase()).as_deref() != Some(mac) {
            return None;
        }
        let i = words.iter().position(|w| *w == "dev")?;
        words.get(i + 1).map(|d| (*d).to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_direct_routes_name_a_pod_interface() {
        assert_eq!(
            direct_route_dev("10.244.1.5 dev cali12ab src 10.0.0.4 uid 0 \n    cache ").as_deref(),
            Some("cali12ab")
        );
        assert_eq!(
            direct_route_dev("10.9.9.9 via 10.0.0.1 dev eth0 src 10.0.0.4 uid 0\n    cache"),
            None
        );
        assert_eq!(
            direct_route_dev("local 10.0.0.4 dev lo table local src 10.0.0.4 uid 0"),
            None
        );
        assert_eq!(
            direct_route_dev("unreachable 10.1.1.1 table main uid 0"),
            None
        );
    }

    #[test]
    fn a_bridge_port_is_found_by_the_pods_mac() {
        let mac = neighbour_mac("10.244.0.7 lladdr 0A:58:0a:f4:00:07 REACHABLE").unwrap();
        let fdb = "33:33:00:00:00:01 dev cbr0 self permanent\n0a:58:0a:f4:00:07 dev veth5d1 master cbr0\n";
        assert_eq!(bridge_port(fdb, &mac).as_deref(), Some("veth5d1"));
        assert_eq!(bridge_port(fdb, "0a:58:0a:f4:00:08"), None);
    }
}
