//! HTTPS for the API, the dashboard and `/metrics` (rustls): a certificate chain and its key
//! from PEM files. Handshakes run apart from the accept loop, a bounded number at once and
//! each given [`HANDSHAKE_TIMEOUT`], so a slow or silent client holds up nobody else.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::{Result, ServeError};

/// The longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most handshakes under way at once; further connections wait to be accepted.
const HANDSHAKES: usize = 256;

/// The server's TLS settings: the certificate chain in `certificate` (PEM, the server's
/// first) and its private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1).
pub fn server_config(certificate: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        ServeError::Tls(format!("{what} {}: {e}", path.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .map_err(|e| bad("cannot read serve.tls_certificate", certificate, &e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad("serve.tls_certificate is not PEM", certificate, &e))?;
    if chain.is_empty() {
        return Err(bad(
            "serve.tls_certificate holds no certificate",
            certificate,
            &"expected -----BEGIN CERTIFICATE-----",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        bad(
            "serve.tls_key holds no private key (PEM: PKCS#8, PKCS#1 or SEC1)",
            key,
            &e,
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            ServeError::Tls(format!(
                "serve.tls_certificate and serve.tls_key do not go together: {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Connections on a TCP listener, handed out once their TLS handshake is done.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (done, ready) = mpsc::channel(HANDSHAKES);
        let acceptor = TlsAcceptor::from(config);
        let accepting = tokio::spawn(async move {
            let handshakes = Arc::new(Semaphore::new(HANDSHAKES));
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, as axum does.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "a TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "a TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener {
            ready,
            local,
            accepting,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (the runtime is shutting down): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
