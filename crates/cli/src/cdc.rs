//! `brewline cdc`: the MySQL/MariaDB row binlog into Debezium-format topics on Kafka.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use brewline_kafka::{KafkaLog, KafkaProducer};
use brewline_mysql::{MysqlCapture, MysqlCheckpoints};
use brewline_ports::{Capturable, CheckpointStore, EventLog};
use brewline_speed::capture::{Capture, CaptureSettings};
use brewline_speed::stats::Stats;
use brewline_speed::{Backoff, StopWhen};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::args::CdcArgs;
use crate::config::Config;
use crate::{metrics_server, shutdown};

pub async fn run(mut config: Config, args: CdcArgs) -> anyhow::Result<ExitCode> {
    args.mysql.apply(&mut config);
    args.kafka.apply(&mut config);
    if let Some(id) = args.server_id {
        config.cdc.server_id = id;
    }
    if let Some(tables) = args.tables {
        config.cdc.tables = tables;
    }
    if let Some(schemas) = args.schemas {
        config.capture.schemas = schemas;
    }
    let stats = Arc::new(Stats::default());
    metrics_server::start(args.metrics.metrics_addr, stats.clone()).await?;
    let (_stop, stopped) = shutdown::on_signal();
    let stop = if args.until_caught_up {
        caught_up(stopped.shutdown)
    } else {
        stopped
    };
    let progress = snapshot_progress(stats.clone());
    let position = capture(&config, stats.clone(), stop).await?;
    progress.abort();
    println!(
        "captured {} row changes; position {}",
        Stats::get(&stats.captured),
        position.unwrap_or_else(|| "none".into())
    );
    Ok(ExitCode::SUCCESS)
}

/// Stops once the binlog is read to its end, or on `shutdown`.
pub fn caught_up(shutdown: watch::Receiver<bool>) -> StopWhen {
    let (done, drained) = watch::channel(true);
    drop(done);
    StopWhen { drained, shutdown }
}

/// Captures the binlog of `config.mysql` into Kafka until `stop`; returns the stored
/// position. A failure a retry may mend (the server restarted, the connection dropped) starts
/// the feed again from the stored position; anything else ends it.
pub async fn capture(
    config: &Config,
    stats: Arc<Stats>,
    stop: StopWhen,
) -> anyhow::Result<Option<String>> {
    let prefix = config.capture.topic_prefix.clone();
    let source = MysqlCapture::new(&config.mysql, &config.cdc, &prefix)?;
    source.check_server().await?;
    let connector = source.connector().await?;
    let tables = source.tables().await?;
    let checkpoint = brewline_core::names::capture_checkpoint(&prefix, &config.mysql.database);
    let capture = Capture::new(
        CaptureSettings {
            topic_prefix: prefix,
            with_schema: config.capture.schemas,
            connector: connector.into(),
            checkpoint: checkpoint.clone(),
            batch: config.capture.batch,
            tables,
        },
        stats,
    );
    let log = KafkaLog::new(config.kafka.clone());
    for topic in capture.topics() {
        log.create_topic(&topic, config.topics.partitions)
            .await
            .with_context(|| format!("creating topic {topic}"))?;
    }
    let producer = KafkaProducer::new(&config.kafka)?;
    let checkpoints = MysqlCheckpoints::connect(&config.mysql, &config.cdc.offsets_database)
        .await
        .context("opening the capture's position table")?;
    let mut backoff = Backoff::new("capturing the binlog");
    loop {
        let position = checkpoints.load(&checkpoint).await?;
        let result = async {
            let mut feed = source.follow(position).await?;
            capture
                .run(feed.as_mut(), &producer, &checkpoints, stop.clone())
                .await
        }
        .await;
        match backoff.retry(result).await {
            Some(done) => {
                done?;
                break;
            }
            None => continue,
        }
    }
    Ok(checkpoints.load(&checkpoint).await?)
}

/// A progress bar on stderr while an initial snapshot is read.
fn snapshot_progress(stats: Arc<Stats>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut bar: Option<ProgressBar> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (read, total) = (
                stats.snapshot_rows.load(Ordering::Relaxed),
                stats.snapshot_total.load(Ordering::Relaxed),
            );
            if total == 0 {
                continue;
            }
            let b = bar.get_or_insert_with(|| {
                let b = ProgressBar::new(total);
                if let Ok(style) = ProgressStyle::with_template(
                    "snapshot {bar:40} {pos}/{len} rows ({per_sec}, {eta} left)",
                ) {
                    b.set_style(style);
                }
                b
            });
            b.set_position(read);
            if read >= total {
                b.finish();
                return;
            }
        }
    })
}
