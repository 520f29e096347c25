//! TLS on the Hubble server's TCP listener, as Cilium's agent offers it to Relay: a certificate
//! and key (`--hubble-tls-cert-file`, `--hubble-tls-key-file`) and, for mutual TLS, the CAs that
//! sign client certificates (`--hubble-tls-client-ca-files`).
//!
//! The files are read again when they change (cert-manager and Kubernetes Secrets rotate them
//! by swapping symlinks): each new connection gets the newest configuration, and established
//! connections keep the one they started with. A change that does not load (a certificate
//! written before its key) keeps the last good configuration until the files agree.
//!
//! Only TLS 1.3 is offered, as Cilium's Hubble server does, and ALPN says `h2`: gRPC clients
//! (grpc-go in Relay, tonic) refuse a TLS server that does not negotiate it.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// How long a client may take to finish its handshake before the connection is dropped: a
/// stalled client must not hold a socket forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at most. The port is reachable from pods: a flood of connections that
/// never finish their handshake must not take every descriptor, so beyond this new connections
/// are closed at once (Relay retries) while the ones in progress finish or time out.
const MAX_HANDSHAKES: usize = 256;

/// Why TLS files could not be used. Every text names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM certificate")]
    Certificate {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1)")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path}: a CA certificate rustls cannot use")]
    Ca {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the client CAs cannot verify client certificates")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    #[error("the certificate {cert} and the key {key} are not a usable pair")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// The server's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CAs whose client certificates are accepted; empty: no client certificate is asked for.
    pub client_ca_files: Vec<PathBuf>,
}

impl ServerTlsFiles {
    fn all(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.cert_file, &self.key_file]
            .into_iter()
            .chain(&self.client_ca_files)
    }
}

/// What tells a changed file: `metadata` follows symlinks, so a Secret's swapped `..data` link
/// shows as a new inode even when size and time happen to agree.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        modified: m.modified().ok(),
    })
}

struct State {
    /// The files as they were when `config` was loaded from them.
    stamps: Vec<Option<Stamp>>,
    config: Arc<ServerConfig>,
    /// The last failed reload's error, so that a rotation stuck half-way is logged once.
    failing: Option<String>,
}

/// The server's TLS configuration, reloaded from its files when they change.
pub struct ServerTls {
    files: ServerTlsFiles,
    state: Mutex<State>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate of a PEM file (a chain, or a CA bundle).
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Certificate {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|source| TlsError::Key {
        path: path.to_owned(),
        source,
    })
}

/// CA certificates as trust anchors.
pub(crate) fn roots(files: &[PathBuf]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for path in files {
        for cert in certificates(path)? {
            roots.add(cert).map_err(|source| TlsError::Ca {
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(files: &ServerTlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&files.cert_file)?;
    let key = private_key(&files.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Pair {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
            source,
        })?;
    let builder = if files.client_ca_files.is_empty() {
        builder.with_no_client_auth()
    } else {
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(&files.client_ca_files)?),
            provider(),
        )
        .build()
        .map_err(TlsError::ClientVerifier)?;
        builder.with_client_cert_verifier(verifier)
    };
    // with_single_cert also checks that the key is the certificate's.
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Pair {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

impl ServerTls {
    /// Loads the files; a server must not start on files it cannot use.
    pub fn load(files: ServerTlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        let stamps = files.all().map(|p| stamp(p)).collect();
        let config = Arc::new(build(&files)?);
        Ok(Arc::new(ServerTls {
            files,
            state: Mutex::new(State {
                stamps,
                config,
                failing: None,
            }),
        }))
    }

    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration new connections get.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.lock().config.clone()
    }

    /// Loads the files again if any of them changed since the last good load: `Ok(true)` when
    /// the new configuration is in force, `Err` when the changed files do not load (the old
    /// configuration stays, and the next call tries again).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamps: Vec<Option<Stamp>> = self.files.all().map(|p| stamp(p)).collect();
        if stamps == self.lock().stamps {
            return Ok(false);
        }
        let config = build(&self.files)?;
        let mut state = self.lock();
        state.stamps = stamps;
        state.config = Arc::new(config);
        state.failing = None;
        Ok(true)
    }

    /// Checks the files every `every` on a task of the current runtime, logging reloads and
    /// (once per distinct error) reloads that failed.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(tls) = tls.upgrade() else { return };
                match tls.reload_if_changed() {
                    Ok(true) => tracing::info!(
                        cert = %tls.files.cert_file.display(),
                        "hubble: TLS certificates reloaded"
                    ),
                    Ok(false) => {}
                    Err(e) => {
                        let text = chain(&e);
                        let mut state = tls.lock();
                        if state.failing.as_deref() != Some(text.as_str()) {
                            tracing::warn!(
                                error = %text,
                                "hubble: changed TLS files do not load; the previous certificates stay in use"
                            );
                            state.failing = Some(text);
                        }
                    }
                }
            }
        })
    }

    /// The TLS connections of `listener`, for `serve_with_incoming`. Each handshake runs on its
    /// own task, so a slow or failing client never holds up the others; failed handshakes are
    /// logged at debug level and dropped. Accepting stops when the stream is dropped.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, io::Error>> {
        let (tx, rx) = mpsc::channel(64);
        let pending = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = tx.closed() => return,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "hubble: accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "hubble: too many TLS handshakes in progress; closed");
                    continue;
                };
                let acceptor = TlsAcceptor::from(self.config());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let stream = handshake(acceptor, tcp, peer).await;
                    drop(permit);
                    if let Some(stream) = stream {
                        let _ = tx.send(Ok(stream)).await;
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

/// An error with its causes, `a: b: c`, for one log field.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "hubble: TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "hubble: TLS handshake timed out");
            None
        }
    }
}

/// The name Relay verifies a node's certificate against, as Cilium forms it:
/// `<node>.<cluster>.hubble-grpc.cilium.io`, dots in either name turned into dashes so that one
/// wildcard certificate (`*.<cluster>.hubble-grpc.cilium.io`) covers every node.
pub fn server_name(node: &str, cluster: &str) -> String {
    let cluster = if cluster.is_empty() {
        "default"
    } else {
        cluster
    };
    format!(
        "{}.{}.hubble-grpc.cilium.io",
        node.replace('.', "-"),
        cluster.replace('.', "-")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_ciliums() {
        assert_eq!(
            server_name("node-a", "default"),
            "node-a.default.hubble-grpc.cilium.io"
        );
        assert_eq!(
            server_name("ip-10-0-1-2.ec2.internal", "prod.eu"),
            "ip-10-0-1-2-ec2-internal.prod-eu.hubble-grpc.cilium.io"
        );
        assert_eq!(server_name("n", ""), "n.default.hubble-grpc.cilium.io");
    }
}
