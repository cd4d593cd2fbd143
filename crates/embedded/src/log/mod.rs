//! The embedded event log: Kafka's model in SQLite. Topics have partitions; a keyed record goes
//! to the partition Kafka's default partitioner picks; offsets grow by one per partition;
//! consumer groups commit the next offset to read per partition and resume from it (from the
//! earliest record when nothing was committed). Appends of one `send` are one transaction.
//!
//! As in Kafka, records are stored in batches: the records one `send` appends to one partition
//! are one row (base offset, count, the records packed), so appending and reading cost a few
//! rows, not one per record.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use brewline_core::partition::partition_for_key;
use brewline_ports::{
    CheckpointStore, Consumed, Consumer, EventLog, PortError, Producer, Record, Refused, Result,
    Subscription, MAX_RECORD_BYTES,
};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, Notify};

use crate::sqlite::{Db, PageSize};

const ENGINE: &str = "embedded log";
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL CHECK (partitions > 0)
);
-- Records base_offset .. base_offset + count - 1 of a partition, packed (see `pack`). A rowid
-- table with the position in a separate index: a seek then compares small index keys, where in
-- a WITHOUT ROWID table it would read each large batch it passes to compare its key.
CREATE TABLE IF NOT EXISTS record_batches (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    base_offset INTEGER NOT NULL,
    count INTEGER NOT NULL CHECK (count > 0),
    timestamp_ms INTEGER NOT NULL,
    records BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS record_batches_position
    ON record_batches (topic, partition, base_offset);
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
            db: Db::open(path, ENGINE, PageSize::LargeRows, SCHEMA, |_| Ok(()))?,
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
                    "SELECT COALESCE(SUM(count), 0) FROM record_batches WHERE topic = ?1",
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

/// The next offset of a partition (0 when it is empty).
fn end_offset(c: &Connection, topic: &str, partition: i32) -> rusqlite::Result<i64> {
    c.prepare_cached(
        "SELECT base_offset + count FROM record_batches WHERE topic = ?1 AND partition = ?2
         ORDER BY base_offset DESC LIMIT 1",
    )?
    .query_row(params![topic, partition], |r| r.get(0))
    .optional()
    .map(|o| o.unwrap_or(0))
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            out.extend_from_slice(&(b.len() as i32).to_le_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
    }
}

/// Packs records: for each, key and value as `i32 length (-1: none), bytes`, then
/// `u32 header count` and each header's name and value the same way.
fn pack(records: &[&Record]) -> Vec<u8> {
    let size: usize = records
        .iter()
        .map(|r| 12 + r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len))
        .sum();
    let mut out = Vec::with_capacity(size);
    for r in records {
        put_bytes(&mut out, r.key.as_deref());
        put_bytes(&mut out, r.value.as_deref());
        out.extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
        for (k, v) in &r.headers {
            put_bytes(&mut out, Some(k.as_bytes()));
            put_bytes(&mut out, Some(v));
        }
    }
    out
}

/// Reads what [`pack`] wrote; `None` if the bytes are cut short.
fn unpack(mut bytes: &[u8], count: usize) -> Option<Vec<Record>> {
    fn int(b: &mut &[u8]) -> Option<i32> {
        let v = i32::from_le_bytes(b.get(..4)?.try_into().ok()?);
        *b = &b[4..];
        Some(v)
    }
    fn take(b: &mut &[u8]) -> Option<Option<Vec<u8>>> {
        let len = int(b)?;
        if len < 0 {
            return Some(None);
        }
        let out = b.get(..len as usize)?.to_vec();
        *b = &b[len as usize..];
        Some(Some(out))
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let key = take(&mut bytes)?;
        let value = take(&mut bytes)?;
        let n = int(&mut bytes)?;
        let mut headers = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n {
            let k = take(&mut bytes)??;
            let v = take(&mut bytes)??;
            headers.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
        out.push(Record {
            key,
            value,
            headers,
        });
    }
    Some(out)
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
        let db = Db::open(&self.path, ENGINE, PageSize::LargeRows, "", |_| Ok(()))?;
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
                            None => sub
                                .from
                                .iter()
                                .find(|(t, q, _)| t == topic && *q == p)
                                .map(|(_, _, o)| *o),
                        };
                        let topic: Arc<str> = topic.as_str().into();
                        partitions.push((topic.clone(), p));
                        positions.insert((topic, p), committed.unwrap_or(0));
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

    async fn partitions(&self, topic: &str) -> Result<i32> {
        let name = topic.to_string();
        self.db
            .run(move |c| partitions_of(c, &name))
            .await?
            .ok_or_else(|| missing_topic(topic))
    }

    async fn earliest(&self, topic: &str) -> Result<Vec<(i32, i64)>> {
        let n = self.partitions(topic).await?;
        let name = topic.to_string();
        self.db
            .run(move |c| {
                (0..n)
                    .map(|p| {
                        let first: Option<i64> = c
                            .prepare_cached(
                                "SELECT MIN(base_offset) FROM record_batches
                                 WHERE topic = ?1 AND partition = ?2",
                            )?
                            .query_row(params![name, p], |r| r.get(0))?;
                        // An emptied partition starts at its end.
                        Ok((p, first.map_or_else(|| end_offset(c, &name, p), Ok)?))
                    })
                    .collect()
            })
            .await
    }
}

impl EmbeddedLog {
    /// Deletes the records of a partition before `offset` (whole batches of them), as Kafka's
    /// retention or `kafka-delete-records` does. The latest batch stays (as Kafka keeps its
    /// active segment), so offsets are never reused.
    pub async fn delete_before(&self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        let name = topic.to_string();
        self.db
            .run(move |c| {
                c.execute(
                    "DELETE FROM record_batches
                     WHERE topic = ?1 AND partition = ?2 AND base_offset + count <= ?3
                       AND base_offset < (SELECT MAX(base_offset) FROM record_batches
                                          WHERE topic = ?1 AND partition = ?2)",
                    params![name, partition, offset],
                )
                .map(drop)
            })
            .await
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
        // As a broker does: a record over the largest size is refused alone.
        let refused: Vec<Refused> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.size() > MAX_RECORD_BYTES)
            .map(|(index, r)| Refused {
                index,
                reason: format!(
                    "record of {} bytes is too large: the log takes at most {MAX_RECORD_BYTES}",
                    r.size()
                ),
            })
            .collect();
        let records: Vec<Record> = if refused.is_empty() {
            records
        } else {
            records
                .into_iter()
                .filter(|r| r.size() <= MAX_RECORD_BYTES)
                .collect()
        };
        self.append(topic, records).await?;
        if refused.is_empty() {
            Ok(())
        } else {
            Err(PortError::refused(ENGINE, topic, refused))
        }
    }
}

impl EmbeddedProducer {
    /// Appends records in one transaction.
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<()> {
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
                let mut per_partition: Vec<Vec<&Record>> = vec![Vec::new(); n as usize];
                let mut spread = start;
                for r in &records {
                    let p = match &r.key {
                        Some(k) => partition_for_key(k, n),
                        None => {
                            spread = spread.wrapping_add(1);
                            (spread % n as u32) as i32
                        }
                    };
                    per_partition[p as usize].push(r);
                }
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO record_batches
                             (topic, partition, base_offset, count, timestamp_ms, records)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    for (p, batch) in per_partition.iter().enumerate() {
                        if batch.is_empty() {
                            continue;
                        }
                        let base = end_offset(&tx, &topic, p as i32)?;
                        insert.execute(params![
                            topic,
                            p as i32,
                            base,
                            batch.len() as i64,
                            now,
                            pack(batch)
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
    partitions: Vec<(Arc<str>, i32)>,
    /// Next offset to read, per partition.
    next: HashMap<(Arc<str>, i32), i64>,
    appended: Arc<Notify>,
    /// Which partition reads first, rotating for fairness.
    turn: usize,
}

impl Reader {
    async fn read(&mut self) -> Result<Vec<Consumed>> {
        let n = self.partitions.len();
        let per_partition = (PREFETCH / n.max(1)).max(1);
        let order: Vec<(Arc<str>, i32, i64)> = (0..n)
            .map(|i| {
                let (t, p) = &self.partitions[(self.turn + i) % n];
                (t.clone(), *p, self.next[&(t.clone(), *p)])
            })
            .collect();
        self.turn = (self.turn + 1) % n.max(1);
        let out = self
            .db
            .run(move |c| {
                // The batch holding `from`, and the batches after it, until enough records.
                let mut st = c.prepare_cached(
                    "SELECT base_offset, count, timestamp_ms, records FROM record_batches
                     WHERE topic = ?1 AND partition = ?2 AND base_offset >= COALESCE(
                         (SELECT MAX(base_offset) FROM record_batches
                          WHERE topic = ?1 AND partition = ?2 AND base_offset <= ?3), 0)
                     ORDER BY base_offset",
                )?;
                let mut out = Vec::new();
                for (topic, p, from) in order {
                    let mut rows = st.query(params![&*topic, p, from])?;
                    let mut taken = 0usize;
                    while let Some(row) = rows.next()? {
                        let base: i64 = row.get(0)?;
                        let count: i64 = row.get(1)?;
                        let timestamp_ms: i64 = row.get(2)?;
                        let packed = row.get_ref(3)?.as_blob()?;
                        let Some(records) = unpack(packed, count as usize) else {
                            return Ok(Err(PortError::fatal(
                                ENGINE,
                                format!("{topic}/{p}: the batch at offset {base} is damaged"),
                            )));
                        };
                        for (i, record) in records.into_iter().enumerate() {
                            let offset = base + i as i64;
                            if offset >= from {
                                out.push(Consumed {
                                    topic: topic.clone(),
                                    partition: p,
                                    offset,
                                    timestamp_ms,
                                    record,
                                });
                                taken += 1;
                            }
                        }
                        if taken >= per_partition {
                            break;
                        }
                    }
                }
                Ok(Ok(out))
            })
            .await??;
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
            let result = match self.read().await {
                // A busy database: try again shortly; only what a retry cannot mend is handed
                // to `poll`, which ends the reader.
                Err(e) if e.retryable => {
                    tracing::warn!(error = %e, "reading the log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                result => result,
            };
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
    partitions: Vec<(Arc<str>, i32)>,
    /// Next offset `poll` will return, per partition.
    positions: HashMap<(Arc<str>, i32), i64>,
    ready: Reads,
    buffered: VecDeque<Consumed>,
    reader: tokio::task::JoinHandle<()>,
    /// To start the background reader again elsewhere.
    path: PathBuf,
    appended: Arc<Notify>,
}

impl EmbeddedConsumer {
    fn new(
        log: &EmbeddedLog,
        db: Db,
        group: Option<String>,
        partitions: Vec<(Arc<str>, i32)>,
        positions: HashMap<(Arc<str>, i32), i64>,
    ) -> Result<EmbeddedConsumer> {
        let (ready, reader) = start_reader(&log.path, &log.appended, &partitions, &positions)?;
        Ok(EmbeddedConsumer {
            db,
            group,
            partitions,
            positions,
            ready,
            buffered: VecDeque::new(),
            reader,
            path: log.path.clone(),
            appended: log.appended.clone(),
        })
    }
}

/// Where a background reader's reads arrive.
type Reads = mpsc::Receiver<Result<Vec<Consumed>>>;

/// A background reader of `partitions` from `positions`, and where its reads arrive.
fn start_reader(
    path: &Path,
    appended: &Arc<Notify>,
    partitions: &[(Arc<str>, i32)],
    positions: &HashMap<(Arc<str>, i32), i64>,
) -> Result<(Reads, tokio::task::JoinHandle<()>)> {
    let reader = Reader {
        db: Db::open(path, ENGINE, PageSize::LargeRows, "", |_| Ok(()))?,
        partitions: partitions.to_vec(),
        next: positions.clone(),
        appended: appended.clone(),
        turn: 0,
    };
    let (tx, ready) = mpsc::channel(PREFETCH_DEPTH);
    Ok((ready, tokio::spawn(reader.run(tx))))
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
                None => return Err(PortError::fatal(
                    ENGINE,
                    "the background reader stopped after an error (reported by an earlier poll)",
                )),
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

    async fn rewind(&mut self) -> Result<()> {
        let Some(group) = self.group.clone() else {
            return Err(PortError::fatal(
                ENGINE,
                "a reader without a group has no committed offsets to go back to",
            ));
        };
        let partitions = self.partitions.clone();
        let committed: HashMap<(Arc<str>, i32), i64> = self
            .db
            .run(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT next_offset FROM group_offsets
                     WHERE grp = ?1 AND topic = ?2 AND partition = ?3",
                )?;
                partitions
                    .into_iter()
                    .map(|(t, p)| {
                        let next: Option<i64> = st
                            .query_row(params![group, &*t, p], |r| r.get(0))
                            .optional()?;
                        Ok(((t, p), next.unwrap_or(0)))
                    })
                    .collect()
            })
            .await?;
        self.reader.abort();
        let (ready, reader) =
            start_reader(&self.path, &self.appended, &self.partitions, &committed)?;
        self.ready = ready;
        self.reader = reader;
        self.buffered.clear();
        self.positions = committed;
        Ok(())
    }

    async fn lag(&mut self) -> Result<u64> {
        let parts: Vec<_> = self
            .partitions
            .iter()
            .map(|(t, p)| (t.clone(), *p, self.positions[&(t.clone(), *p)]))
            .collect();
        self.db
            .run(move |c| {
                let mut lag = 0u64;
                for (t, p, pos) in parts {
                    lag += (end_offset(c, &t, p)? - pos).max(0) as u64;
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
