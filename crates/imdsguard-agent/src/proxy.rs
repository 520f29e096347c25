//! The L7 proxy inside the agent: its policy routing, then transparent listeners on loopback,
//! where the datapath assigns connections whose policy has HTTP rules. Its flows go into the
//! agent's Hubble ring buffer.

use crate::AgentError;
use crate::node_view::SharedView;
use imdsguard_hubble_proto::flow;
use imdsguard_hubble_server::server::Hub;
use imdsguard_proxy::routing;
use imdsguard_proxy::server::{Authority, FlowSink, ProxyConfig, serve, transparent_listener};
use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

/// The proxy's listening sockets (duplicates), which the datapath needs for its TIME_WAIT
/// hand-off.
#[derive(Default)]
pub struct ProxyListeners {
    pub v4: Option<OwnedFd>,
    pub v6: Option<OwnedFd>,
}

struct HubSink(Arc<Hub>);

impl FlowSink for HubSink {
    fn flow(&self, f: flow::Flow) {
        self.0.ingest(f);
    }
}

/// Installs the routing and starts the listeners (IPv6 is best effort) on `servers`.
pub fn start<T: Send + 'static>(
    port: u16,
    upstream_mark: Option<u32>,
    node: &str,
    hub: &Arc<Hub>,
    view: Arc<SharedView>,
    servers: &mut JoinSet<T>,
) -> Result<ProxyListeners, AgentError> {
    routing::install(routing::MARK, routing::TABLE).map_err(AgentError::io(
        "installing the proxy's policy routing (needs CAP_NET_ADMIN)",
    ))?;
    let cfg = ProxyConfig {
        node_name: node.to_owned(),
        upstream_mark,
        ..Default::default()
    };
    let sink: Arc<dyn FlowSink> = Arc::new(HubSink(hub.clone()));
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
