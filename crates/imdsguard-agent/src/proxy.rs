//! The L7 proxy inside the agent: its policy routing, then transparent listeners on loopback,
//! where the datapath assigns connections whose policy has HTTP rules. Its flows go into the
//! agent's Hubble ring buffer, with the socket and process the datapath saw for the same
//! connection ([`Sockets`]).

use crate::AgentError;
use crate::node_view::SharedView;
use crate::sockets::Sockets;
use imdsguard_hubble_proto::flow;
use imdsguard_hubble_server::server::Hub;
use imdsguard_proxy::routing;
use imdsguard_proxy::server::{Authority, FlowSink, ProxyConfig, serve, transparent_listener};
use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

/// The proxy's listening sockets (duplicates), which the datapath needs for its TIME_WAIT
/// hand-off.
#[derive(Default)]
pub struct ProxyListeners {
    pub v4: Option<OwnedFd>,
    pub v6: Option<OwnedFd>,
}

/// How long a proxy flow waits for the datapath's flow of its connection: the event drain reads
/// the ring buffer every few milliseconds, and a denied request's flow can come sooner.
const JOIN_WAIT: Duration = Duration::from_millis(50);
const JOIN_POLL: Duration = Duration::from_millis(5);
/// Proxy flows waiting for their socket; beyond this they go to the Hub as they are.
const JOIN_QUEUE: usize = 4096;

/// The proxy's flows on their way to the Hub. Once the datapath reports sockets, every flow
/// goes through one queue, in order, and waits up to [`JOIN_WAIT`] from its arrival for its
/// connection's socket and process.
struct HubSink {
    hub: Arc<Hub>,
    sockets: Arc<Sockets>,
    queue: mpsc::Sender<(Instant, flow::Flow)>,
}

impl FlowSink for HubSink {
    fn flow(&self, mut f: flow::Flow) {
        if !self.sockets.active() {
            self.sockets.complete(&mut f);
            self.hub.ingest(f);
            return;
        }
        if let Err(e) = self.queue.try_send((Instant::now(), f)) {
            let (_, mut f) = e.into_inner();
            self.sockets.complete(&mut f);
            self.hub.ingest(f);
        }
    }
}

impl HubSink {
    fn start(hub: Arc<Hub>, sockets: Arc<Sockets>) -> HubSink {
        let (queue, mut rx) = mpsc::channel::<(Instant, flow::Flow)>(JOIN_QUEUE);
        let (h, s) = (hub.clone(), sockets.clone());
        tokio::spawn(async move {
            while let Some((arrived, mut f)) = rx.recv().await {
                // A flow that names its socket already (a hostNetwork pod's) has nothing to
                // wait for.
                while f.socket_cookie == 0 && !s.complete(&mut f) && arrived.elapsed() < JOIN_WAIT {
                    tokio::time::sleep(JOIN_POLL).await;
                }
                h.ingest(f);
            }
        });
        HubSink {
            hub,
            sockets,
            queue,
        }
    }
}

/// Installs the routing and starts the listeners (IPv6 is best effort) on `servers`.
pub fn start<T: Send + 'static>(
    port: u16,
    upstream_mark: Option<u32>,
    node: &str,
    hub: &Arc<Hub>,
    view: Arc<SharedView>,
    sockets: Arc<Sockets>,
    servers: &mut JoinSet<T>,
) -> Result<ProxyListeners, AgentError> {
    routing::install(routing::MARK, routing::TABLE).map_err(AgentError::io(
        "installing the proxy's policy routing (needs CAP_NET_ADMIN)",
    ))?;
    let cfg = ProxyConfig {
        node_name: node.to_owned(),
        upstream_mark,
        hostnet_redirects: true,
        ..Default::default()
    };
    let sink: Arc<dyn FlowSink> = Arc::new(HubSink::start(hub.clone(), sockets));
    let mut listeners = ProxyListeners::default();
    for addr in [
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ] {
        match transparent_listener(addr) {
            Ok(l) => {
                info!("proxy: listening on {addr} (transparent)");
                let fd = l
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(AgentError::io("duplicating the proxy's listener"))?;
                if addr.is_ipv6() {
                    listeners.v6 = Some(fd);
                } else {
                    listeners.v4 = Some(fd);
                }
                let (cfg, sink) = (cfg.clone(), sink.clone());
                let authority: Arc<dyn Authority> = view.clone();
                servers.spawn(async move {
                    if let Err(e) = serve(l, cfg, authority, sink).await {
                        error!(error = %e, "proxy: the listener on {addr} stopped");
                    }
                    std::future::pending().await
                });
            }
            Err(e) if addr.is_ipv6() => warn!(error = %e, "proxy: not listening on {addr}"),
            Err(e) => {
                return Err(AgentError::Other {
                    context: format!(
                        "listening on {addr} for the L7 proxy (is --proxy-port {port} in use?)"
                    ),
                    source: e.into(),
                });
            }
        }
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imdsguard_hubble_proto::flow::{Ip, Layer4, Tcp, layer4};
    use imdsguard_hubble_proto::observer::get_flows_response::ResponseTypes;
    use imdsguard_hubble_proto::process::{self, ProcessInfo};

    fn tcp(sport: u32) -> flow::Flow {
        flow::Flow {
            ip: Some(Ip {
                source: "10.0.0.2".into(),
                destination: "169.254.169.254".into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::Tcp(Tcp {
                    source_port: sport,
                    destination_port: 80,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_proxy_flow_that_comes_before_the_datapaths_waits_for_it_in_order() {
        let hub = Hub::new(15, "n1", "");
        let sockets = Arc::new(Sockets::default());
        let sink = HubSink::start(hub.clone(), sockets.clone());
        let envoy = ProcessInfo {
            container: "istio-proxy".into(),
            process: "envoy".into(),
            pid: 7,
            uid: None,
        };
        let mut dp = tcp(40000);
        dp.socket_cookie = 1;
        process::set(&mut dp, &envoy);
        // Another connection makes the datapath's sockets known.
        let mut other = tcp(1);
        other.socket_cookie = 9;
        sockets.record(&other);
        sink.flow(tcp(40000));
        sink.flow(tcp(40001));
        // The datapath's flow arrives after the proxy's, as the drain may deliver it.
        tokio::time::sleep(Duration::from_millis(10)).await;
        sockets.record(&dp);
        tokio::time::sleep(JOIN_WAIT * 2).await;
        let flows: Vec<flow::Flow> = hub
            .ring()
            .snapshot_newest_first()
            .into_iter()
            .rev()
            .filter_map(|(_, e)| match e.response_types.clone() {
                Some(ResponseTypes::Flow(f)) => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(
            flows.len(),
            2,
            "both delivered, the unknown one after its wait"
        );
        assert_eq!(process::get(&flows[0]), Some(envoy));
        assert_eq!(flows[0].socket_cookie, 1);
        assert!(
            process::get(&flows[1]).is_none(),
            "no socket known: as it was"
        );
    }
}
