//! The small traits between brewline's logic and the engines it runs on.
//!
//! Each trait has a real implementation (Kafka, Redis, MySQL, S3) and an embedded one
//! (SQLite), and the same tests run against both. They are async because the real engines are;
//! every method is one round trip's worth of work, batched where the engines batch.

#[cfg(feature = "conformance")]
pub mod conformance;

use std::time::Duration;

use async_trait::async_trait;
use brewline_core::assembly::{EventRef, OrderChange, Step};
use brewline_core::order::{CompletedOrder, NewOrder};
use brewline_core::reference::{DimensionExtract, ReferenceData};
use brewline_core::suggestion::{Lookups, Suggestion};

/// An engine failed. The text says what and where; `retryable` says whether trying again may
/// help (a lost connection) or not (a missing topic).
#[derive(Debug, thiserror::Error)]
#[error("{engine}: {message}")]
pub struct PortError {
    pub engine: &'static str,
    pub message: String,
    pub retryable: bool,
    /// Records a log refused for what they are ([`Producer::send`]); empty for any other
    /// failure.
    pub refused: Vec<Refused>,
    /// The order store lost the state this worker wrote ([`OrderStore::apply`]): it is to be
    /// rebuilt from the log, from the committed offsets on.
    pub state_lost: bool,
    /// A transaction was aborted ([`Transactions::commit`]): nothing of the batch became
    /// visible, and the worker reads again from the committed offsets.
    pub aborted: bool,
}

/// A record a log refused for what it is (larger than the topic takes, invalid): sending it
/// again cannot succeed, so it is to be dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its place in the records sent.
    pub index: usize,
    /// The log's reason.
    pub reason: String,
}

impl PortError {
    fn new(engine: &'static str, message: impl std::fmt::Display, retryable: bool) -> PortError {
        PortError {
            engine,
            message: message.to_string(),
            retryable,
            refused: Vec::new(),
            state_lost: false,
            aborted: false,
        }
    }

    pub fn fatal(engine: &'static str, message: impl std::fmt::Display) -> PortError {
        PortError::new(engine, message, false)
    }

    pub fn retryable(engine: &'static str, message: impl std::fmt::Display) -> PortError {
        PortError::new(engine, message, true)
    }

    /// The order store no longer holds the state this worker wrote: nothing of the batch was
    /// applied, and the state is to be rebuilt from the log.
    pub fn state_lost(engine: &'static str, message: impl std::fmt::Display) -> PortError {
        PortError {
            state_lost: true,
            ..PortError::fatal(engine, message)
        }
    }

    /// A transaction was aborted: nothing of the batch is visible, and the worker is to read
    /// again from the committed offsets.
    pub fn aborted(engine: &'static str, message: impl std::fmt::Display) -> PortError {
        PortError {
            aborted: true,
            ..PortError::fatal(engine, message)
        }
    }

    /// A send whose other records were all acknowledged, but not these.
    pub fn refused(engine: &'static str, topic: &str, refused: Vec<Refused>) -> PortError {
        let first = refused.first().map_or("", |r| r.reason.as_str());
        let message = format!(
            "{topic} refused {} record(s) for what they are (the first: {first})",
            refused.len()
        );
        PortError {
            refused,
            ..PortError::fatal(engine, message)
        }
    }
}

/// The largest record, key, value and headers together, the embedded log takes: Kafka's
/// default (`message.max.bytes`, librdkafka's 1 000 000).
pub const MAX_RECORD_BYTES: usize = 1_000_000;

impl Record {
    /// Its key, value and headers, in bytes.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

pub type Result<T, E = PortError> = std::result::Result<T, E>;

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    now_us() / 1000
}

/// A record to append to a topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Decides the partition; `None` spreads records.
    pub key: Option<Vec<u8>>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    pub fn keyed(key: impl Into<Vec<u8>>, value: Option<Vec<u8>>) -> Record {
        Record {
            key: Some(key.into()),
            value,
            headers: Vec::new(),
        }
    }
}

/// A record read from a topic, with where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Shared by every record read from the topic.
    pub topic: std::sync::Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// When the record was appended, epoch milliseconds.
    pub timestamp_ms: i64,
    pub record: Record,
}

impl Consumed {
    pub fn event_ref(&self) -> EventRef {
        EventRef {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// The offsets to commit after handling `records`: per topic and partition, the offset after
/// the last record read.
pub fn next_offsets(records: &[Consumed]) -> Vec<(String, i32, i64)> {
    // A few partitions per batch: a short list beats a hash map.
    let mut next: Vec<(&str, i32, i64)> = Vec::new();
    for r in records {
        match next
            .iter_mut()
            .find(|(t, p, _)| *p == r.partition && *t == &*r.topic)
        {
            Some((_, _, o)) => *o = (*o).max(r.offset + 1),
            None => next.push((&r.topic, r.partition, r.offset + 1)),
        }
    }
    next.into_iter()
        .map(|(t, p, o)| (t.to_string(), p, o))
        .collect()
}

/// Appends records to topics.
#[async_trait]
pub trait Producer: Send + Sync {
    /// Appends `records` to `topic`, in order per key, and returns once every one of them is
    /// durably acknowledged. Records the log refuses for what they are (too large for the
    /// topic, invalid) do not stop the others: once every other record is acknowledged, the
    /// error lists them ([`PortError::refused`]) for the caller to dead-letter.
    async fn send(&self, topic: &str, records: Vec<Record>) -> Result<()>;
}

/// Reads topics, as a member of a consumer group (offsets committed per partition) or alone
/// from the beginning.
#[async_trait]
pub trait Consumer: Send {
    /// Up to `max` records, waiting at most `wait` for the first; a zero wait takes only what
    /// is ready now. Empty when nothing came (which does not mean the topics are read to their
    /// end: ask [`Consumer::lag`]).
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Consumed>>;

    /// Commits, for each partition, the offset of the next record to read.
    async fn commit(&mut self, next_offsets: &[(String, i32, i64)]) -> Result<()>;

    /// Records in the subscribed topics not yet read by this consumer.
    async fn lag(&mut self) -> Result<u64>;

    /// Goes back to the group's committed offsets in every partition it reads (the beginning
    /// where none is committed), dropping whatever was read ahead: the next poll returns the
    /// first record not committed. For a worker whose state was lost, to rebuild it from the
    /// log. An error for a reader without a group.
    async fn rewind(&mut self) -> Result<()>;

    /// This member's output and progress written as one ([`Transactions`]), where the log has
    /// transactions and they are on; `None`: the worker sends, then commits.
    fn transactions(&self) -> Option<&dyn Transactions> {
        None
    }

    /// How many times this member's partitions were taken from it or given to it (a
    /// rebalance of its group). When it changes, the member reads every partition it now has
    /// again from the committed offsets, and what it knew of them may be another member's
    /// work since: a batch read before the change is not to be committed, and what the worker
    /// remembers of the partitions is to be forgotten. A poll never returns records read on
    /// both sides of a change. Stays 0 for a member whose partitions never move.
    fn assignments(&self) -> u64 {
        0
    }
}

/// A partition's progress, committed as one with the output that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub topic: String,
    pub partition: i32,
    /// The next offset to read: where a member that takes the partition over starts.
    pub next: i64,
    /// The next offset whose output is not sent, at or after `next`: the records in between
    /// are read again only to rebuild state.
    pub sent_through: i64,
}

/// A group member's output and progress written as one (a Kafka transaction): readers that
/// read only what is committed see a batch's records if and only if its offsets are
/// committed, so a member killed at any point leaves no duplicate and loses nothing.
#[async_trait]
pub trait Transactions: Send + Sync {
    /// Sends one batch's output, `(topic, records)` in order, and commits `progress` for the
    /// member's group, as one. Records the log refuses for what they are fail it whole,
    /// listed by their place in the records of all the topics together
    /// ([`PortError::refused`]): the caller sends again without them. On any other error
    /// nothing is visible; [`PortError::aborted`] means the member reads again from the
    /// committed offsets ([`Consumer::rewind`]), a retryable one that it may commit again.
    async fn commit(&self, output: &[(&str, &[Record])], progress: &[Progress]) -> Result<()>;

    /// The next offset whose output is sent, committed for each of `partitions` (0 where
    /// nothing was).
    async fn sent_through(&self, partitions: &[(String, i32)]) -> Result<Vec<i64>>;
}

/// Who reads and from where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    /// A consumer group: starts from its committed offsets (else the earliest). `None`: reads
    /// every record from the beginning (or from `from`) and commits nothing.
    pub group: Option<String>,
    /// Without a group: where to start, as (topic, partition, next offset to read); partitions
    /// not listed start at the beginning. Not used with a group.
    pub from: Vec<(String, i32, i64)>,
}

/// A partitioned, ordered, durable log of records: Kafka, or the embedded log.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Creates a topic with `partitions` partitions if it does not exist; an existing topic is
    /// left as it is.
    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()>;

    fn producer(&self) -> Result<Box<dyn Producer>>;

    async fn consumer(&self, subscription: Subscription) -> Result<Box<dyn Consumer>>;

    /// How many partitions `topic` has; an error when it does not exist.
    async fn partitions(&self, topic: &str) -> Result<i32>;

    /// The first offset each partition of `topic` still holds, by partition: records before it
    /// were deleted (retention), 0 when none ever were.
    async fn earliest(&self, topic: &str) -> Result<Vec<(i32, i64)>>;
}

/// A change of one applied order, with the event it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub change: OrderChange,
    pub at: EventRef,
}

/// Makes the suggestion for an order as it completes (none when it is not eligible).
pub type Suggest<'a> = &'a (dyn Fn(&CompletedOrder) -> Option<Suggestion> + Sync);

/// Per-order state that outlives a worker: Redis (the dynamic database), or the embedded
/// state. Every order's state expires after the store's TTL.
#[async_trait]
pub trait OrderStore: Send + Sync {
    /// Applies changes in order, each one atomically against its order's state (as
    /// [`brewline_core::OrderState::apply`] defines), and says what each did. An order completes
    /// once, whichever worker applies its last change; `suggest` makes its suggestion then,
    /// and the store records it durably with the completion, so that a replay of the
    /// completing event gets this very suggestion back ([`Step::Replayed`]) to send again.
    /// When the store lost the state this handle wrote before (a Redis flushed or restarted
    /// without persistence), nothing is applied and the error says so
    /// ([`PortError::state_lost`]) once: the caller rebuilds the state from the log.
    async fn apply(&self, changes: &[Applied], suggest: Suggest<'_>) -> Result<Vec<Step>>;

    /// Removes the state of orders not touched for the TTL, and returns the ids of those that
    /// expired incomplete.
    async fn expire(&self) -> Result<Vec<String>>;
}

/// Static lookups: the `diamond_customers`, `bank_acb_payment` and `product:{id}` cache.
#[async_trait]
pub trait LookupStore: Send + Sync {
    /// Replaces the lookups at once: a reader sees the old set or the new one, never half.
    /// Returns the new version: the previous one plus one, or the time in epoch milliseconds
    /// if that is higher, so that lookups published again into a store that lost them are
    /// newer than any it had (a recommender refuses older ones).
    async fn publish(&self, lookups: &Lookups) -> Result<u64>;

    /// The version of the current lookups (0: never published).
    async fn version(&self) -> Result<u64>;

    /// The current lookups and their version.
    async fn load(&self) -> Result<(Lookups, u64)>;
}

/// The operational database of the shop: MySQL/MariaDB, or the embedded source.
#[async_trait]
pub trait SourceDb: Send + Sync {
    /// Creates the `coffee_shop` tables if they do not exist.
    async fn init_schema(&self) -> Result<()>;

    /// Loads the reference data (upsert: running it twice changes nothing).
    async fn seed_reference(&self, reference: &ReferenceData) -> Result<()>;

    /// Reads the reference data back.
    async fn load_reference(&self) -> Result<ReferenceData>;

    /// Extracts the dimension tables (stores, payment methods, categories, products), each row
    /// with its `updated_at`, for the batch layer.
    async fn extract_dimensions(&self) -> Result<DimensionExtract>;

    /// Writes orders, each in a transaction of its own, as the tills do.
    async fn insert_orders(&self, orders: &[NewOrder]) -> Result<()>;

    /// Writes suggestions the customers accepted as `order_details` rows with
    /// `is_suggestion = true`; one already written (or whose order is gone) is skipped.
    /// Returns the rows written.
    async fn accept_suggestions(&self, suggestions: &[Suggestion]) -> Result<u64>;

    /// How many orders and order lines the database holds.
    async fn counts(&self) -> Result<SourceCounts>;
}

/// Row counts of the source database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceCounts {
    pub orders: u64,
    /// Lines that are items of their order (suggested lines written back are not).
    pub order_lines: u64,
}

/// A named, durable bookmark: where a capture or a batch job got to.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    async fn load(&self, name: &str) -> Result<Option<String>>;
    async fn save(&self, name: &str, value: &str) -> Result<()>;
}

/// A bookmark as a record of a topic of positions (kept compacted): keyed by its name, the
/// position as text. A capture that writes its events in transactions writes this record in
/// the same one, so the position a restart resumes from is exactly after the events committed.
pub fn position_record(name: &str, position: &str) -> Record {
    Record::keyed(name.as_bytes(), Some(position.as_bytes().to_vec()))
}

/// One committed change of one row, as a change feed (a binlog, the embedded changelog)
/// reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// The table's name, without the database.
    pub table: String,
    pub op: brewline_core::debezium::Op,
    pub before: Option<serde_json::Map<String, serde_json::Value>>,
    pub after: Option<serde_json::Map<String, serde_json::Value>>,
    /// Where the change stands in the feed (file, position, row, commit time), as Debezium's
    /// `source` block reports it; `name` and `version` are the capture's to fill.
    pub source: brewline_core::debezium::Source,
    /// Set on the last change of a transaction: the position to resume from after it. A
    /// capture stores only these, so that a transaction is never split across a restart.
    pub resume_after: Option<String>,
    /// The table's columns as the feed knows them when they may differ from the capture's
    /// configured schema (a binlog reader follows `ALTER TABLE`); `None`: the configured one.
    pub schema: Option<std::sync::Arc<brewline_core::debezium::TableSchema>>,
}

/// Committed row changes of a source database, in commit order.
#[async_trait]
pub trait ChangeFeed: Send {
    /// Up to about `max` changes, waiting at most `wait` for the first. Empty when nothing
    /// came. A transaction larger than `max` may come in pieces: only its last change carries
    /// [`RowChange::resume_after`].
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<RowChange>>;

    /// How many committed changes (or, for a binlog, bytes) are not yet read.
    async fn behind(&mut self) -> Result<u64>;

    /// Rows read so far and rows in all of an initial snapshot under way; `None` when no
    /// snapshot is being read.
    fn snapshot_progress(&self) -> Option<(u64, u64)> {
        None
    }
}

/// A source whose committed changes can be followed from a position.
#[async_trait]
pub trait Capturable: Send + Sync {
    /// Follows the changes after `position` (a value of [`RowChange::resume_after`]), or from
    /// the first change when `None`.
    async fn follow(&self, position: Option<String>) -> Result<Box<dyn ChangeFeed>>;
}

/// Durable running totals (orders completed, suggestions, dead letters…) kept next to the
/// state, so a summary survives restarts.
#[async_trait]
pub trait Counters: Send + Sync {
    async fn add(&self, deltas: &[(&str, u64)]) -> Result<()>;
    async fn get(&self) -> Result<std::collections::BTreeMap<String, u64>>;

    /// Adds what records counted, each record once however often it is delivered: in one
    /// atomic write, the counts of records at or past the next offset already counted for
    /// their partition (in `scope`, a consumer group) are added, and `through` (the next offset
    /// of each partition the batch covers) becomes the next offset counted where it is further
    /// on. A batch delivered again after a crash, whole or in part, adds only what it had not.
    async fn add_counted(
        &self,
        scope: &str,
        counts: &[Counted],
        through: &[(String, i32, i64)],
    ) -> Result<()>;

    /// The next offset counted in `scope` for each of `partitions` (0 where none): the records
    /// before it were handled, their output sent and counted.
    async fn counted_through(&self, scope: &str, partitions: &[(String, i32)]) -> Result<Vec<i64>>;
}

/// A count one record makes: `counter` raised by `delta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub at: EventRef,
    pub counter: &'static str,
    pub delta: u64,
}
