//! `--metrics-addr`: the process's metrics at `/metrics` (OpenMetrics text, which Prometheus
//! reads) and its health at `/healthz`, served while a command runs.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use brewline_speed::stats::Stats;

/// The routes of the metrics endpoint: `/metrics`, and `/healthz`, which answers
/// `{"status":"ok"}`, or `{"status":"degraded","reason":...}` while the process runs degraded
/// (a recommender deciding with lookups the store lost, or waiting for lookups): both with 200,
/// a status to alert on, not to restart for (a restarted recommender would only wait).
pub fn router(stats: Arc<Stats>) -> Router {
    let registry = Arc::new(brewline_speed::metrics::registry(stats.clone()));
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, brewline_metrics::CONTENT_TYPE)],
                        brewline_metrics::render(&registry),
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let degraded = stats.degraded();
                async move {
                    match degraded {
                        None => Json(serde_json::json!({ "status": "ok" })).into_response(),
                        Some(reason) => {
                            Json(serde_json::json!({ "status": "degraded", "reason": reason }))
                                .into_response()
                        }
                    }
                }
            }),
        )
}

/// Serves `/metrics` on `addr` in the background, when an address is given.
pub async fn start(addr: Option<SocketAddr>, stats: Arc<Stats>) -> anyhow::Result<()> {
    let Some(addr) = addr else { return Ok(()) };
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for --metrics-addr (is the port taken?)")
    })?;
    tracing::info!(%addr, "serving Prometheus metrics at /metrics and the health at /healthz");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(stats)).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(())
}
