//! Network namespaces as pods on one machine: a namespace per pod, a veth pair to the root
//! namespace, addresses and routes. Used by `imdsguard lab` and by the root integration tests.
//!
//! It drives iproute2 (`ip`), as an operator would, so every step can be replayed by hand. Each
//! object removes itself when dropped, so a failing test still cleans up. Forwarding is enabled
//! per host-side interface only; nothing global on the machine changes.
//!
//! What the agent uses at run time ([`host_interfaces`], [`veths`], [`LinkWatch`], and the
//! [`rtnl`] socket the proxy's policy routing shares) talks rtnetlink instead, and starts no
//! program: the agent needs only its binary and the kernel.

mod host;
pub mod rtnl;

pub use host::{LinkWatch, host_interfaces, veths};

use std::net::IpAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run `{command}`: {source} (is iproute2 installed? scripts/prereqs.sh)")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, NetnsError>;

/// Runs a command; its stdout on success.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NetnsError::Spawn {
            command: command.clone(),
            source,
        })?;
    check(command, out)
}

fn check(command: String, out: Output) -> Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetnsError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// A short name unique to this process and call: interface names have 15 bytes at most.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}{n:x}", std::process::id() % 0xfffff)
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    /// Set by `keep`: the namespace outlives this value (a lab that stays up).
    kept: bool,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
            kept: false,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip <args>` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command inside the namespace, to run or spawn as the caller likes.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Starts a long-running program inside the namespace (a server); it is killed on drop.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<Process> {
        self.command(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(Process)
            .map_err(|source| NetnsError::Spawn {
                command: format!("ip netns exec {} {program} {}", self.name, args.join(" ")),
                source,
            })
    }

    /// Runs a command inside the namespace; its output whatever the exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        self.command(program)
            .args(args)
            .output()
            .map_err(|source| NetnsError::Spawn {
                command: format!("ip netns exec {} {program} {}", self.name, args.join(" ")),
                source,
            })
    }

    /// The interface a packet to `dst` leaves by, from inside the namespace (`ip route get`):
    /// tests check it before sending anything.
    pub fn route_dev(&self, dst: IpAddr) -> Result<String> {
        let out = self.ip(&["route", "get", &dst.to_string()])?;
        Ok(route_dev(&out).unwrap_or_default())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.kept {
            let _ = ip(&["netns", "del", &self.name]);
        }
    }
}

/// Deletes a namespace by name (one that was kept).
pub fn delete_netns(name: &str) -> Result<()> {
    ip(&["netns", "del", name]).map(|_| ())
}

/// Deletes an interface by name (the host side of a kept pod; its peer and routes go with it).
pub fn delete_link(name: &str) -> Result<()> {
    ip(&["link", "del", name]).map(|_| ())
}

/// A process this crate started; killed (only this pid) and reaped on drop.
#[derive(Debug)]
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `dev` of an `ip route get` answer.
pub fn route_dev(out: &str) -> Option<String> {
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "dev" {
            return words.next().map(str::to_owned);
        }
    }
    None
}

/// A pod: a namespace whose `eth0` is a veth to the root namespace, with one IPv4 and optionally
/// one IPv6 address, and the host side routed and forwarding. Removed on drop.
#[derive(Debug)]
pub struct Pod {
    pub ns: Netns,
    /// The host-side interface (where the datapath attaches).
    pub host_if: String,
    pub ipv4: std::net::Ipv4Addr,
    pub ipv6: Option<std::net::Ipv6Addr>,
    kept: bool,
}

/// The host side of every pod answers as this gateway (as Calico does with 169.254.1.1), so pods
/// need no per-pod subnet on the host.
pub const GATEWAY_V4: &str = "169.254.1.1";
pub const GATEWAY_V6: &str = "fe80::1";

impl Pod {
    pub fn create(
        name: &str,
        ipv4: std::net::Ipv4Addr,
        ipv6: Option<std::net::Ipv6Addr>,
    ) -> Result<Pod> {
        Pod::create_routed(name, ipv4, ipv6, None)
    }

    /// `create`, with the host's route to the pod in routing table `table` instead of main: for
    /// a namespace that must be reachable only by traffic a rule sends there (the lab's IMDS).
    pub fn create_routed(
        name: &str,
        ipv4: std::net::Ipv4Addr,
        ipv6: Option<std::net::Ipv6Addr>,
        table: Option<u32>,
    ) -> Result<Pod> {
        let ns = Netns::create(name)?;
        let host_if = name.to_owned();
        let peer = format!("{name}p");
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer,
        ])?;
        let pod = Pod {
            ns,
            host_if,
            ipv4,
            ipv6,
            kept: false,
        };
        ip(&["link", "set", &peer, "netns", &pod.ns.name])?;
        pod.ns.ip(&["link", "set", &peer, "name", "eth0"])?;
        pod.ns
            .ip(&["addr", "add", &format!("{ipv4}/32"), "dev", "eth0"])?;
        pod.ns.ip(&["link", "set", "eth0", "up"])?;
        pod.ns
            .ip(&["route", "add", GATEWAY_V4, "dev", "eth0", "scope", "link"])?;
        pod.ns
            .ip(&["route", "add", "default", "via", GATEWAY_V4, "dev", "eth0"])?;
        let h = pod.host_if.as_str();
        // Proxy ARP lets the host side answer for the gateway without an address of its own;
        // without proxy_delay 0 the kernel waits up to 0.8 s before answering (Calico sets it too).
        for (key, value) in [
            (format!("net/ipv4/conf/{h}/proxy_arp"), "1"),
            (format!("net/ipv4/neigh/{h}/proxy_delay"), "0"),
            (format!("net/ipv4/conf/{h}/forwarding"), "1"),
            (format!("net/ipv6/conf/{h}/forwarding"), "1"),
        ] {
            sysctl(&key, value)?;
        }
        // IPv6 forwards per interface only with force_forwarding (Linux 6.17+); without it only
        // the global switch works, which this crate never touches.
        let force = format!("net/ipv6/conf/{h}/force_forwarding");
        if std::path::Path::new("/proc/sys").join(&force).exists() {
            sysctl(&force, "1")?;
        }
        ip(&["link", "set", h, "up"])?;
        let table = table.map(|t| t.to_string());
        let mut route = vec!["route", "add"];
        let dst = format!("{ipv4}/32");
        route.extend([dst.as_str(), "dev", h]);
        if let Some(t) = &table {
            route.extend(["table", t.as_str()]);
        }
        ip(&route)?;
        if let Some(v6) = ipv6 {
            pod.ns
                .ip(&["addr", "add", &format!("{v6}/128"), "dev", "eth0", "nodad"])?;
            ip(&[
                "addr",
                "add",
                &format!("{GATEWAY_V6}/64"),
                "dev",
                h,
                "nodad",
            ])?;
            pod.ns.ip(&[
                "-6", "route", "add", "default", "via", GATEWAY_V6, "dev", "eth0",
            ])?;
            ip(&["-6", "route", "add", &format!("{v6}/128"), "dev", h])?;
        }
        Ok(pod)
    }
}

impl Pod {
    /// Leaves the pod in place after this value goes (`lab up`); `delete_link` and
    /// `delete_netns` remove it later.
    pub fn keep(mut self) {
        self.kept = true;
        self.ns.kept = true;
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if !self.kept {
            // Deleting one end deletes the pair, and with it the host routes.
            let _ = ip(&["link", "del", &self.host_if]);
        }
    }
}

fn sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(|source| NetnsError::Spawn {
        command: format!("writing {value} to {path}"),
        source,
    })
}

/// Says that the calling test is skipped and why: `skipped: <reason>` on stderr, and
/// `SKIPPED: <crate>::<test>: <reason>` appended to the file named by `IMDSGUARD_SKIP_LOG`
/// (scripts/test sets it and counts the lines at the end). `crate_name` is the caller's
/// `env!("CARGO_CRATE_NAME")`; the test's name is its thread's, as libtest names them. The caller
/// returns right after.
pub fn skip_test(crate_name: &str, reason: &str) {
    eprintln!("skipped: {reason}");
    if let Some(log) = std::env::var_os("IMDSGUARD_SKIP_LOG").filter(|v| !v.is_empty()) {
        use std::io::Write;
        let test = std::thread::current()
            .name()
            .unwrap_or("unknown test")
            .to_owned();
        let line = format!("SKIPPED: {crate_name}::{test}: {reason}\n");
        // One append of one short line: concurrent test binaries do not interleave.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Whether this process may create namespaces (root tests skip, with a message, when not).
pub fn can_create_namespaces() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_dev_reads_ip_route_get() {
        assert_eq!(
            route_dev("10.99.3.2 via 169.254.1.1 dev eth0 src 10.99.1.2 uid 0 \n    cache \n"),
            Some("eth0".to_owned())
        );
        assert_eq!(route_dev("local 127.0.0.1 dev lo"), Some("lo".to_owned()));
        assert_eq!(route_dev("unreachable"), None);
    }

    #[test]
    fn names_are_unique_and_short() {
        let a = unique_name("igp");
        let b = unique_name("igp");
        assert_ne!(a, b);
        assert!(a.len() <= 12, "{a}");
    }
}
