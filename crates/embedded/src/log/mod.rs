//! The embedded event log: Kafka's model in SQLite. Topics have partitions; a keyed record goes
//! to the partition Kafka's default partitioner picks; offsets grow by one per partition;
//! consumer groups commit the next offset to read per partition and resume from it (from the
//! earliest record when nothing was committed). Appends of one `send` are one transaction.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use brewline_core::partition::partition_for_key;
use brewline_ports::{
    CheckpointStore, Consumed, Consumer, EventLog, PortError, Producer, Record, Result,
    Subscription,
};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, Notify};

use crate::sqlite::Db;

const ENGINE: &str = "embedded log";
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL CHECK (partitions > 0)
);
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key BLOB,
    value BLOB,
    headers BLOB,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
";

/// Topics, group offsets and checkpoints in a SQLite file.
#[derive(Clone)]
pub struct EmbeddedLog {
    db: Db,
    path: PathBuf,
    appended: Arc<Notify>,
}

impl EmbeddedLog {
    pub fn open(path: &Path) -> Result<EmbeddedLog> {
        Ok(EmbeddedLog {
            db: Db::open(path, ENGINE, SCHEMA, |_| Ok(()))?,
            path: path.to_path_buf(),
            appended: Arc::new(Notify::new()),
        })
    }

    /// Every topic with its partition count.
    pub async fn topics(&self) -> Result<Vec<(String, i32)>> {
        self.db
            .run(|c| {
                c.prepare("SELECT name, partitions FROM topics ORDER BY name")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .await
    }

    /// How many records a topic holds.
    pub async fn count(&self, topic: &str) -> Result<u64> {
        let topic = topic.to_string();
        self.db
            .run(move |c| {
                c.query_row(
                    "SELECT COUNT(*) FROM records WHERE topic = ?1",
                    [topic],
                    |r| r.get::<_, i64>(0),
                )
            })
            .await
            .map(|n| n as u64)
    }
}

fn partitions_of(c: &Connection, topic: &str) -> rusqlite::Result<Option<i32>> {
    c.prepare_cached("SELECT partitions FROM topics WHERE name = ?1")?
        .query_row([topic], |r| r.get(0))
        .optional()
}

fn missing_topic(topic: &str) -> PortError {
    PortError::fatal(
        ENGINE,
        format!("topic {topic:?} does not exist (create it first, e.g. with `brewline demo`)"),
    )
}

/// Headers as `u32 name length, name, u32 value length, value`, repeated.
fn encode_headers(headers: &[(String, Vec<u8>)]) -> Option<Vec<u8>> {
    if headers.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for (k, v) in headers {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    Some(out)
}

fn decode_headers(mut bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    fn take<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let out = b.get(4..4 + len)?;
        *b = &b[4 + len..];
        Some(out)
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        match (take(&mut bytes), take(&mut bytes)) {
            (Some(k), Some(v)) => out.push((String::from_utf8_lossy(k).into_owned(), v.to_vec())),
            _ => break,
        }
    }
    out
}

#[async_trait]
impl EventLog for EmbeddedLog {
    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        if partitions < 1 {
            return Err(PortError::fatal(
                ENGINE,
                format!("topic {topic:?}: partitions must be at least 1"),
            ));
        }
        let topic = topic.to_string();
        self.db
            .run(move |c| {
                c.execute(
                    "INSERT INTO topics (name, partitions) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    params![topic, partitions],
                )
                .map(drop)
            })
            .await
    }

    fn producer(&self) -> Result<Box<dyn Producer>> {
        Ok(Box::new(EmbeddedProducer {
            db: self.db.clone(),
            appended: self.appended.clone(),
            spread: AtomicU32::new(0),
        }))
    }

    async fn consumer(&self, subscription: Subscription) -> Result<Box<dyn Consumer>> {
        let db = Db::open(&self.path, ENGINE, "", |_| Ok(()))?;
        let sub = subscription.clone();
        let (partitions, positions) = db
            .run(move |c| {
                let mut partitions = Vec::new();
                let mut positions = HashMap::new();
                for topic in &sub.topics {
                    let Some(n) = partitions_of(c, topic)? else {
                        return Ok(Err(missing_topic(topic)));
                    };
                    for p in 0..n {
                        let committed: Option<i64> = match &sub.group {
                            Some(g) => c
                                .query_row(
                                    "SELECT next_offset FROM group_offsets
                                     WHERE grp = ?1 AND topic = ?2 AND partition = ?3",
                                    params![g, topic, p],
                                    |r| r.get(0),
                                )
                                .optional()?,
                            None => None,
                        };
                        partitions.push((topic.clone(), p));
                        positions.insert((topic.clone(), p), committed.unwrap_or(0));
                    }
                }
                Ok(Ok((partitions, positions)))
            })
            .await??;
        Ok(Box::new(EmbeddedConsumer::new(
            self,
            db,
            subscription.group,
            partitions,
            positions,
        )?))
    }
}

struct EmbeddedProducer {
    db: Db,
    appended: Arc<Notify>,
    /// Round-robin partition for records without a key.
    spread: AtomicU32,
}

#[async_trait]
impl Producer for EmbeddedProducer {
    async fn send(&self, topic: &str, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let topic = topic.to_string();
        let unkeyed = records.iter().filter(|r| r.key.is_none()).count() as u32;
        let start = self.spread.fetch_add(unkeyed, Ordering::Relaxed);
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let Some(n) = partitions_of(&tx, &topic)? else {
                    return Ok(Err(missing_topic(&topic)));
                };
                let now = crate::now_ms();
                let mut next: HashMap<i32, i64> = HashMap::new();
                {
                    let mut last = tx.prepare_cached(
                        "SELECT MAX(offset) FROM records WHERE topic = ?1 AND partition = ?2",
                    )?;
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO records (topic, partition, offset, key, value, headers, timestamp_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?;
                    let mut spread = start;
                    for r in &records {
                        let p = match &r.key {
                            Some(k) => partition_for_key(k, n),
                            None => {
                                spread = spread.wrapping_add(1);
                                (spread % n as u32) as i32
                            }
                        };
                        let offset = match next.get(&p) {
                            Some(o) => *o,
                            None => last
                                .query_row(params![topic, p], |r| r.get::<_, Option<i64>>(0))?
                                .map_or(0, |o| o + 1),
                        };
                        next.insert(p, offset + 1);
                        insert.execute(params![
                            topic,
                            p,
                            offset,
                            r.key,
                            r.value,
                            encode_headers(&r.headers),
                            now
                        ])?;
                    }
                }
                tx.commit()?;
                Ok(Ok(()))
            })
            .await??;
        self.appended.notify_waiters();
        Ok(())
    }
}

/// Records read ahead per read by the background reader.
const PREFETCH: usize = 4096;
/// Reads kept ready ahead of `poll`.
const PREFETCH_DEPTH: usize = 2;

/// Reads records in the background, ahead of `poll`, as librdkafka's consumer does.
struct Reader {
    db: Db,
    partitions: Vec<(String, i32)>,
    /// Next offset to read, per partition.
    next: HashMap<(String, i32), i64>,
    appended: Arc<Notify>,
    /// Which partition reads first, rotating for fairness.
    turn: usize,
}

impl Reader {
    async fn read(&mut self) -> Result<Vec<Consumed>> {
        let n = self.partitions.len();
        let per_partition = (PREFETCH / n.max(1)).max(1);
        let order: Vec<(String, i32, i64)> = (0..n)
            .map(|i| {
                let (t, p) = &self.partitions[(self.turn + i) % n];
                (t.clone(), *p, self.next[&(t.clone(), *p)])
            })
            .collect();
        self.turn = (self.turn + 1) % n.max(1);
        let out = self
            .db
            .run(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT offset, key, value, headers, timestamp_ms FROM records
                     WHERE topic = ?1 AND partition = ?2 AND offset >= ?3
                     ORDER BY offset LIMIT ?4",
                )?;
                let mut out = Vec::new();
                for (topic, p, from) in order {
                    let rows =
                        st.query_map(params![topic, p, from, per_partition as i64], |r| {
                            let headers: Option<Vec<u8>> = r.get(3)?;
                            Ok(Consumed {
                                topic: topic.clone(),
                                partition: p,
                                offset: r.get(0)?,
                                timestamp_ms: r.get(4)?,
                                record: Record {
                                    key: r.get(1)?,
                                    value: r.get(2)?,
                                    headers: headers
                                        .map(|h| decode_headers(&h))
                                        .unwrap_or_default(),
                                },
                            })
                        })?;
                    for row in rows {
                        out.push(row?);
                    }
                }
                Ok(out)
            })
            .await?;
        for r in &out {
            self.next
                .insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        Ok(out)
    }

    /// Reads until the consumer is gone. Every read is handed over, an empty one too (it says
    /// "caught up"); after an empty read it waits for an append.
    async fn run(mut self, ready: mpsc::Sender<Result<Vec<Consumed>>>) {
        loop {
            let appended = self.appended.clone();
            let notified = appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let result = self.read().await;
            let caught_up = matches!(&result, Ok(batch) if batch.is_empty());
            let failed = result.is_err();
            if ready.send(result).await.is_err() || failed {
                return;
            }
            if caught_up {
                // Woken by an append of this process; other processes' appends are seen by
                // polling.
                tokio::select! {
                    _ = ready.closed() => return,
                    _ = tokio::time::timeout(Duration::from_millis(50), notified) => {}
                }
            }
        }
    }
}

struct EmbeddedConsumer {
    /// For commits and lag.
    db: Db,
    group: Option<String>,
    partitions: Vec<(String, i32)>,
    /// Next offset `poll` will return, per partition.
    positions: HashMap<(String, i32), i64>,
    ready: mpsc::Receiver<Result<Vec<Consumed>>>,
    buffered: VecDeque<Consumed>,
    reader: tokio::task::JoinHandle<()>,
}

impl EmbeddedConsumer {
    fn new(
        log: &EmbeddedLog,
        db: Db,
        group: Option<String>,
        partitions: Vec<(String, i32)>,
        positions: HashMap<(String, i32), i64>,
    ) -> Result<EmbeddedConsumer> {
        let reader = Reader {
            db: Db::open(&log.path, ENGINE, "", |_| Ok(()))?,
            partitions: partitions.clone(),
            next: positions.clone(),
            appended: log.appended.clone(),
            turn: 0,
        };
        let (tx, ready) = mpsc::channel(PREFETCH_DEPTH);
        Ok(EmbeddedConsumer {
            db,
            group,
            partitions,
            positions,
            ready,
            buffered: VecDeque::new(),
            reader: tokio::spawn(reader.run(tx)),
        })
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Consumed>> {
        let deadline = Instant::now() + wait;
        while self.buffered.is_empty() && !self.partitions.is_empty() {
            let next = match self.ready.try_recv() {
                Ok(next) => Some(next),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match tokio::time::timeout(left, self.ready.recv()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                }
            };
            match next {
                Some(batch) => self.buffered.extend(batch?),
                None => return Err(PortError::fatal(ENGINE, "the background reader stopped")),
            }
        }
        let n = max.min(self.buffered.len());
        let out: Vec<Consumed> = self.buffered.drain(..n).collect();
        for r in &out {
            self.positions
                .insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        Ok(out)
    }

    async fn commit(&mut self, next_offsets: &[(String, i32, i64)]) -> Result<()> {
        let Some(group) = self.group.clone() else {
            return Ok(());
        };
        let offsets = next_offsets.to_vec();
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                {
                    let mut st = tx.prepare_cached(
                        "INSERT INTO group_offsets (grp, topic, partition, next_offset)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (grp, topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                    )?;
                    for (t, p, o) in &offsets {
                        st.execute(params![group, t, p, o])?;
                    }
                }
                tx.commit()
            })
            .await
    }

    async fn lag(&mut self) -> Result<u64> {
        let parts: Vec<_> = self
            .partitions
            .iter()
            .map(|(t, p)| (t.clone(), *p, self.positions[&(t.clone(), *p)]))
            .collect();
        self.db
            .run(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT MAX(offset) FROM records WHERE topic = ?1 AND partition = ?2",
                )?;
                let mut lag = 0u64;
                for (t, p, pos) in parts {
                    let last: Option<i64> = st.query_row(params![t, p], |r| r.get(0))?;
                    lag += last.map_or(0, |l| (l + 1 - pos).max(0) as u64);
                }
                Ok(lag)
            })
            .await
    }
}

#[async_trait]
impl CheckpointStore for EmbeddedLog {
    async fn load(&self, name: &str) -> Result<Option<String>> {
        let name = name.to_string();
        self.db
            .run(move |c| {
                c.query_row(
                    "SELECT value FROM checkpoints WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()
            })
            .await
    }

    async fn save(&self, name: &str, value: &str) -> Result<()> {
        let (name, value) = (name.to_string(), value.to_string());
        self.db
            .run(move |c| {
                c.execute(
                    "INSERT INTO checkpoints (name, value, updated_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
                    params![name, value, crate::now_ms()],
                )
                .map(drop)
            })
            .await
    }
}

#[cfg(test)]
mod tests;
