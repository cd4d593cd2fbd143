//! brewline's serving layer: the shop's figures as the Lambda merge of the batch view (the
//! last published batch run's marts) and the speed layer's increments since its watermark,
//! served as a JSON API, a live dashboard and Prometheus metrics.
//!
//! - [`live`]: the figures, and the tail of the topics that keeps them up to date;
//! - [`api`]: the routes;
//! - [`ServingCollector`]: the serving layer's metrics.

pub mod access;
pub mod api;
pub mod live;
mod metrics;
pub mod tls;

use std::net::SocketAddr;

pub use api::{metrics_router, router, AppState};
pub use live::{Live, TailSettings};
pub use metrics::ServingCollector;

/// What can go wrong in the serving layer.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("batch view: {0}")]
    Batch(String),
    #[error("cannot listen on {addr}: {message} (is the port taken?)")]
    Listen { addr: SocketAddr, message: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Port(#[from] brewline_ports::PortError),
}

impl From<brewline_batch::BatchError> for ServeError {
    fn from(e: brewline_batch::BatchError) -> Self {
        ServeError::Batch(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, ServeError>;

/// Listens on `addr` (fails at once when the port is taken).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Listen {
            addr,
            message: e.to_string(),
        })
}

/// Serves `routes` ([`router`], [`metrics_router`]) on `listener` until `shutdown`: over
/// HTTPS with `tls` ([`tls::server_config`]), else plain HTTP.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    routes: axum::Router,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "serving");
    match tls {
        Some(config) => serve_on(tls::TlsListener::new(listener, config), routes, shutdown).await,
        None => serve_on(listener, routes, shutdown).await,
    }
    .map_err(|e| ServeError::Listen {
        addr,
        message: e.to_string(),
    })
}

async fn serve_on<L>(
    listener: L,
    routes: axum::Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    axum::serve(listener, routes)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}
