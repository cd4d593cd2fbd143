//! `brewline cdc`: the MySQL/MariaDB row binlog into Debezium-format topics on Kafka.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use brewline_kafka::{KafkaLog, KafkaPositions, KafkaProducer, TransactionsMode};
use brewline_mysql::capture::compare_positions;
use brewline_mysql::{MysqlCapture, MysqlCheckpoints, OnLostPosition};
use brewline_ports::{Capturable, CheckpointStore, PortError};
use brewline_speed::capture::{Capture, CaptureSettings, Output};
use brewline_speed::stats::Stats;
use brewline_speed::{with_retries, Backoff, StopWhen};
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
    let position = capture(&config, stats.clone(), stop, args.resnapshot).await?;
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
/// position. A failure a retry may mend (the server restarting, the connection dropped, at
/// start or later) is retried with backoff, the feed starting again from the stored position;
/// anything else ends it. With `resnapshot`, a new snapshot is taken first, whatever position
/// is stored.
pub async fn capture(
    config: &Config,
    stats: Arc<Stats>,
    stop: StopWhen,
    resnapshot: bool,
) -> anyhow::Result<Option<String>> {
    let prefix = config.capture.topic_prefix.clone();
    let source = MysqlCapture::new(&config.mysql, &config.cdc, &prefix)?;
    let setup = with_retries("connecting to the source database", || async {
        source.check_server().await?;
        Ok((source.connector().await?, source.tables().await?))
    });
    let Some(setup) = unless_stopped(&stop, setup).await else {
        return Ok(None);
    };
    let (connector, tables) = setup?;
    let checkpoint = brewline_core::names::capture_checkpoint(&prefix, &config.mysql.database);
    let capture = Capture::new(
        CaptureSettings {
            topic_prefix: prefix,
            with_schema: config.capture.schemas,
            connector: connector.into(),
            checkpoint: checkpoint.clone(),
            batch: config.capture.batch,
            tables,
            dead_letter_topic: config.topics.dead_letters.clone(),
        },
        stats,
    );
    let log = KafkaLog::new(config.kafka.clone());
    for topic in capture.topics() {
        crate::topics::create_one(&log, config, &topic, config.topics.partitions).await?;
    }
    crate::topics::create_one(&log, config, &config.topics.dead_letters, 1).await?;
    let producer = KafkaProducer::new(&config.kafka)?;
    let table = with_retries("opening the capture's position table", || {
        MysqlCheckpoints::connect(&config.mysql, &config.cdc.offsets_database)
    });
    let Some(table) = unless_stopped(&stop, table).await else {
        return Ok(None);
    };
    let table = table.context("opening the capture's position table")?;
    let Some(committed) =
        unless_stopped(&stop, committed_positions(config, &log, &checkpoint)).await
    else {
        return Ok(None);
    };
    let committed = committed?;
    let checkpoints = Positions {
        committed: committed.as_ref(),
        table: &table,
    };
    let output = || match &committed {
        Some(p) => Output::Committed {
            transactions: p.transactions(),
            positions: p.topic().to_string(),
            max_held: config.capture.max_transaction_changes,
        },
        None => Output::Sent(&producer),
    };
    let mut start = Start {
        source: &source,
        on_lost: config.cdc.on_lost_position,
        snapshot_over: None,
    };
    if resnapshot {
        start.snapshot_over = Some(checkpoints.load(&checkpoint).await?);
    }
    let mut backoff = Backoff::new("capturing the binlog");
    loop {
        let result = async {
            let stored = checkpoints.load(&checkpoint).await?;
            let position = start.position(stored).await?;
            let mut feed = source.follow(position).await?;
            capture
                .run(feed.as_mut(), output(), &checkpoints, stop.clone())
                .await
        }
        .await;
        match backoff.retry(result).await {
            Some(done) => {
                done?;
                break;
            }
            None if *stop.shutdown.borrow() => return Ok(None),
            None => continue,
        }
    }
    Ok(checkpoints.load(&checkpoint).await?)
}

/// The capture's positions committed with its events in Kafka transactions, as
/// `kafka.transactions` says: on, off, or where the cluster allows them.
async fn committed_positions(
    config: &Config,
    log: &KafkaLog,
    checkpoint: &str,
) -> anyhow::Result<Option<KafkaPositions>> {
    if config.kafka.transactions == TransactionsMode::Off {
        return Ok(None);
    }
    let topic = &config.topics.capture_positions;
    let id = format!("brewline-{checkpoint}");
    let opened = with_retries("opening the capture's positions", || async {
        crate::topics::create_one(log, config, topic, 1)
            .await
            .map_err(|e| PortError::fatal("kafka", format!("{e:#}")))?;
        KafkaPositions::open(&config.kafka, topic, &id).await
    })
    .await;
    match (opened, config.kafka.transactions) {
        (Ok(positions), _) => {
            tracing::info!(transactional_id = %id, positions = %topic, "events and the capture's position written in Kafka transactions");
            Ok(Some(positions))
        }
        (Err(e), TransactionsMode::On) => Err(e).context("kafka.transactions is \"on\""),
        (Err(e), _) => {
            tracing::warn!(error = %e, "no Kafka transactions: captured events are sent at least once (a kill may repeat some, identically); set kafka.transactions = \"on\" to require them, \"off\" to not try");
            Ok(None)
        }
    }
}

/// Where the capture's position is read and kept: the one committed with the events (Kafka
/// transactions) where there is one, else the table's; saved in the table (with
/// transactions, a copy, for people to read and for a later run without them).
struct Positions<'a> {
    committed: Option<&'a KafkaPositions>,
    table: &'a MysqlCheckpoints,
}

#[async_trait::async_trait]
impl CheckpointStore for Positions<'_> {
    /// The committed position, unless the table's is further on (a run without transactions
    /// went on from there since).
    async fn load(&self, name: &str) -> Result<Option<String>, PortError> {
        let table = self.table.load(name).await?;
        let Some(committed) = self.committed else {
            return Ok(table);
        };
        let Some(position) = committed.load(name).await? else {
            return Ok(table);
        };
        match &table {
            Some(t) if compare_positions(t, &position) == Some(std::cmp::Ordering::Greater) => {
                tracing::info!(committed = %position, table = %t, "the position table is further on than the committed position (a run without transactions went on): going on from the table's");
                Ok(table)
            }
            _ => Ok(Some(position)),
        }
    }

    async fn save(&self, name: &str, value: &str) -> Result<(), PortError> {
        self.table.save(name, value).await
    }
}

/// `work`, unless told to stop before it is done (`None`).
async fn unless_stopped<T>(
    stop: &StopWhen,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let mut shutdown = stop.shutdown.clone();
    let stopped = async move {
        if shutdown.wait_for(|stop| *stop).await.is_err() {
            // Nobody can tell it to stop any more.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        done = work => Some(done),
        () = stopped => None,
    }
}

/// Where a capture (re)starts.
struct Start<'a> {
    source: &'a MysqlCapture,
    on_lost: OnLostPosition,
    /// A snapshot is wanted until a position other than this one (the one stored when it was
    /// asked for) is stored: a snapshot cut short by a retry is taken again.
    snapshot_over: Option<Option<String>>,
}

impl Start<'_> {
    /// The position to follow from (`None`: take a snapshot), given the one `stored`.
    async fn position(&mut self, stored: Option<String>) -> Result<Option<String>, PortError> {
        if let Some(over) = &self.snapshot_over {
            if *over == stored {
                tracing::info!(stored = ?stored, "taking a new snapshot");
                return Ok(None);
            }
            self.snapshot_over = None;
        }
        let Some(position) = stored else {
            return Ok(None);
        };
        let Some(why) = self.source.lost(&position).await? else {
            return Ok(Some(position));
        };
        match self.on_lost {
            OnLostPosition::Fail => Err(PortError::fatal(
                "mysql",
                format!("{why}: take a new snapshot with `brewline cdc --resnapshot`, or set cdc.on_lost_position = \"snapshot\" to take one whenever this happens"),
            )),
            OnLostPosition::Snapshot => {
                tracing::warn!("{why}: taking a new snapshot (cdc.on_lost_position = \"snapshot\")");
                self.snapshot_over = Some(Some(position));
                Ok(None)
            }
        }
    }
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
