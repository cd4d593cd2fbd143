//! The speed layer wired to the embedded engines of one data directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use brewline_core::debezium::TableSchema;
use brewline_core::names;
use brewline_core::suggestion::{AffinityStrategy, Suggester};
use brewline_core::ReferenceData;
use brewline_embedded::DataDir;
use brewline_ports::{Capturable, CheckpointStore, Counters, EventLog, SourceDb, Subscription};
use brewline_speed::capture::{Capture, CaptureSettings, Output};
use brewline_speed::recommender::{Engines, Recommender};
use brewline_speed::stats::Stats;
use brewline_speed::{lookup_cache, StopWhen};

use crate::config::Config;
use crate::tills;

pub struct EmbeddedPipeline {
    pub dir: DataDir,
    pub config: Config,
    pub stats: Arc<Stats>,
}

impl EmbeddedPipeline {
    pub fn open(config: Config, data_dir: &Path) -> anyhow::Result<EmbeddedPipeline> {
        let ttl = Duration::from_secs(config.recommender.order_ttl_secs);
        let dir = DataDir::open(data_dir, ttl)
            .with_context(|| format!("opening data dir {}", data_dir.display()))?;
        Ok(EmbeddedPipeline {
            dir,
            config,
            stats: Arc::new(Stats::default()),
        })
    }

    /// Reference data in the source, lookups published, topics created: idempotent.
    pub async fn prepare(&self) -> anyhow::Result<()> {
        let reference = ReferenceData::bundled().context("reading the bundled reference data")?;
        self.dir.source.seed_reference(&reference).await?;
        lookup_cache::refresh(
            &self.dir.source,
            &self.dir.state,
            &self.config.recommender.eligible_bank,
        )
        .await?;
        for (topic, partitions) in crate::topics::all(&self.config) {
            self.dir.log.create_topic(&topic, partitions).await?;
        }
        Ok(())
    }

    /// Writes `count` orders of `seed` into the embedded source, `eligible_share` of them
    /// eligible for a suggestion when given (see [`tills::write_orders`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn write_orders(
        &self,
        seed: u64,
        count: u64,
        rate: Option<f64>,
        eligible_share: Option<f64>,
        shutdown: &tokio::sync::watch::Receiver<bool>,
        progress: impl Fn(u64),
    ) -> anyhow::Result<()> {
        let bank = self.config.recommender.eligible_bank.as_str();
        tills::write_orders(
            &self.dir.source,
            seed,
            count,
            rate,
            eligible_share.map(|share| (share, bank)),
            shutdown,
            progress,
        )
        .await?;
        Ok(())
    }

    pub fn capture(&self, schemas: bool) -> Capture {
        let c = &self.config.capture;
        let prefix = &c.topic_prefix;
        let database = &self.config.mysql.database;
        Capture::new(
            CaptureSettings {
                topic_prefix: prefix.clone(),
                with_schema: schemas,
                // The embedded source stands for the shop's MySQL.
                connector: "mysql".into(),
                checkpoint: names::capture_checkpoint(prefix, database),
                batch: c.batch,
                tables: vec![
                    (TableSchema::orders(prefix, database), "id".into()),
                    (
                        TableSchema::order_details(prefix, database),
                        "order_id".into(),
                    ),
                ],
                dead_letter_topic: self.config.topics.dead_letters.clone(),
            },
            self.stats.clone(),
        )
    }

    /// Captures from the stored position until `stop`, into the embedded log.
    pub async fn run_capture(&self, capture: &Capture, stop: StopWhen) -> anyhow::Result<()> {
        let producer = self.dir.log.producer()?;
        self.run_capture_into(capture, producer.as_ref(), stop)
            .await
    }

    /// Captures from the stored position until `stop`, into `producer`'s log.
    pub async fn run_capture_into(
        &self,
        capture: &Capture,
        producer: &dyn brewline_ports::Producer,
        stop: StopWhen,
    ) -> anyhow::Result<()> {
        let mut position = self.dir.log.load(capture.checkpoint()).await?;
        if position.is_none() {
            // Where data dirs made before the capture's name was `cdc.{prefix}.{db}` keep it.
            let legacy = format!("capture.{}", self.config.mysql.database);
            position = self.dir.log.load(&legacy).await?;
        }
        let mut feed = self.dir.source.follow(position).await?;
        capture
            .run(feed.as_mut(), Output::Sent(producer), &self.dir.log, stop)
            .await
            .context("capture failed")
    }

    /// Recommends until `stop`, as one worker of the configured group.
    pub async fn run_recommender(&self, seed: u64, stop: StopWhen) -> anyhow::Result<()> {
        let r = &self.config.recommender;
        let t = &self.config.topics;
        let config = self.config.recommender_settings();
        let suggester = Suggester::new(seed, Box::new(AffinityStrategy));
        let mut recommender = Recommender::new(config, suggester, self.stats.clone());
        let mut consumer = self
            .dir
            .log
            .consumer(Subscription {
                topics: vec![t.orders.clone(), t.order_details.clone()],
                group: Some(r.group.clone()),
                from: Vec::new(),
            })
            .await?;
        let producer = self.dir.log.producer()?;
        let mut engines = Engines {
            consumer: consumer.as_mut(),
            producer: producer.as_ref(),
            orders: &self.dir.state,
            lookups: &self.dir.state,
            counters: &self.dir.state,
        };
        recommender
            .run(&mut engines, stop)
            .await
            .context("recommender failed")
    }

    /// Totals of the data directory, across runs.
    pub async fn totals(&self) -> anyhow::Result<Totals> {
        let source = self.dir.source.counts().await?;
        let counters = self.dir.state.get().await?;
        let get = |k: &str| counters.get(k).copied().unwrap_or(0);
        use brewline_speed::recommender::counter;
        Ok(Totals {
            orders: source.orders,
            order_lines: source.order_lines,
            change_events: self.dir.log.count(&self.config.topics.orders).await?
                + self
                    .dir
                    .log
                    .count(&self.config.topics.order_details)
                    .await?,
            completed: get(counter::COMPLETED),
            eligible: get(counter::ELIGIBLE),
            suggestions: get(counter::SUGGESTIONS),
            suggestion_records: self.dir.log.count(&self.config.topics.suggestions).await?,
            dead_letters: get(counter::DEAD_LETTERS),
            expired_incomplete: get(counter::EXPIRED_INCOMPLETE),
        })
    }
}

/// What a data directory holds, across runs.
#[derive(Debug, Clone, Copy)]
pub struct Totals {
    pub orders: u64,
    pub order_lines: u64,
    /// Records in the two CDC topics (tombstones included).
    pub change_events: u64,
    pub completed: u64,
    pub eligible: u64,
    pub suggestions: u64,
    /// Records in the suggestions topic (more than `suggestions` only after a crash replay).
    pub suggestion_records: u64,
    pub dead_letters: u64,
    pub expired_incomplete: u64,
}
