//! Change capture: committed row changes of the source, from a change feed, into one topic per
//! table in Debezium's format, keyed by order id; a delete is followed by a tombstone.
//!
//! The position is saved only after every event before it is acknowledged by the log, and only
//! at the end of a transaction, so a restart resumes where it left off: nothing is lost, and
//! what is sent twice after a crash is sent identically. Where the log has transactions the
//! events and the position after them are committed as one ([`Output::Committed`]), and
//! nothing is sent twice.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brewline_core::debezium::{encode, ChangeEvent, Op, TableSchema};
use brewline_ports::{
    position_record, ChangeFeed, CheckpointStore, PortError, Producer, Record, Result, RowChange,
    Transactions,
};

use crate::dead_letter::{refused_letter, retain_accepted, send_or_dead_letter, SOURCE_HEADER};
use crate::stats::Stats;
use crate::{with_retries, Backoff, StopWhen};

/// How often, at most, the position is saved while changes keep coming.
pub const SAVE_EVERY: Duration = Duration::from_millis(250);

/// How many times in a row the cluster may abort the transaction of the same changes before
/// the capture stops, saying why (their sending takes longer than the transaction timeout,
/// and would be aborted for ever).
pub const ABORTS_IN_A_ROW: u32 = 3;

/// Where captured events go.
pub enum Output<'a> {
    /// Sent, and the position saved once they are acknowledged: a crash repeats, identically,
    /// what was sent after the last save.
    Sent(&'a dyn Producer),
    /// Committed in transactions, each with the position after its events (a record keyed by
    /// the capture's name, [`position_record`]) in the topic `positions`, where a restart
    /// reads where to resume: readers of committed records see every change once.
    Committed {
        transactions: &'a dyn Transactions,
        positions: String,
        /// The most changes of one source transaction held to be committed whole; past it the
        /// capture stops with an error that says what to do.
        max_held: usize,
    },
}

/// What a delivery did.
struct Delivered {
    /// The position after the changes delivered, when they end a transaction of the source.
    position: Option<String>,
    /// The changes it held back, to deliver with the next.
    held: Vec<RowChange>,
}

/// Whether a transaction may end after `change`: the source's transaction ends there, or it is
/// a row of a snapshot (whose rows a snapshot taken again repeats anyway; a change of the
/// binlog says `snapshot: "false"`).
fn ends_a_commit(change: &RowChange) -> bool {
    change.resume_after.is_some()
        || matches!(change.source.snapshot.as_deref(), Some(s) if s != "false")
}

/// Record headers.
type Headers = Vec<(String, Vec<u8>)>;

/// Where a captured change was read, in the headers of the dead letter of its event.
fn origin(change: &RowChange) -> Headers {
    let s = &change.source;
    let at = format!("{}:{} row {}", s.file, s.pos, s.row);
    vec![(SOURCE_HEADER.to_string(), at.into_bytes())]
}

/// How capture names and shapes its events.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// Logical server name: `source.name` of every event and the first part of its topic.
    pub topic_prefix: String,
    /// Write Kafka Connect's `schema` part with each event.
    pub with_schema: bool,
    /// The connector the events say they come from (`source.connector`, and the name of the
    /// source's schema): `mysql` or `mariadb`, as Debezium names its connectors.
    pub connector: String,
    /// Name of the stored position.
    pub checkpoint: String,
    /// Row changes read per batch.
    pub batch: usize,
    /// The captured tables, each with the column that keys its events.
    pub tables: Vec<(TableSchema, String)>,
    /// Where an event the log refuses (larger than the topic takes) goes, cut short, with its
    /// binlog position.
    pub dead_letter_topic: String,
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
    fn new(schema: Arc<TableSchema>, config: &CaptureSettings) -> Shape {
        let schema_json = config
            .with_schema
            .then(|| Arc::from(schema.envelope_schema_json(&config.connector)));
        Shape {
            schema,
            schema_json,
        }
    }
}

/// Turns row changes into Debezium events and sends them.
pub struct Capture {
    config: CaptureSettings,
    tables: HashMap<String, Table>,
    stats: Arc<Stats>,
    /// Where the changes of the last transaction the cluster aborted begin, and how many times
    /// in a row it was aborted.
    aborted: Mutex<Option<(String, u32)>>,
}

impl Capture {
    pub fn new(config: CaptureSettings, stats: Arc<Stats>) -> Capture {
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
                    shape: Mutex::new(Shape::new(Arc::new(schema.clone()), &config)),
                };
                (schema.table.clone(), table)
            })
            .collect();
        Capture {
            config,
            tables,
            stats,
            aborted: Mutex::new(None),
        }
    }

    /// The name its position is stored under.
    pub fn checkpoint(&self) -> &str {
        &self.config.checkpoint
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
                    *shape = Shape::new(schema.clone(), &self.config);
                }
            }
            shape.clone()
        };
        let now_us = brewline_ports::now_us();
        let mut source = change.source.clone();
        source.name = self.config.topic_prefix.clone();
        source.connector = self.config.connector.clone();
        // The captured database as configured (the embedded source knows no other name).
        source.db.clone_from(&shape.schema.db);
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

    /// Reads up to one batch from the feed (waiting at most `wait` for the first change).
    async fn read(&self, feed: &mut dyn ChangeFeed, wait: Duration) -> Result<Vec<RowChange>> {
        let changes = feed.next(self.config.batch, wait).await?;
        if let Some((read, total)) = feed.snapshot_progress() {
            self.stats.snapshot_rows.store(read, Ordering::Relaxed);
            self.stats.snapshot_total.store(total, Ordering::Relaxed);
        }
        let lag_ms = changes
            .last()
            .map_or(0, |last| brewline_ports::now_ms() - last.source.ts_ms);
        self.stats
            .capture_lag_ms
            .store(lag_ms.max(0) as u64, Ordering::Relaxed);
        Ok(changes)
    }

    /// The events of `changes`, per topic, each with the change it came from.
    fn outgoing<'c>(
        &self,
        changes: &'c [RowChange],
    ) -> Vec<(String, Vec<Record>, Vec<&'c RowChange>)> {
        let mut per_topic: Vec<(String, Vec<Record>, Vec<&RowChange>)> = Vec::new();
        for change in changes {
            if let Some((topic, records)) = self.events(change) {
                let from = std::iter::repeat_n(change, records.len());
                match per_topic.iter_mut().find(|(t, _, _)| t == topic) {
                    Some((_, batch, origins)) => {
                        batch.extend(records);
                        origins.extend(from);
                    }
                    None => per_topic.push((topic.to_string(), records, from.collect())),
                }
            }
        }
        per_topic
    }

    /// Sends `changes` and hands back what is to be saved (a crash repeats, identically, what
    /// was sent after the last save); or, in transactions, commits those up to the last that
    /// may end one with the position after them, and hands back the rest, a transaction of
    /// the source not read whole yet, to go with the next.
    async fn deliver(&self, mut changes: Vec<RowChange>, output: &Output<'_>) -> Result<Delivered> {
        match output {
            Output::Sent(producer) => {
                self.send(&changes, *producer).await?;
                self.count(&changes);
                Ok(Delivered {
                    position: changes.iter().rev().find_map(|c| c.resume_after.clone()),
                    held: Vec::new(),
                })
            }
            Output::Committed {
                transactions,
                positions,
                max_held,
            } => {
                let cut = changes.iter().rposition(ends_a_commit).map_or(0, |i| i + 1);
                let held = changes.split_off(cut);
                if held.len() > *max_held {
                    let at = held.first().map_or_else(String::new, |c| {
                        format!(" (from binlog {}:{})", c.source.file, c.source.pos)
                    });
                    return Err(PortError::fatal(
                        "capture",
                        format!("a source transaction of more than {max_held} row changes{at} is too large to commit as one Kafka transaction: raise capture.max_transaction_changes (about 1 KiB of memory each) and the producer's transaction.timeout.ms, or set kafka.transactions = \"off\" (it is then sent in pieces, and a kill repeats them)"),
                    ));
                }
                let position = changes.last().and_then(|c| c.resume_after.clone());
                if !changes.is_empty() {
                    let at = position.as_deref().map(|p| (positions.as_str(), p));
                    self.commit(&changes, at, *transactions).await?;
                    self.count(&changes);
                }
                Ok(Delivered { position, held })
            }
        }
    }

    /// Sends the events of `changes` (every topic at once) and returns once all are
    /// acknowledged; those the log refuses are dead-lettered.
    async fn send(&self, changes: &[RowChange], producer: &dyn Producer) -> Result<()> {
        let per_topic = self.outgoing(changes);
        let dead_letters = &self.config.dead_letter_topic;
        let sends = per_topic
            .iter()
            .map(|(topic, records, origins)| async move {
                let origin = |i: usize| origins.get(i).map(|c| origin(c)).unwrap_or_default();
                let dead =
                    send_or_dead_letter(producer, topic, records, dead_letters, origin).await?;
                self.stats
                    .events_out
                    .add(topic, records.len() as u64 - dead);
                self.stats.events_out.add(dead_letters, dead);
                Stats::add(&self.stats.dead_letters, dead);
                Ok::<_, brewline_ports::PortError>(())
            });
        futures_util::future::try_join_all(sends).await?;
        Ok(())
    }

    /// Commits the events of `changes` and, `position` = (topic, position), the position after
    /// them, in one transaction; records the log refuses leave it and their dead letters join
    /// it. A transaction that failed (nothing of it visible) is made again while a retry may
    /// mend it; one the cluster aborted ends the capture's run, which resumes from the
    /// committed position (a stuck commit may have gone through after all).
    async fn commit(
        &self,
        changes: &[RowChange],
        position: Option<(&str, &str)>,
        transactions: &dyn Transactions,
    ) -> Result<()> {
        let mut groups: Vec<(String, Vec<(Record, Headers)>)> = self
            .outgoing(changes)
            .into_iter()
            .map(|(topic, records, origins)| {
                let from = origins.into_iter().map(origin);
                (topic, records.into_iter().zip(from).collect())
            })
            .collect();
        let dead_letters = self.config.dead_letter_topic.clone();
        let mark = position.map(|(_, p)| [position_record(&self.config.checkpoint, p)]);
        let mut letters = Vec::new();
        let mut backoff = Backoff::new("committing captured changes");
        loop {
            let records: Vec<Vec<Record>> = groups
                .iter()
                .map(|(_, rs)| rs.iter().map(|(r, _)| r.clone()).collect())
                .collect();
            let mut output: Vec<(&str, &[Record])> = groups
                .iter()
                .zip(&records)
                .map(|((topic, _), rs)| (topic.as_str(), rs.as_slice()))
                .collect();
            output.push((dead_letters.as_str(), letters.as_slice()));
            if let (Some((topic, _)), Some(mark)) = (position, &mark) {
                output.push((topic, mark.as_slice()));
            }
            let err = match transactions.commit(&output, &[]).await {
                Err(err) if !err.refused.is_empty() => err,
                Err(err) if err.aborted => return Err(self.after_abort(changes, err)),
                other => match backoff.retry(other).await {
                    Some(done) => break done?,
                    None => continue,
                },
            };
            // Numbered through every topic of the output, the letters' after the events'.
            let events: usize = groups.iter().map(|(_, rs)| rs.len()).sum();
            if let Some(r) = err.refused.iter().find(|r| r.index >= events) {
                return Err(PortError::fatal(
                    err.engine,
                    format!("{dead_letters} (or {}) refused a record too: {}; raise the topic's max.message.bytes", position.map_or("", |(t, _)| t), r.reason),
                ));
            }
            letters.extend(retain_accepted(
                &mut groups,
                &err.refused,
                |topic, (record, at), why| refused_letter(topic, &record, why, at),
            ));
        }
        if let Ok(mut aborted) = self.aborted.lock() {
            *aborted = None;
        }
        for (topic, records) in &groups {
            self.stats.events_out.add(topic, records.len() as u64);
        }
        self.stats
            .events_out
            .add(&dead_letters, letters.len() as u64);
        Stats::add(&self.stats.dead_letters, letters.len() as u64);
        Ok(())
    }

    /// The error a transaction of `changes` the cluster aborted ends the run with: retryable
    /// (the capture resumes from its committed position), unless the same changes were
    /// aborted [`ABORTS_IN_A_ROW`] times, which a retry will not mend.
    fn after_abort(&self, changes: &[RowChange], err: PortError) -> PortError {
        let from = changes.first().map_or_else(String::new, |c| {
            format!("{}:{} row {}", c.source.file, c.source.pos, c.source.row)
        });
        let times = match self.aborted.lock() {
            Ok(mut aborted) => {
                let times = match aborted.as_ref() {
                    Some((at, n)) if *at == from => n + 1,
                    _ => 1,
                };
                *aborted = Some((from.clone(), times));
                times
            }
            Err(_) => 1,
        };
        if times >= ABORTS_IN_A_ROW {
            return PortError::fatal(
                err.engine,
                format!("{err}; the cluster aborted the transaction of the {} changes from binlog {from} {times} times in a row: their sending takes longer than the producer's transaction.timeout.ms. Raise it (kafka.producer, up to the brokers' transaction.max.timeout.ms), lower capture.batch, or set kafka.transactions = \"off\"", changes.len()),
            );
        }
        PortError::retryable(
            err.engine,
            format!("{err}; the capture resumes from its committed position"),
        )
    }

    /// Counts `changes` as captured, per table and operation.
    fn count(&self, changes: &[RowChange]) {
        Stats::add(&self.stats.captured, changes.len() as u64);
        // Counted per table and op first: one lock per pair, not per change.
        let mut counts: Vec<(&str, &'static str, u64)> = Vec::new();
        for change in changes {
            let (table, op) = (change.table.as_str(), change.op.code());
            match counts.iter_mut().find(|(t, o, _)| *t == table && *o == op) {
                Some((_, _, n)) => *n += 1,
                None => counts.push((table, op, 1)),
            }
        }
        for (table, op, n) in counts {
            self.stats.captured_rows.add(table, op, n);
        }
    }

    async fn save(&self, checkpoints: &dyn CheckpointStore, position: &str) -> Result<()> {
        with_retries("saving the capture position", || {
            checkpoints.save(&self.config.checkpoint, position)
        })
        .await
    }

    /// Captures until told to stop; with `stop.drained`, stops once the feed is read to its
    /// end.
    ///
    /// While one batch is in flight the next is read; batches are still sent one after the
    /// other (a batch only once the one before is acknowledged), so per key the order of
    /// changes is kept. The position of acknowledged changes is saved in `checkpoints` at
    /// most every [`SAVE_EVERY`] while changes keep coming, and at once when they pause or
    /// the capture stops: a crash repeats at most that much, identically. With
    /// [`Output::Committed`] a crash repeats nothing, and `checkpoints` keeps a copy of the
    /// committed position (for a later run without transactions, and for people to read).
    pub async fn run(
        &self,
        feed: &mut dyn ChangeFeed,
        output: Output<'_>,
        checkpoints: &dyn CheckpointStore,
        stop: StopWhen,
    ) -> Result<()> {
        let wait = Duration::from_millis(100);
        let mut unsaved: Option<String> = None;
        let mut saved_at = std::time::Instant::now();
        let mut changes = self.read(feed, wait).await?;
        loop {
            let due = saved_at.elapsed() >= SAVE_EVERY || changes.is_empty();
            if let Some(position) = unsaved.as_deref().filter(|_| due) {
                self.save(checkpoints, position).await?;
                unsaved = None;
                saved_at = std::time::Instant::now();
            }
            if stop.shutting_down() {
                if let Some(position) = unsaved.as_deref() {
                    self.save(checkpoints, position).await?;
                }
                return Ok(());
            }
            let upstream_done = stop.upstream_done();
            if changes.is_empty() {
                if upstream_done && feed.behind().await? == 0 {
                    return Ok(());
                }
                changes = self.read(feed, wait).await?;
                continue;
            }
            let (delivered, next) =
                tokio::join!(self.deliver(changes, &output), self.read(feed, wait));
            let Delivered { position, held } = delivered?;
            if position.is_some() {
                unsaved = position;
            }
            changes = held;
            changes.extend(next?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use async_trait::async_trait;
    use brewline_ports::{Progress, RowChange};

    /// A feed handing out the batches it was given, then nothing.
    struct Batches(VecDeque<Vec<RowChange>>);

    #[async_trait]
    impl ChangeFeed for Batches {
        async fn next(&mut self, _max: usize, _wait: Duration) -> Result<Vec<RowChange>> {
            Ok(self.0.pop_front().unwrap_or_default())
        }
        async fn behind(&mut self) -> Result<u64> {
            Ok(self.0.len() as u64)
        }
    }

    /// What one commit held: (topic, keys) per topic.
    type Commit = Vec<(String, Vec<String>)>;

    /// Transactions that record what each commit held.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<Commit>>);

    #[async_trait]
    impl Transactions for Recorded {
        async fn commit(&self, output: &[(&str, &[Record])], progress: &[Progress]) -> Result<()> {
            assert!(progress.is_empty(), "a capture commits no offsets");
            let text =
                |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).to_string();
            // Events by key; positions as key=value.
            let keys = |t: &str, rs: &[Record]| {
                rs.iter()
                    .map(|r| match t {
                        "positions" => {
                            format!("{}={}", text(r.key.as_deref()), text(r.value.as_deref()))
                        }
                        _ => text(r.key.as_deref()),
                    })
                    .collect()
            };
            let commit = output
                .iter()
                .filter(|(_, rs)| !rs.is_empty())
                .map(|(t, rs)| (t.to_string(), keys(t, rs)))
                .collect();
            self.0.lock().unwrap().push(commit);
            Ok(())
        }
        async fn sent_through(&self, _: &[(String, i32)]) -> Result<Vec<i64>> {
            unreachable!("a capture reads no topic")
        }
    }

    #[derive(Default)]
    struct Saved(Mutex<HashMap<String, String>>);

    #[async_trait]
    impl CheckpointStore for Saved {
        async fn load(&self, name: &str) -> Result<Option<String>> {
            Ok(self.0.lock().unwrap().get(name).cloned())
        }
        async fn save(&self, name: &str, value: &str) -> Result<()> {
            self.0.lock().unwrap().insert(name.into(), value.into());
            Ok(())
        }
    }

    /// An insert of order `id` read from the binlog; `end`: the position after its
    /// transaction, when it is the transaction's last change.
    fn insert(id: &str, end: Option<&str>) -> RowChange {
        let mut after = serde_json::Map::new();
        after.insert("id".into(), id.into());
        RowChange {
            table: "orders".into(),
            op: Op::Create,
            before: None,
            after: Some(after),
            source: brewline_core::debezium::Source {
                snapshot: Some("false".into()),
                file: "binlog.000001".into(),
                ..Default::default()
            },
            resume_after: end.map(str::to_string),
            schema: None,
        }
    }

    /// A capture of the orders table, three changes a batch.
    fn settings() -> CaptureSettings {
        CaptureSettings {
            topic_prefix: "mysql".into(),
            with_schema: false,
            connector: "mysql".into(),
            checkpoint: "cdc.mysql.shop".into(),
            batch: 3,
            tables: vec![(TableSchema::orders("mysql", "shop"), "id".into())],
            dead_letter_topic: "dlq".into(),
        }
    }

    /// Captures `batches` in recording transactions, holding at most `max_held` changes:
    /// how the run ended, what each commit held, and the copy of the position.
    async fn committed(
        batches: Vec<Vec<RowChange>>,
        max_held: usize,
    ) -> (Result<()>, Vec<Commit>, Option<String>) {
        let capture = Capture::new(settings(), Arc::new(Stats::default()));
        let mut feed = Batches(VecDeque::from(batches));
        let recorded = Recorded::default();
        let saved = Saved::default();
        let (_done, drained) = tokio::sync::watch::channel(true);
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let output = Output::Committed {
            transactions: &recorded,
            positions: "positions".into(),
            max_held,
        };
        let ended = capture
            .run(&mut feed, output, &saved, StopWhen { drained, shutdown })
            .await;
        let commits = recorded.0.lock().unwrap().clone();
        let copy = saved.load("cdc.mysql.shop").await.unwrap();
        (ended, commits, copy)
    }

    /// A source transaction handed out in pieces (larger than the feed's batch) is committed
    /// whole, in one Kafka transaction with the position after it; none commits without the
    /// position it brings the capture to.
    #[tokio::test]
    async fn a_source_transaction_in_pieces_is_committed_whole_with_its_position() {
        let (ended, commits, copy) = committed(
            vec![
                // a1..a3 one transaction; b1, b2 the start of the next.
                vec![
                    insert("a1", None),
                    insert("a2", None),
                    insert("a3", Some("binlog.000001:100")),
                    insert("b1", None),
                    insert("b2", None),
                ],
                vec![insert("b3", None), insert("b4", None)],
                vec![insert("b5", Some("binlog.000001:200"))],
                vec![insert("c1", Some("binlog.000001:300"))],
            ],
            4,
        )
        .await;
        ended.unwrap();
        let topic = "mysql.shop.orders".to_string();
        let whole = |keys: &[&str], at: &str| {
            vec![
                (topic.clone(), keys.iter().map(|k| k.to_string()).collect()),
                (
                    "positions".to_string(),
                    vec![format!("cdc.mysql.shop=binlog.000001:{at}")],
                ),
            ]
        };
        assert_eq!(
            commits,
            vec![
                whole(&["a1", "a2", "a3"], "100"),
                whole(&["b1", "b2", "b3", "b4", "b5"], "200"),
                whole(&["c1"], "300"),
            ]
        );
        assert_eq!(
            copy.as_deref(),
            Some("binlog.000001:300"),
            "the copy of the position"
        );
    }

    /// A source transaction larger than the capture may hold stops it with what to change,
    /// having committed none of it.
    #[tokio::test]
    async fn a_source_transaction_too_large_to_hold_stops_the_capture_saying_what_to_do() {
        let (ended, commits, _) = committed(
            vec![
                vec![
                    insert("a1", Some("binlog.000001:100")),
                    insert("b1", None),
                    insert("b2", None),
                ],
                vec![insert("b3", None), insert("b4", None)],
                vec![insert("b5", Some("binlog.000001:200"))],
            ],
            3,
        )
        .await;
        let err = ended.unwrap_err();
        assert!(!err.retryable, "{err}");
        assert!(
            err.message.contains("capture.max_transaction_changes")
                && err.message.contains("kafka.transactions"),
            "{err}"
        );
        assert_eq!(
            commits.len(),
            1,
            "only the transaction before it: {commits:?}"
        );
        assert!(!format!("{commits:?}").contains("b1"), "{commits:?}");
    }

    /// Transactions the cluster aborts every time.
    struct Aborting;

    #[async_trait]
    impl Transactions for Aborting {
        async fn commit(&self, _: &[(&str, &[Record])], _: &[Progress]) -> Result<()> {
            Err(PortError::aborted("kafka", "transaction timed out"))
        }
        async fn sent_through(&self, _: &[(String, i32)]) -> Result<Vec<i64>> {
            unreachable!("a capture reads no topic")
        }
    }

    /// A transaction the cluster aborts ends the run so that it resumes from the committed
    /// position; the same changes aborted three times in a row stop the capture, saying what
    /// to raise, instead of being tried for ever.
    #[tokio::test]
    async fn the_same_changes_aborted_three_times_stop_the_capture_saying_why() {
        let capture = Capture::new(settings(), Arc::new(Stats::default()));
        let saved = Saved::default();
        let mut errors = Vec::new();
        for _ in 0..ABORTS_IN_A_ROW {
            let mut feed = Batches(VecDeque::from(vec![vec![insert(
                "a1",
                Some("binlog.000001:100"),
            )]]));
            let (_done, drained) = tokio::sync::watch::channel(true);
            let (_stop, shutdown) = tokio::sync::watch::channel(false);
            let output = Output::Committed {
                transactions: &Aborting,
                positions: "positions".into(),
                max_held: 10,
            };
            let stop = StopWhen { drained, shutdown };
            errors.push(
                capture
                    .run(&mut feed, output, &saved, stop)
                    .await
                    .unwrap_err(),
            );
        }
        assert!(errors[..2].iter().all(|e| e.retryable), "{errors:?}");
        let last = &errors[2];
        assert!(!last.retryable, "{last}");
        assert!(
            last.message.contains("3 times in a row")
                && last.message.contains("transaction.timeout.ms"),
            "{last}"
        );
        assert_eq!(saved.load("cdc.mysql.shop").await.unwrap(), None);
    }
}
