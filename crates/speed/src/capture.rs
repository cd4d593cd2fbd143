//! Change capture: committed row changes of the source, from a change feed, into one topic per
//! table in Debezium's format, keyed by order id; a delete is followed by a tombstone.
//!
//! The position is saved only after every event before it is acknowledged by the log, and only
//! at the end of a transaction, so a restart resumes where it left off: nothing is lost, and
//! what is sent twice after a crash is sent identically.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brewline_core::debezium::{encode, ChangeEvent, Op, TableSchema};
use brewline_ports::{ChangeFeed, CheckpointStore, Producer, Record, Result, RowChange};

use crate::stats::Stats;
use crate::{with_retries, StopWhen};

/// How capture names and shapes its events.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Logical server name: `source.name` of every event and the first part of its topic.
    pub topic_prefix: String,
    /// Write Kafka Connect's `schema` part with each event.
    pub with_schema: bool,
    /// Name of the stored position.
    pub checkpoint: String,
    /// Row changes read per batch.
    pub batch: usize,
    /// The captured tables, each with the column that keys its events.
    pub tables: Vec<(TableSchema, String)>,
}

struct Table {
    topic: String,
    key_column: String,
    /// The columns events are written with, and their Kafka Connect schema when events carry
    /// one; replaced when the feed reports other columns (after `ALTER TABLE`).
    shape: Mutex<Shape>,
}

#[derive(Clone)]
struct Shape {
    schema: Arc<TableSchema>,
    schema_json: Option<Arc<str>>,
}

impl Shape {
    fn new(schema: Arc<TableSchema>, with_schema: bool) -> Shape {
        let schema_json = with_schema.then(|| Arc::from(schema.envelope_schema_json()));
        Shape {
            schema,
            schema_json,
        }
    }
}

/// Turns row changes into Debezium events and sends them.
pub struct Capture {
    config: CaptureConfig,
    tables: HashMap<String, Table>,
    stats: Arc<Stats>,
}

impl Capture {
    pub fn new(config: CaptureConfig, stats: Arc<Stats>) -> Capture {
        let tables = config
            .tables
            .iter()
            .map(|(schema, key)| {
                let topic = brewline_core::names::cdc_topic(
                    &config.topic_prefix,
                    &schema.db,
                    &schema.table,
                );
                let table = Table {
                    topic,
                    key_column: key.clone(),
                    shape: Mutex::new(Shape::new(Arc::new(schema.clone()), config.with_schema)),
                };
                (schema.table.clone(), table)
            })
            .collect();
        Capture {
            config,
            tables,
            stats,
        }
    }

    /// The topics this capture writes to.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<_> = self.tables.values().map(|t| t.topic.clone()).collect();
        t.sort();
        t
    }

    /// The event (and tombstone, for a delete) of one row change, with its topic.
    fn events(&self, change: &RowChange) -> Option<(&str, Vec<Record>)> {
        let table = self.tables.get(&change.table)?;
        let shape = {
            let mut shape = table.shape.lock().ok()?;
            if let Some(schema) = &change.schema {
                if !Arc::ptr_eq(schema, &shape.schema) && **schema != *shape.schema {
                    tracing::info!(table = %change.table, columns = schema.columns.len(), "the table's columns changed");
                    *shape = Shape::new(schema.clone(), self.config.with_schema);
                }
            }
            shape.clone()
        };
        let now_us = brewline_ports::now_us();
        let mut source = change.source.clone();
        source.name = self.config.topic_prefix.clone();
        source.version = concat!("brewline-", env!("CARGO_PKG_VERSION")).into();
        let event = ChangeEvent {
            op: change.op,
            before: change.before.as_ref().map(|r| shape.schema.normalize(r)),
            after: change.after.as_ref().map(|r| shape.schema.normalize(r)),
            source,
            ts_ms: Some(now_us / 1000),
            ts_us: Some(now_us),
        };
        let key = event
            .row()
            .and_then(|r| r.get(&table.key_column))
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone().into_bytes(),
                other => other.to_string().into_bytes(),
            });
        let value = encode(&event, shape.schema_json.as_deref());
        let mut records = vec![Record {
            key: key.clone(),
            value: Some(value),
            headers: Vec::new(),
        }];
        if change.op == Op::Delete {
            records.push(Record {
                key,
                value: None,
                headers: Vec::new(),
            });
        }
        Some((&table.topic, records))
    }

    /// Reads one batch from the feed, sends it, then saves the position. Returns the number of
    /// row changes handled.
    pub async fn step(
        &self,
        feed: &mut dyn ChangeFeed,
        producer: &dyn Producer,
        checkpoints: &dyn CheckpointStore,
        wait: Duration,
    ) -> Result<usize> {
        let changes = feed.next(self.config.batch, wait).await?;
        if let Some((read, total)) = feed.snapshot_progress() {
            self.stats.snapshot_rows.store(read, Ordering::Relaxed);
            self.stats.snapshot_total.store(total, Ordering::Relaxed);
        }
        let Some(last) = changes.last() else {
            self.stats.capture_lag_ms.store(0, Ordering::Relaxed);
            return Ok(0);
        };
        let lag_ms = brewline_ports::now_ms() - last.source.ts_ms;
        self.stats
            .capture_lag_ms
            .store(lag_ms.max(0) as u64, Ordering::Relaxed);
        let mut per_topic: Vec<(String, Vec<Record>)> = Vec::new();
        for change in &changes {
            if let Some((topic, records)) = self.events(change) {
                match per_topic.iter_mut().find(|(t, _)| t == topic) {
                    Some((_, batch)) => batch.extend(records),
                    None => per_topic.push((topic.to_string(), records)),
                }
            }
        }
        for (topic, records) in per_topic {
            let n = records.len() as u64;
            with_retries("sending change events", || {
                producer.send(&topic, records.clone())
            })
            .await?;
            self.stats.events_out.add(&topic, n);
        }
        if let Some(position) = changes.iter().rev().find_map(|c| c.resume_after.as_deref()) {
            with_retries("saving the capture position", || {
                checkpoints.save(&self.config.checkpoint, position)
            })
            .await?;
        }
        Stats::add(&self.stats.captured, changes.len() as u64);
        for change in &changes {
            self.stats
                .captured_rows
                .add(&change.table, change.op.code(), 1);
        }
        Ok(changes.len())
    }

    /// Captures until told to stop; with `stop.drained`, stops once the feed is read to its end.
    pub async fn run(
        &self,
        feed: &mut dyn ChangeFeed,
        producer: &dyn Producer,
        checkpoints: &dyn CheckpointStore,
        stop: StopWhen,
    ) -> Result<()> {
        loop {
            if stop.shutting_down() {
                return Ok(());
            }
            let upstream_done = stop.upstream_done();
            let n = self
                .step(feed, producer, checkpoints, Duration::from_millis(100))
                .await?;
            if n == 0 && upstream_done && feed.behind().await? == 0 {
                return Ok(());
            }
        }
    }
}
