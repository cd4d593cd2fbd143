//! `brewline serve`, and the serving part of `demo --serve`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use brewline_kafka::KafkaLog;
use brewline_mysql::MysqlSource;
use brewline_serve::access::Access;
use brewline_serve::live::{self, Live};
use brewline_serve::{AppState, ServingCollector};
use brewline_speed::stats::Stats;
use tokio::sync::watch;

use crate::args::ServeArgs;
use crate::config::Config;
use crate::embedded::EmbeddedPipeline;

pub async fn run(mut config: Config, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (lake, data_dir) = crate::batch::open_lake(&mut config, &args.lake);
    let servers = args.engines.apply(&mut config);
    let addr = args.addr.unwrap_or(config.serve.addr);
    // The run history only adds the last run's outcome to /metrics: serve without it.
    let history = match crate::batch::history(&config, &data_dir).await {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "no batch run history: brewline_batch_last_run_passed is not exported"
            );
            None
        }
    };
    let stats = Arc::new(Stats::default());
    let (_stop, shutdown) = crate::shutdown::signalled();
    if servers {
        let log = KafkaLog::new(config.kafka.clone());
        let source = MysqlSource::new(&config.mysql)?;
        let sources = live::TailSources {
            log: &log,
            source: &source,
            lake: &lake,
            history: history.as_deref(),
        };
        serve_until(&config, addr, sources, stats, shutdown).await?;
    } else {
        let pipeline = EmbeddedPipeline::open(config.clone(), &data_dir)?;
        pipeline.prepare().await?;
        let sources = live::TailSources {
            log: &pipeline.dir.log,
            source: &pipeline.dir.source,
            lake: &lake,
            history: history.as_deref(),
        };
        serve_until(&config, addr, sources, pipeline.stats.clone(), shutdown).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Serves the API and the dashboard on `addr`, and keeps their figures up to date from
/// `sources`, until `shutdown`. `stats` are the process's own figures, rendered at /metrics
/// before the serving layer's.
pub async fn serve_until(
    config: &Config,
    addr: SocketAddr,
    sources: live::TailSources<'_>,
    stats: Arc<Stats>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let tls = tls_config(config)?;
    let listener = brewline_serve::bind(addr).await?;
    let live = Arc::new(Live::new(config.serve.max_live_clients));
    let mut registry = brewline_speed::metrics::registry(stats);
    registry.register_collector(Box::new(ServingCollector(live.clone())));
    let state = AppState {
        live: live.clone(),
        refresh: Duration::from_millis(config.serve.refresh_ms),
        metrics: Arc::new(registry),
        access: Access::new(
            config.serve.token.as_deref(),
            Some(Duration::from_millis(config.serve.request_timeout_ms)),
            config.serve.secure_cookie || tls.is_some(),
        ),
    };
    if !state.access.closed() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "serving without a token on an address other hosts reach: set serve.token (BREWLINE_SERVE__TOKEN)");
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let metrics = match config.serve.metrics_addr {
        Some(metrics_addr) => {
            let listener = brewline_serve::bind(metrics_addr).await?;
            println!("serving /metrics without the token at http://{metrics_addr}/metrics");
            let routes = brewline_serve::metrics_router(state.clone());
            Some(tokio::spawn(brewline_serve::serve(
                listener,
                None,
                routes,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let server = tokio::spawn(brewline_serve::serve(
        listener,
        tls,
        brewline_serve::router(state),
        shutdown.clone(),
    ));
    println!("serving the dashboard at {scheme}://{addr}/ (API under /api, metrics at /metrics)");
    let tailed = live::run(sources, config.tail_settings(), live, shutdown).await;
    let served = server.await;
    tailed?;
    served??;
    if let Some(metrics) = metrics {
        metrics.await??;
    }
    Ok(())
}

/// The HTTPS settings, when `serve.tls_certificate` and `serve.tls_key` are set (both or
/// neither).
fn tls_config(config: &Config) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    match (&config.serve.tls_certificate, &config.serve.tls_key) {
        (None, None) => Ok(None),
        (Some(certificate), Some(key)) => {
            Ok(Some(brewline_serve::tls::server_config(certificate, key)?))
        }
        _ => anyhow::bail!(
            "serve.tls_certificate and serve.tls_key go together: set both to serve over HTTPS, or neither"
        ),
    }
}
