//! The client side of the Observer API, for `imdsguard observe --server` and `imdsguard status
//! --server`: a connection to any Hubble server (an imdsguard agent, a Cilium agent, Hubble
//! Relay), its `GetFlows` stream printed as it comes, and `GetNodes`/`ServerStatus`.
//!
//! How to reach the server is [`ClientOptions`]: an address on TCP (`host:port`,
//! `http://host:port`, `tls://host:port`) or a unix socket (`unix:///path`), and [`ClientTls`]
//! with the hubble CLI's TLS settings (CA files, client certificate, server name).

use crate::tls::{TlsError, certificates};
use imdsguard_flow::observe::{ObserveError, Printer};
use imdsguard_flow::observer::GetFlowsRequest;
use imdsguard_flow::observer::observer_client::ObserverClient;
use imdsguard_hubble_proto::observer::{
    GetFlowsResponse, GetNodesRequest, GetNodesResponse, ServerStatusRequest, ServerStatusResponse,
};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tonic::Streaming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Why talking to a Hubble server failed. The texts name the server as it was given.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server address {server:?}")]
    Address {
        server: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A unix socket that could not be reached.
    #[error("connecting to {server}")]
    Unix {
        server: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A TCP address that could not be reached.
    #[error("connecting to {server} (is the agent running with --hubble-listen-address?)")]
    Tcp {
        server: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A TCP address reached with TLS whose handshake or certificates failed.
    #[error(
        "connecting to {server} with TLS (check --tls-ca-cert-files, --tls-server-name and, for mTLS, --tls-client-cert-file)"
    )]
    Tls {
        server: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("TLS settings")]
    TlsFiles(#[from] TlsError),
    #[error("{0}")]
    Config(String),
    /// The server refused the request (its status message).
    #[error("GetFlows: {0}")]
    GetFlows(String),
    /// The stream broke off (its status message).
    #[error("GetFlows stream: {0}")]
    Stream(String),
    /// A unary call failed: which, and the status message.
    #[error("{call}: {message}")]
    Call { call: &'static str, message: String },
    #[error(transparent)]
    Print(#[from] ObserveError),
}

/// The hubble CLI's TLS flags (`--tls-ca-cert-files`, `--tls-client-cert-file`,
/// `--tls-client-key-file`, `--tls-server-name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CAs to verify the server with; empty: the system's roots.
    pub ca_cert_files: Vec<PathBuf>,
    /// A client certificate and its key, for servers that ask for one (mTLS).
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// The name the server's certificate must carry; default: the address's host.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// tonic's TLS settings from the files, read now so that a wrong path is named.
    pub fn config(&self) -> Result<ClientTlsConfig, ClientError> {
        let mut config = ClientTlsConfig::new();
        if self.ca_cert_files.is_empty() {
            config = config.with_native_roots();
        }
        for path in &self.ca_cert_files {
            // Checked here so a file without certificates is an error, not an empty trust.
            certificates(path)?;
            config = config.ca_certificate(Certificate::from_pem(read(path)?));
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                certificates(cert)?;
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => {
                return Err(ClientError::Config(
                    "--tls-client-cert-file and --tls-client-key-file go together".into(),
                ));
            }
        }
        if let Some(name) = &self.server_name {
            if name.is_empty() || name.contains([' ', '/', ':']) {
                return Err(TlsError::ServerName(name.clone()).into());
            }
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.clone(),
        source,
    })
}

/// Where the server is and how to talk to it.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port`, `http://host:port`, `tls://host:port` (TLS) or `unix:///path`.
    pub server: String,
    /// For TCP; a unix socket answers at once or not at all.
    pub connect_timeout: Duration,
    /// TLS on the TCP connection (`--tls`); a `tls://` address turns it on with defaults.
    pub tls: Option<ClientTls>,
}

impl ClientOptions {
    pub fn new(server: impl Into<String>) -> ClientOptions {
        ClientOptions {
            server: server.into(),
            connect_timeout: Duration::from_secs(5),
            tls: None,
        }
    }

    pub fn with_tls(mut self, tls: ClientTls) -> ClientOptions {
        self.tls = Some(tls);
        self
    }

    /// Connects, without sending anything yet.
    pub async fn connect(&self) -> Result<Channel, ClientError> {
        let server = &self.server;
        if let Some(path) = server.strip_prefix("unix://") {
            if self.tls.is_some() {
                return Err(ClientError::Config(format!(
                    "{server}: a unix socket is served without TLS; leave out --tls"
                )));
            }
            let path = path.to_owned();
            // The URI is required by the API and unused: the connector below dials the socket.
            let endpoint = Endpoint::from_static("http://[::]:50051");
            let connector = tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map(hyper_util::rt::TokioIo::new)
                }
            });
            return endpoint
                .connect_with_connector(connector)
                .await
                .map_err(|source| ClientError::Unix {
                    server: server.clone(),
                    source,
                });
        }
        // `tls://` is the hubble CLI's way to ask for TLS in the address itself.
        let (rest, tls) = match server.strip_prefix("tls://") {
            Some(rest) => (rest, Some(self.tls.clone().unwrap_or_default())),
            None => (server.as_str(), self.tls.clone()),
        };
        let host_port = rest
            .strip_prefix("http://")
            .or_else(|| rest.strip_prefix("https://"))
            .unwrap_or(rest);
        let uri = match (&tls, rest.contains("://")) {
            (Some(_), _) => format!("https://{host_port}"),
            (None, true) => rest.to_owned(),
            (None, false) => format!("http://{rest}"),
        };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|source| ClientError::Address {
                server: server.clone(),
                source,
            })?
            .connect_timeout(self.connect_timeout);
        if let Some(tls) = &tls {
            endpoint =
                endpoint
                    .tls_config(tls.config()?)
                    .map_err(|source| ClientError::Address {
                        server: server.clone(),
                        source,
                    })?;
        }
        endpoint.connect().await.map_err(|source| match tls {
            Some(_) => ClientError::Tls {
                server: server.clone(),
                source,
            },
            None => ClientError::Tcp {
                server: server.clone(),
                source,
            },
        })
    }

    /// Opens the `GetFlows` stream of `req`.
    async fn flows(
        &self,
        req: GetFlowsRequest,
    ) -> Result<Streaming<GetFlowsResponse>, ClientError> {
        let mut client = ObserverClient::new(self.connect().await?);
        Ok(client
            .get_flows(req)
            .await
            .map_err(|s| ClientError::GetFlows(s.message().to_owned()))?
            .into_inner())
    }

    /// Sends `req` and prints each response to `out` as it arrives (flushed, for followers),
    /// then what the printer keeps for the end. The printer applies the client-side filters.
    pub async fn print_flows(
        &self,
        req: GetFlowsRequest,
        printer: &mut Printer,
        out: &mut impl Write,
    ) -> Result<(), ClientError> {
        let mut stream = self.flows(req).await?;
        while let Some(resp) = next_response(&mut stream).await? {
            printer.print(out, &resp)?;
            out.flush().map_err(ObserveError::from)?;
            // `--first` counted by the client: dropping the stream cancels the call.
            if printer.done() {
                break;
            }
        }
        printer.finish(out)?;
        out.flush().map_err(ObserveError::from)?;
        Ok(())
    }

    /// Sends `req` and hands each flow of the answer to `each` (other responses, node status
    /// and lost-event notices, are counted as the printer would show them, not passed on), for
    /// callers that judge flows rather than print them (`policy whatif`). Returns the lost
    /// events the server reported, so a caller can say its view is incomplete.
    pub async fn for_each_flow(
        &self,
        req: GetFlowsRequest,
        mut each: impl FnMut(&imdsguard_flow::flow::Flow),
    ) -> Result<u64, ClientError> {
        use imdsguard_hubble_proto::observer::get_flows_response::ResponseTypes;
        let mut stream = self.flows(req).await?;
        let mut lost = 0;
        while let Some(resp) = next_response(&mut stream).await? {
            match &resp.response_types {
                Some(ResponseTypes::Flow(f)) => each(f),
                Some(ResponseTypes::LostEvents(l)) => lost += l.num_events_lost,
                _ => {}
            }
        }
        Ok(lost)
    }

    /// `ServerStatus` and `GetNodes`, as `hubble status` and `hubble list nodes` ask them. A
    /// server that does not implement GetNodes (Cilium's agent) gives no nodes.
    pub async fn status_and_nodes(
        &self,
    ) -> Result<(ServerStatusResponse, Option<GetNodesResponse>), ClientError> {
        let mut client = ObserverClient::new(self.connect().await?);
        let status = client
            .server_status(ServerStatusRequest {})
            .await
            .map_err(|s| ClientError::Call {
                call: "ServerStatus",
                message: s.message().to_owned(),
            })?
            .into_inner();
        let nodes = match client.get_nodes(GetNodesRequest {}).await {
            Ok(r) => Some(r.into_inner()),
            Err(s) if s.code() == tonic::Code::Unimplemented => None,
            Err(s) => {
                return Err(ClientError::Call {
                    call: "GetNodes",
                    message: s.message().to_owned(),
                });
            }
        };
        Ok((status, nodes))
    }

    /// `imdsguard status --server` in `output` format (`text`/`table`, `wide`: the nodes'
    /// version, address and TLS, or `json`: the responses as protojson), and whether every node
    /// is connected.
    pub async fn status_report(&self, output: &str) -> Result<(String, bool), ClientError> {
        let wide = match output {
            "text" | "table" | "json" => false,
            "wide" => true,
            other => {
                return Err(ClientError::Config(format!(
                    "unknown output format {other:?}: text, wide or json"
                )));
            }
        };
        let (status, nodes) = self.status_and_nodes().await?;
        let nodes = nodes.map(|n| n.nodes).unwrap_or_default();
        let connected = imdsguard_hubble_proto::relay::NodeState::NodeConnected as i32;
        let all_connected = nodes.iter().all(|n| n.state == connected);
        let out = if output == "json" {
            let doc = serde_json::json!({ "status": status, "nodes": nodes });
            serde_json::to_string_pretty(&doc)
                .map_err(|e| ClientError::Config(format!("encoding the answer: {e}")))?
                + "\n"
        } else {
            let mut out = crate::report::server_status(&status);
            if !nodes.is_empty() {
                out.push('\n');
                out.push_str(&crate::report::nodes_table(&nodes, wide));
            }
            out
        };
        Ok((out, all_connected))
    }

    /// The hubble CLI's way to choose TLS: `--tls` or a `tls://` address turns it on; TLS
    /// settings without either are refused rather than ignored.
    pub fn from_flags(
        server: String,
        tls: bool,
        settings: ClientTls,
    ) -> Result<ClientOptions, ClientError> {
        let wanted = tls || server.starts_with("tls://");
        if !wanted && settings != ClientTls::default() {
            return Err(ClientError::Config(
                "the --tls-* flags need --tls (or a tls:// server address)".into(),
            ));
        }
        let client = ClientOptions::new(server);
        Ok(if wanted {
            client.with_tls(settings)
        } else {
            client
        })
    }
}

/// The stream's next response; `None` when the server ended it.
async fn next_response(
    stream: &mut Streaming<GetFlowsResponse>,
) -> Result<Option<GetFlowsResponse>, ClientError> {
    stream
        .message()
        .await
        .map_err(|s| ClientError::Stream(s.message().to_owned()))
}
