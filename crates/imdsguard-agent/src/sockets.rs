//! The socket and process behind a TCP connection, for the L7 proxy's flows. The proxy sees a
//! connection only by its addresses, but the datapath's flows for the same connection (the
//! pod's packets on its veth) carry the socket cookie, the cgroup id and the process. The event
//! drain records them here by 5-tuple, and the proxy's flows are completed from here before
//! they reach the Hub. Bounded: the oldest connections are forgotten first.

use imdsguard_hubble_proto::flow::{Flow, layer4};
use imdsguard_hubble_proto::process::{self, ProcessInfo};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Connections remembered: more than the proxy's connections in flight on a busy node.
pub const CAPACITY: usize = 4096;

/// (source address, source port, destination address, destination port) of a TCP flow.
type Key = (IpAddr, u16, IpAddr, u16);

/// What the datapath knew of a connection's socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketInfo {
    pub cookie: u64,
    pub cgroup_id: u64,
    pub process: Option<ProcessInfo>,
}

#[derive(Debug)]
pub struct Sockets {
    inner: Mutex<Inner>,
    capacity: usize,
    /// The datapath has reported a socket at least once: only then is a proxy flow worth
    /// waiting for (a kernel or datapath without it never will).
    seen: AtomicBool,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, SocketInfo>,
    order: VecDeque<Key>,
}

impl Default for Sockets {
    fn default() -> Self {
        Sockets::with_capacity(CAPACITY)
    }
}

fn key(f: &Flow) -> Option<Key> {
    let ip = f.ip.as_ref()?;
    let Some(layer4::Protocol::Tcp(tcp)) = f.l4.as_ref()?.protocol.as_ref() else {
        return None;
    };
    let k: Key = (
        ip.source.parse().ok()?,
        u16::try_from(tcp.source_port).ok()?,
        ip.destination.parse().ok()?,
        u16::try_from(tcp.destination_port).ok()?,
    );
    // A hook's flow before the socket is bound names no connection yet.
    (!k.0.is_unspecified() && k.1 != 0 && k.3 != 0).then_some(k)
}

impl Sockets {
    pub fn with_capacity(capacity: usize) -> Sockets {
        Sockets {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            seen: AtomicBool::new(false),
        }
    }

    /// Remembers the socket of a datapath flow, if it names one.
    pub fn record(&self, f: &Flow) {
        let process = process::get(f);
        if f.socket_cookie == 0 && f.cgroup_id == 0 && process.is_none() {
            return;
        }
        let Some(k) = key(f) else { return };
        self.seen.store(true, Ordering::Relaxed);
        let info = SocketInfo {
            cookie: f.socket_cookie,
            cgroup_id: f.cgroup_id,
            process,
        };
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(old) = inner.map.get_mut(&k) {
            // A later packet of the same connection may know more (the hook ran in between).
            if info.process.is_some() || old.process.is_none() {
                *old = info;
            }
            return;
        }
        while inner.order.len() >= self.capacity {
            if let Some(oldest) = inner.order.pop_front() {
                inner.map.remove(&oldest);
            }
        }
        inner.map.insert(k, info);
        inner.order.push_back(k);
    }

    /// The socket behind a flow of either direction of a connection.
    pub fn lookup(&self, f: &Flow) -> Option<SocketInfo> {
        let (sa, sp, da, dp) = key(f)?;
        let inner = self.inner.lock().ok()?;
        inner
            .map
            .get(&(sa, sp, da, dp))
            .or_else(|| inner.map.get(&(da, dp, sa, sp)))
            .cloned()
    }

    /// Completes `f` with its connection's socket and process; false when none is known.
    pub fn complete(&self, f: &mut Flow) -> bool {
        let Some(info) = self.lookup(f) else {
            return false;
        };
        f.socket_cookie = info.cookie;
        f.cgroup_id = info.cgroup_id;
        if let Some(p) = &info.process {
            process::set(f, p);
        }
        true
    }

    /// Whether the datapath reports sockets at all.
    pub fn active(&self) -> bool {
        self.seen.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imdsguard_hubble_proto::flow::{Ip, Layer4, Tcp};

    fn tcp(src: &str, sport: u32, dst: &str, dport: u32) -> Flow {
        Flow {
            ip: Some(Ip {
                source: src.into(),
                destination: dst.into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::Tcp(Tcp {
                    source_port: sport,
                    destination_port: dport,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }
    }

    fn envoy() -> ProcessInfo {
        ProcessInfo {
            container: "istio-proxy".into(),
            process: "envoy".into(),
            pid: 4242,
            uid: Some(1337),
        }
    }

    #[test]
    fn a_proxy_flow_of_either_direction_gets_the_datapaths_socket_and_process() {
        let sockets = Sockets::default();
        assert!(!sockets.active());
        let mut dp = tcp("10.0.0.2", 40000, "169.254.169.254", 80);
        dp.socket_cookie = 4101;
        dp.cgroup_id = 120;
        process::set(&mut dp, &envoy());
        sockets.record(&dp);
        assert!(sockets.active());
        let mut request = tcp("10.0.0.2", 40000, "169.254.169.254", 80);
        assert!(sockets.complete(&mut request));
        assert_eq!((request.socket_cookie, request.cgroup_id), (4101, 120));
        assert_eq!(process::get(&request), Some(envoy()));
        let mut response = tcp("169.254.169.254", 80, "10.0.0.2", 40000);
        assert!(sockets.complete(&mut response), "the reply direction");
        assert_eq!(process::get(&response), Some(envoy()));
        let mut other = tcp("10.0.0.2", 40001, "169.254.169.254", 80);
        assert!(!sockets.complete(&mut other));
        assert!(process::get(&other).is_none());
    }

    #[test]
    fn flows_without_a_socket_are_not_recorded_and_the_oldest_go_first() {
        let sockets = Sockets::with_capacity(2);
        sockets.record(&tcp("10.0.0.2", 1, "10.0.0.9", 80));
        assert!(sockets.is_empty() && !sockets.active());
        let mut unbound = tcp("0.0.0.0", 0, "10.0.0.9", 80);
        unbound.socket_cookie = 5;
        sockets.record(&unbound);
        assert!(
            sockets.is_empty(),
            "a socket with no address yet is no connection"
        );
        for port in 1..=3 {
            let mut f = tcp("10.0.0.2", port, "10.0.0.9", 80);
            f.socket_cookie = u64::from(port);
            sockets.record(&f);
        }
        assert_eq!(sockets.len(), 2);
        assert!(
            sockets
                .lookup(&tcp("10.0.0.2", 1, "10.0.0.9", 80))
                .is_none()
        );
        assert_eq!(
            sockets
                .lookup(&tcp("10.0.0.2", 3, "10.0.0.9", 80))
                .map(|s| s.cookie),
            Some(3)
        );
        // A later flow of a known connection that knows the process fills it in.
        let mut later = tcp("10.0.0.2", 3, "10.0.0.9", 80);
        later.socket_cookie = 3;
        process::set(&mut later, &envoy());
        sockets.record(&later);
        assert_eq!(sockets.len(), 2);
        assert_eq!(
            sockets
                .lookup(&tcp("10.0.0.2", 3, "10.0.0.9", 80))
                .and_then(|s| s.process),
            Some(envoy())
        );
    }
}
