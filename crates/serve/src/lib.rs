//! brewline's serving layer: the shop's figures as the Lambda merge of the batch view (the
//! last published batch run's marts) and the speed layer's increments since its watermark,
//! served as a JSON API, a live dashboard and Prometheus metrics.
//!
//! - [`live`]: the figures, and the tail of the topics that keeps them up to date;
//! - [`api`]: the routes.

pub mod api;
pub mod live;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use brewline_speed::metrics;

pub use api::{router, AppState};
pub use live::{Live, TailSettings};

/// What can go wrong in the serving layer.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("batch view: {0}")]
    Batch(String),
    #[error("cannot listen on {addr}: {message} (is the port taken?)")]
    Listen { addr: SocketAddr, message: String },
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

/// Serves the routes on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    tracing::info!(%addr, "serving the API and the dashboard");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(|e| ServeError::Listen {
            addr,
            message: e.to_string(),
        })
}

/// The serving layer's metrics, after the process's own.
pub fn render_metrics(state: &AppState) -> String {
    let mut out = (state.process_metrics)();
    let live = &state.live;
    let requests: Vec<(String, f64)> = live
        .requests
        .lock()
        .map(|m| {
            m.iter()
                .map(|((route, status), n)| {
                    (
                        metrics::label_set(&[("route", route), ("status", &status.to_string())]),
                        *n as f64,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    metrics::render_values(&mut out, &metrics::SERVE_REQUESTS, &requests);
    let one = |v: f64| vec![(String::new(), v)];
    metrics::render_values(
        &mut out,
        &metrics::SERVE_SPEED_EVENTS,
        &one(live.events.load(Ordering::Relaxed) as f64),
    );
    let figures = live.read(|f| {
        (
            f.speed.orders_read(),
            f.speed.unresolved_count(),
            f.lag,
            f.watermark().cloned(),
        )
    });
    if let Some((orders, unresolved, lag, watermark)) = figures {
        metrics::render_values(&mut out, &metrics::SERVE_SPEED_ORDERS, &one(orders as f64));
        metrics::render_values(
            &mut out,
            &metrics::SERVE_UNRESOLVED_ORDERS,
            &one(unresolved as f64),
        );
        metrics::render_values(&mut out, &metrics::SERVE_SPEED_LAG, &one(lag as f64));
        if let Some(w) = watermark {
            if let Some(through) = w.through_ms {
                metrics::render_values(
                    &mut out,
                    &metrics::BATCH_WATERMARK,
                    &one(through as f64 / 1e3),
                );
            }
            metrics::render_values(
                &mut out,
                &metrics::BATCH_LAST_SUCCESS,
                &one(w.published_ms as f64 / 1e3),
            );
        }
    }
    if let Ok(Some(passed)) = live.last_run_passed.lock().map(|p| *p) {
        metrics::render_values(
            &mut out,
            &metrics::BATCH_LAST_RUN_PASSED,
            &one(if passed { 1.0 } else { 0.0 }),
        );
    }
    out
}
