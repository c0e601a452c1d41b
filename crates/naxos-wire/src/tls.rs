//! TLS for the network seam: `TlsNet` is `Net` over TCP with rustls (ring
//! provider). A server requires a certificate signed by the cluster's CA
//! from every peer (clients, and servers calling each other with their own
//! certificates) and refuses plaintext with an answer that says so. What a
//! peer may do comes from its certificate's subject: an organizational unit
//! (OU) of `admin` makes it an admin (bootstrap, seal, layout changes,
//! reconfiguration, trim); any other certificate of the CA is a client's.
//! Servers' certificates must carry `OU=admin`: they seal, bootstrap and
//! commit layouts on each other's behalf.

use crate::frame::FrameReader;
use crate::net::{BoxStream, Listener, Net, Role};
use crate::proto::{response, Request, Response};
use crate::{ErrorCode, ServerError};
use async_trait::async_trait;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// The organizational unit that makes a certificate an admin's.
pub const ADMIN_OU: &str = "admin";
/// How long a new connection has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for `accept`.
const ACCEPT_BACKLOG: usize = 1024;

/// The files of one TLS identity: its certificate chain, its private key,
/// and the CA that signs every certificate of the cluster (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// This node's or client's certificate (chain), PEM.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificate(s) peers must be signed by, PEM.
    pub ca: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{what} {path}: {why}")]
    File {
        /// Which file (certificate, key, CA).
        what: &'static str,
        /// Its path.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// rustls refused the configuration (a key that does not match the certificate, ...).
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(what: &'static str, path: &Path, why: impl ToString) -> TlsError {
    TlsError::File { what, path: path.display().to_string(), why: why.to_string() }
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no certificate in it (PEM, -----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

/// `Net` over TLS: every listener requires client certificates of the CA;
/// every connection presents this identity's certificate.
pub struct TlsNet {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl TlsNet {
    /// Loads the identity and the CA.
    pub fn new(files: &TlsFiles) -> Result<TlsNet, TlsError> {
        let chain = certs("certificate", &files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error("private key", &files.key, e))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in certs("CA certificate", &files.ca)? {
            roots.add(ca).map_err(|e| file_error("CA certificate", &files.ca, e))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                TlsError::Config(format!("certificate {} and key {}: {e}", files.cert.display(), files.key.display()))
            })?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(TlsNet { server: Arc::new(server), client: Arc::new(client) })
    }
}

/// The role a peer's certificate gives it.
pub fn role_of(cert: &CertificateDer<'_>) -> Role {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, c)) => {
            let admin = c.subject().iter_organizational_unit().any(|ou| ou.as_str().is_ok_and(|s| s == ADMIN_OU));
            if admin {
                Role::Admin
            } else {
                Role::Client
            }
        }
        Err(_) => Role::Client,
    }
}

struct TlsListener {
    addr: SocketAddr,
    ready: mpsc::Receiver<(BoxStream, SocketAddr, Role)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl Listener for TlsListener {
    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr, Role)> {
        self.ready.recv().await.ok_or_else(|| io::Error::other("the TLS listener stopped"))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// Answers a plaintext client's first request with an error that says TLS
/// is required, then closes.
async fn refuse_plaintext(mut stream: tokio::net::TcpStream, peer: SocketAddr) {
    tracing::warn!(%peer, "refused a plaintext connection: this server requires TLS");
    let (r, mut w) = stream.split();
    let mut reader = FrameReader::new(r, 1 << 20);
    let id = match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next::<Request>()).await {
        Ok(Ok(Some(req))) => req.id,
        _ => return,
    };
    let error = ServerError::new(
        ErrorCode::Forbidden,
        "this server requires TLS: connect with --tls-cert, --tls-key and --tls-ca (a certificate of the cluster's CA)",
    );
    let resp = Response { id, body: Some(response::Body::Error(error.to_proto())) };
    let mut buf = bytes::BytesMut::new();
    crate::frame::encode(&resp, &mut buf);
    let _ = w.write_all(&buf).await;
    let _ = w.shutdown().await;
}

#[async_trait]
impl Net for TlsNet {
    async fn bind(&self, addr: &str) -> io::Result<Box<dyn Listener>> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server.clone());
        let (tx, ready) = mpsc::channel(ACCEPT_BACKLOG);
        // Handshakes run on tasks of their own: a slow or silent peer never
        // holds up the next connection.
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    // A TLS connection starts with a handshake record (22).
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
                        Ok(Ok(1)) if first[0] == 22 => {}
                        Ok(Ok(1)) => return refuse_plaintext(tcp, peer).await,
                        _ => return,
                    }
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, "TLS handshake refused: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "TLS handshake did not finish within {HANDSHAKE_TIMEOUT:?}");
                            return;
                        }
                    };
                    let role =
                        stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map_or(Role::Client, role_of);
                    let _ = tx.send((Box::new(stream) as BoxStream, peer, role)).await;
                });
            }
        });
        Ok(Box::new(TlsListener { addr: local, ready, task }))
    }

    async fn connect(&self, addr: &str) -> io::Result<BoxStream> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("'{host}' is not a host name: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(self.client.clone());
        let stream = connector.connect(name, tcp).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("TLS handshake with {addr} failed: {e} (does it run with TLS, and is its certificate of the same CA and for this address?)"),
            )
        })?;
        Ok(Box::new(stream))
    }
}
