//! The real-time recommender: reads the CDC topics as a consumer group, assembles each order
//! in the order store, and publishes one suggestion for every eligible complete order.
//!
//! One batch is: poll → decode (bad records to the dead-letter topic) → apply to the order
//! store (completion decided there, atomically, and the suggestion made and recorded with it)
//! → send dead letters and suggestions and wait for their acknowledgement → commit the
//! offsets. With Kafka transactions the send and the commit are one transaction, which runs
//! while the next batch is applied to the store (its round trips to the cluster cost as much
//! as the store's work). Offsets are committed only after the work they cover is done, so a
//! crash redelivers the batch; the store recognises the redelivered completing event and hands
//! back the suggestion recorded for the order, which is sent again identically (even if the
//! seed or the lookups changed meanwhile). A failed engine call is retried on the same batch,
//! never skipped.
//! Decisions are made only with whole lookups: the worker waits for them at start and keeps
//! the last good ones when the store loses them ([`lookup_guard`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brewline_core::assembly::Changes;
use brewline_core::assembly::{EventRef, Step};
use brewline_core::debezium::{
    decode_with, ChangeEvent, DecodeError, Decoded, OrderLineRow, OrderRow, SourceTime,
};
use brewline_core::order::CompletedOrder;
use brewline_core::suggestion::{Lookups, Suggester};
use brewline_ports::{
    Applied, Consumed, Consumer, Counted, Counters, LookupStore, OrderStore, PortError, Producer,
    Progress, Record, Result, Transactions,
};
use serde::de::DeserializeOwned;

use crate::dead_letter::{dead_letter, refused_letter, retain_accepted, send_or_dead_letter};
use crate::lookup_guard;
use crate::open_orders::OpenOrders;
use crate::stats::{StageNanos, Stats};
use crate::{commit_with_retries, with_retries, Backoff, StopWhen};

/// Names of the durable counters the recommender keeps (see [`Counters`]).
pub mod counter {
    pub const COMPLETED: &str = "orders_completed";
    pub const ELIGIBLE: &str = "orders_eligible";
    pub const SUGGESTIONS: &str = "suggestions";
    pub const REPLAYED: &str = "suggestions_replayed";
    pub const DEAD_LETTERS: &str = "dead_letters";
    pub const EXPIRED_INCOMPLETE: &str = "orders_expired_incomplete";
}

/// Topics and pacing of the recommender.
#[derive(Debug, Clone)]
pub struct RecommenderSettings {
    pub orders_topic: String,
    pub order_details_topic: String,
    pub suggestions_topic: String,
    pub dead_letter_topic: String,
    /// The consumer group: the durable counters count each of its records once.
    pub group: String,
    /// Records per batch.
    pub batch: usize,
    /// How long a poll waits for the first record.
    pub poll_wait: Duration,
    /// How often expired order state is swept and counted.
    pub expire_every: Duration,
    /// How long the store keeps an order's state after its last change.
    pub order_ttl: Duration,
    /// How often the lookups' version is checked.
    pub lookups_every: Duration,
}

/// The engines one recommender worker uses.
pub struct Engines<'a> {
    pub consumer: &'a mut dyn Consumer,
    pub producer: &'a dyn Producer,
    pub orders: &'a dyn OrderStore,
    pub lookups: &'a dyn LookupStore,
    pub counters: &'a dyn Counters,
}

impl<'a> Engines<'a> {
    /// What handling a batch uses of the engines: shared with a publish running beside it.
    fn stores(&self) -> Stores<'_> {
        Stores {
            orders: self.orders,
            counters: self.counters,
            txn: self.consumer.transactions(),
        }
    }
}

/// The engines a batch is handled with ([`Recommender::prepare`]).
#[derive(Clone, Copy)]
struct Stores<'a> {
    orders: &'a dyn OrderStore,
    counters: &'a dyn Counters,
    /// The consumer's transactions, where the log has them.
    txn: Option<&'a dyn Transactions>,
}

/// One recommender worker.
pub struct Recommender {
    config: RecommenderSettings,
    topics: Topics,
    suggester: Suggester,
    /// The lookups decisions are made with, and their version (0: none yet).
    lookups: Lookups,
    lookups_version: u64,
    /// The store's version last refused ([`lookup_guard::refusal`]), not loaded again.
    refused_version: Option<u64>,
    /// The orders open, by where their first events are: commits stop there.
    open: OpenOrders,
    /// Per partition, the next offset whose output is not known to be sent (records before it
    /// were handled, sent and counted: read again, they only rebuild state).
    sent_through: HashMap<(Arc<str>, i32), i64>,
    /// The consumer's count of rebalances ([`Consumer::assignments`]) that `open` and
    /// `sent_through` are true for.
    assignments: u64,
    stats: Arc<Stats>,
    last_expire: Instant,
    last_lookup_check: Instant,
    last_lag_check: Instant,
}

/// How long a worker without lookups waits before looking again.
const LOOKUPS_WAIT: Duration = Duration::from_millis(500);

/// How often the consumer lag is read for the metrics.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// The topics a recommender reads, to decode records on any thread.
#[derive(Debug, Clone)]
struct Topics {
    orders: String,
    order_details: String,
}

/// A batch of records, decoded: the unit of work between two commits.
struct Batch {
    records: usize,
    /// The offsets to commit once the batch is done: the next offset of each partition.
    offsets: Vec<(String, i32, i64)>,
    order_events: u64,
    line_events: u64,
    changes: Vec<Applied>,
    /// Source commit time (µs) of each change.
    committed_at: Vec<i64>,
    dead: Vec<Record>,
    /// Where each dead letter was read.
    dead_at: Vec<EventRef>,
}

/// What a batch's completions add up to.
#[derive(Default)]
struct Tally {
    completed: u64,
    eligible: u64,
    /// Suggestions made for the first time, and sent again for a redelivered completing event.
    fresh: u64,
    replayed: u64,
    /// Completions read again below where handling got to: not sent again.
    repeats: u64,
    /// The suggestions to send.
    suggestions: Vec<Record>,
    /// The durable counts of the records that completed orders: each counted once, however
    /// often it is delivered ([`Counters::add_counted`]).
    counted: Vec<Counted>,
    /// Source commit time (µs) of each first suggestion's completing change.
    latencies: Vec<i64>,
}

/// A batch applied to the order store and tallied: what is left is to send its output and
/// commit its offsets ([`Recommender::publish`]), then to record it ([`Recommender::after`]).
struct Handled {
    batch: Batch,
    tally: Tally,
    /// What to commit with the output, where the log has transactions (computed when the
    /// batch is handled, before the next batch changes which orders are open).
    progress: Vec<Progress>,
}

/// The topics a batch's output goes to, owned so that a publish runs beside the next batch's
/// work.
#[derive(Debug, Clone)]
struct Outputs {
    dead_letters: String,
    suggestions: String,
}

/// A record that is a change of an order, with its source commit time (µs), or nothing to do.
type OrderEvent = Option<(Changes, i64)>;

fn decode_as<T: DeserializeOwned>(
    record: &Consumed,
    to_change: impl Fn(&ChangeEvent<T, SourceTime>) -> std::result::Result<Changes, DecodeError>,
) -> std::result::Result<OrderEvent, String> {
    match decode_with::<T, SourceTime>(record.record.value.as_deref()) {
        Ok(Decoded::Tombstone) => Ok(None),
        Ok(Decoded::Change(event)) => to_change(&event)
            .map(|c| Some((c, event.committed_at_us())))
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

impl Batch {
    /// The batch without its changes, once they are applied and tallied.
    fn applied(self) -> Batch {
        Batch {
            changes: Vec::new(),
            committed_at: Vec::new(),
            ..self
        }
    }

    /// Decodes records: what each means for its order, or why it is a dead letter.
    fn decode(topics: &Topics, records: Vec<Consumed>) -> Batch {
        let mut batch = Batch {
            records: records.len(),
            offsets: brewline_ports::next_offsets(&records),
            order_events: 0,
            line_events: 0,
            changes: Vec::with_capacity(records.len()),
            committed_at: Vec::with_capacity(records.len()),
            dead: Vec::new(),
            dead_at: Vec::new(),
        };
        for record in &records {
            let event = if *record.topic == *topics.orders {
                batch.order_events += 1;
                decode_as::<OrderRow>(record, ChangeEvent::<OrderRow, SourceTime>::order_changes)
            } else if *record.topic == *topics.order_details {
                batch.line_events += 1;
                decode_as::<OrderLineRow>(
                    record,
                    ChangeEvent::<OrderLineRow, SourceTime>::order_changes,
                )
            } else {
                Err(format!(
                    "record of topic {:?}, which the recommender does not read",
                    record.topic
                ))
            };
            match event {
                Ok(Some((changes, at_us))) => {
                    for change in changes {
                        batch.changes.push(Applied {
                            change,
                            at: record.event_ref(),
                        });
                        batch.committed_at.push(at_us);
                    }
                }
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, %reason, "dead-lettered");
                    batch.dead.push(dead_letter(record, &reason));
                    batch.dead_at.push(record.event_ref());
                }
            }
        }
        batch
    }
}

impl Recommender {
    /// A worker; it loads the lookups when it starts to run, and waits for them when the store
    /// has none yet.
    pub fn new(
        config: RecommenderSettings,
        suggester: Suggester,
        stats: Arc<Stats>,
    ) -> Recommender {
        Recommender {
            topics: Topics {
                orders: config.orders_topic.clone(),
                order_details: config.order_details_topic.clone(),
            },
            config,
            suggester,
            lookups: Lookups::default(),
            lookups_version: 0,
            refused_version: None,
            open: OpenOrders::default(),
            sent_through: HashMap::new(),
            assignments: 0,
            stats,
            last_expire: Instant::now(),
            last_lookup_check: Instant::now(),
            last_lag_check: Instant::now(),
        }
    }

    /// Loads the store's lookups and adopts them unless they are missing, older than those in
    /// force or lack a part ([`lookup_guard::refusal`]); a refusal keeps the lookups in force
    /// and marks the process degraded. Returns whether lookups are in force.
    async fn load_lookups(&mut self, e: &mut Engines<'_>) -> Result<bool> {
        let (lookups, version) = with_retries("loading lookups", || e.lookups.load()).await?;
        match lookup_guard::refusal(self.lookups_version, version, &lookups) {
            None => {
                if self.refused_version.take().is_some() {
                    tracing::info!(version, "the lookup store has whole lookups again");
                }
                tracing::info!(version, "lookups in force");
                self.lookups = lookups;
                self.lookups_version = version;
                self.stats.lookups_version.store(version, Ordering::Relaxed);
                self.stats.set_degraded(None);
            }
            Some(reason) => {
                if self.refused_version != Some(version) {
                    tracing::warn!(found = version, in_force = self.lookups_version, "{reason}");
                }
                self.refused_version = Some(version);
                self.stats.set_degraded(Some(reason));
            }
        }
        Ok(self.lookups_version != 0)
    }

    /// Waits until the store has lookups to decide with; `false` when told to stop first.
    async fn wait_for_lookups(&mut self, e: &mut Engines<'_>, stop: &StopWhen) -> Result<bool> {
        while !self.load_lookups(e).await? {
            if stop.shutting_down() {
                return Ok(false);
            }
            tokio::time::sleep(LOOKUPS_WAIT).await;
        }
        Ok(true)
    }

    /// Polls (waiting up to `wait`) and decodes a batch; `None` when nothing came.
    async fn next_batch(&mut self, e: &mut Engines<'_>, wait: Duration) -> Result<Option<Batch>> {
        let t = Instant::now();
        let records = e.consumer.poll(self.config.batch, wait).await?;
        StageNanos::add(&self.stats.stage_nanos.poll, t);
        if records.is_empty() {
            return Ok(None);
        }
        let t = Instant::now();
        let batch = Batch::decode(&self.topics, records);
        StageNanos::add(&self.stats.stage_nanos.decide, t);
        Ok(Some(batch))
    }

    /// Handles a decoded batch as far as its output: applies its changes to the order store,
    /// tallies what completed and, where the log has transactions, counts it and works out
    /// what to commit with its output.
    async fn prepare(&mut self, batch: Batch, e: Stores<'_>) -> Result<Handled> {
        tracing::debug!(records = batch.records, until = ?batch.offsets, "handling a batch");
        let t = Instant::now();
        let steps = self.apply(&batch, e).await?;
        self.learn_sent_through(&batch, e).await?;
        let unsent = self.note_open(&batch, &steps);
        StageNanos::add(&self.stats.stage_nanos.apply, t);
        let t = Instant::now();
        let tally = self.tally(steps, &batch, &unsent)?;
        StageNanos::add(&self.stats.stage_nanos.decide, t);
        // A batch waiting to be published keeps only its output: not its changes.
        let batch = batch.applied();
        let mut progress = Vec::new();
        if e.txn.is_some() {
            // Counted before the transaction, each record once: a transaction made again is
            // not counted twice.
            self.count(&batch, &tally, e).await?;
            progress = self.progress(&batch.offsets);
        }
        Ok(Handled {
            batch,
            tally,
            progress,
        })
    }

    /// Handles a decoded batch whole, one stage after the other: [`Self::prepare`], send its
    /// output and commit its offsets, [`Self::after`].
    async fn finish(&mut self, batch: Batch, e: &mut Engines<'_>) -> Result<()> {
        let handled = self.prepare(batch, e.stores()).await?;
        if e.consumer.transactions().is_some() {
            return self.publish_now(handled, e).await;
        }
        let t = Instant::now();
        let refused = self.send_then_commit(&handled, e).await?;
        StageNanos::add(&self.stats.stage_nanos.send, t);
        self.after(handled, refused, e).await
    }

    /// After a batch's output is sent and its offsets committed: notes how far output is
    /// sent, records its figures and counters, and does what is due of the housekeeping.
    async fn after(&mut self, handled: Handled, refused: u64, e: &mut Engines<'_>) -> Result<()> {
        let t = Instant::now();
        let Handled { batch, tally, .. } = handled;
        self.sent(&batch.offsets);
        self.record_latencies(&tally.latencies);
        let deltas = [
            (counter::REPLAYED, tally.replayed),
            (counter::DEAD_LETTERS, refused),
        ];
        with_retries("updating counters", || e.counters.add(&deltas)).await?;
        self.record(&batch, &tally, refused);
        StageNanos::add(&self.stats.stage_nanos.commit, t);
        self.housekeeping(e).await
    }

    fn outputs(&self) -> Outputs {
        Outputs {
            dead_letters: self.config.dead_letter_topic.clone(),
            suggestions: self.config.suggestions_topic.clone(),
        }
    }

    /// Without transactions: sends the output and waits for its acknowledgement, counts it,
    /// then commits the offsets. A crash between the send and the count sends the same
    /// suggestions again; never fewer. Returns how many records the log refused.
    async fn send_then_commit(&self, handled: &Handled, e: &mut Engines<'_>) -> Result<u64> {
        let (batch, tally) = (&handled.batch, &handled.tally);
        let refused = self.send(batch, tally, e).await?;
        // Counted before the commit, each record once: a crash between them counts nothing
        // twice, and nothing is left uncounted.
        self.count(batch, tally, e.stores()).await?;
        // Committed only below the oldest open order: the log rebuilds what the store loses.
        commit_with_retries(e.consumer, &self.open.hold(&batch.offsets)).await?;
        Ok(refused)
    }

    /// With transactions: sends a handled batch's output and commits its offsets, with how far
    /// the output is sent, in one transaction. A record the log refuses is dead-lettered in a
    /// new transaction; a transaction that fails in a way a retry may mend is made again.
    /// Returns how many records the log refused. Borrows nothing of the worker: it runs beside
    /// the next batch's [`Self::prepare`].
    async fn publish(txn: &dyn Transactions, to: Outputs, handled: &Handled) -> Result<u64> {
        let mut dead = handled.batch.dead.clone();
        let mut suggestions = handled.tally.suggestions.clone();
        let mut refused = 0;
        let mut backoff = Backoff::new("committing a transaction");
        loop {
            let output = [
                (to.dead_letters.as_str(), dead.as_slice()),
                (to.suggestions.as_str(), suggestions.as_slice()),
            ];
            let attempt = txn.commit(&output, &handled.progress).await;
            let err = match attempt {
                Err(err) if !err.refused.is_empty() => err,
                other => match backoff.retry(other).await {
                    Some(done) => return done.map(|()| refused),
                    None => continue,
                },
            };
            // The refused records leave the transaction, and their letters join it.
            let mut groups = [
                (to.dead_letters.clone(), dead),
                (to.suggestions.clone(), suggestions),
            ];
            let letters = retain_accepted(&mut groups, &err.refused, |topic, record, why| {
                refused_letter(topic, &record, why, Vec::new())
            });
            refused += letters.len() as u64;
            let [(_, d), (_, s)] = groups;
            dead = d.into_iter().chain(letters).collect();
            suggestions = s;
        }
    }

    /// What to commit with the batch's output: per partition, the offset held back below the
    /// oldest open order, and how far the output is sent: the batch's end, or the mark already
    /// committed where that is further (a batch read again after a rewind, a rebalance or a
    /// rebuild ends below it, and must not lower it: the next reader would send again what
    /// lies between).
    fn progress(&self, next: &[(String, i32, i64)]) -> Vec<Progress> {
        self.open
            .hold(next)
            .into_iter()
            .zip(next)
            .map(|((topic, partition, held), (_, _, sent))| {
                let sent_through = (*sent).max(self.mark(&topic, partition));
                Progress {
                    topic,
                    partition,
                    next: held,
                    sent_through,
                }
            })
            .collect()
    }

    /// The next offset of `topic`/`partition` whose output is not known to be sent (0 when
    /// nothing is known).
    fn mark(&self, topic: &str, partition: i32) -> i64 {
        self.sent_through
            .iter()
            .find(|((t, p), _)| *p == partition && &**t == topic)
            .map_or(0, |(_, next)| *next)
    }

    /// Notes which orders each change left open, and which it closed. Returns, for each
    /// change, whether its order has an event read past where output is sent (its output, if
    /// it completes, is not known to be sent).
    fn note_open(&mut self, batch: &Batch, steps: &[Step]) -> Vec<bool> {
        let now = brewline_ports::now_ms();
        let mut unsent = Vec::with_capacity(steps.len());
        for (a, step) in batch.changes.iter().zip(steps) {
            let open = matches!(step, Step::Pending);
            let past_mark = !self.handled_before(&a.at);
            unsent.push(
                self.open
                    .note(a.change.order_id(), &a.at, open, past_mark, now),
            );
        }
        self.stats
            .open_orders
            .store(self.open.len() as u64, Ordering::Relaxed);
        unsent
    }

    /// Reads where handling got to (the offsets counted) for the batch's partitions this
    /// worker has not seen yet: records before it were handled and their output sent.
    async fn learn_sent_through(&mut self, batch: &Batch, e: Stores<'_>) -> Result<()> {
        let unknown: Vec<(String, i32)> = batch
            .offsets
            .iter()
            .filter(|(t, p, _)| !self.sent_through.contains_key(&(Arc::from(t.as_str()), *p)))
            .map(|(t, p, _)| (t.clone(), *p))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let group = &self.config.group;
        // With transactions, how far output is sent is committed with it; else it is counted.
        let got = match e.txn {
            Some(txn) => {
                with_retries("reading where handling got to", || {
                    txn.sent_through(&unknown)
                })
                .await?
            }
            None => {
                with_retries("reading where handling got to", || {
                    e.counters.counted_through(group, &unknown)
                })
                .await?
            }
        };
        for ((t, p), next) in unknown.into_iter().zip(got) {
            self.sent_through.insert((Arc::from(t.as_str()), p), next);
        }
        Ok(())
    }

    /// The batch's output is sent and counted up to `next`.
    fn sent(&mut self, next: &[(String, i32, i64)]) {
        for (t, p, offset) in next {
            let known = self
                .sent_through
                .entry((Arc::from(t.as_str()), *p))
                .or_insert(0);
            *known = (*known).max(*offset);
        }
    }

    /// Whether the record at `at` was handled and its output sent before (it is read again
    /// after a restart, a rebalance or a rewind).
    fn handled_before(&self, at: &EventRef) -> bool {
        at.offset < self.mark(&at.topic, at.partition)
    }

    /// After the store lost the state, or a transaction was aborted: back to the committed
    /// offsets, below which no order is open, to read its events again (what was sent before
    /// is not sent again).
    async fn rebuild(&mut self, e: &mut Engines<'_>, why: &PortError) -> Result<()> {
        if why.aborted {
            tracing::warn!(error = %why, "transaction aborted; reading again from the committed offsets");
            Stats::add(&self.stats.transactions_aborted, 1);
        } else {
            tracing::warn!(error = %why, open = self.open.len(), "order state lost; reading the log again from the committed offsets to rebuild it");
            Stats::add(&self.stats.state_rebuilds, 1);
        }
        self.forget();
        let mut backoff = Backoff::new("rewinding to the committed offsets");
        loop {
            if let Some(done) = backoff.retry(e.consumer.rewind().await).await {
                return done;
            }
        }
    }

    /// Forgets which orders are open and how far output is sent: the log is read again from
    /// the committed offsets, and those are learnt again from what it holds.
    fn forget(&mut self) {
        self.open.clear();
        self.sent_through.clear();
    }

    /// Whether the consumer's partitions moved since the last call (a rebalance): then every
    /// partition is read again from its committed offset, maybe after another member's work
    /// on it, and what this worker knew of them is forgotten.
    fn moved(&mut self, e: &Engines<'_>) -> bool {
        let now = e.consumer.assignments();
        if now == self.assignments {
            return false;
        }
        self.assignments = now;
        tracing::info!(
            open = self.open.len(),
            "partitions moved; reading them again from the committed offsets"
        );
        Stats::add(&self.stats.rebalances, 1);
        self.forget();
        true
    }

    /// Applies the batch's changes to the order store, which decides completions and records
    /// their suggestions.
    ///
    /// A store that was out of reach meanwhile may have come back without its last writes (a
    /// Redis restarted from an append-only file flushed every second): then the batch is not
    /// sent, and the state is rebuilt from the log as after a loss ([`PortError::state_lost`]).
    async fn apply(&self, batch: &Batch, e: Stores<'_>) -> Result<Vec<Step>> {
        if batch.changes.is_empty() {
            return Ok(Vec::new());
        }
        let suggest = |order: &CompletedOrder| self.suggester.suggest(order, &self.lookups);
        let mut backoff = Backoff::new("applying order changes");
        let mut failed = false;
        loop {
            let attempt = e.orders.apply(&batch.changes, &suggest).await;
            failed |= attempt.as_ref().is_err_and(|err| err.retryable);
            if let Some(done) = backoff.retry(attempt).await {
                let steps = done?;
                if failed {
                    return Err(PortError::state_lost(
                        "recommender",
                        "the order store was out of reach and may have come back without its last writes",
                    ));
                }
                return Ok(steps);
            }
        }
    }

    /// What the store's steps add up to: orders completed, of them eligible, suggestions made
    /// for the first time and sent again for a redelivered completing event, and the records
    /// to send.
    fn tally(&self, steps: Vec<Step>, batch: &Batch, unsent: &[bool]) -> Result<Tally> {
        let mut tally = Tally::default();
        for (i, step) in steps.into_iter().enumerate() {
            let (order, first, suggestion) = match step {
                Step::Completed(order, made) => (order, true, made),
                Step::Replayed(order, recorded) => (order, false, recorded),
                Step::Pending | Step::AlreadyComplete | Step::Cancelled => continue,
            };
            let at = &batch.changes[i].at;
            if !unsent[i] {
                // Read again to rebuild state: its suggestion was sent and counted.
                tally.repeats += 1;
                continue;
            }
            let eligible = self.lookups.is_eligible(&order.header);
            if first {
                tally.completed += 1;
                tally.eligible += u64::from(eligible);
            }
            // A completion replayed is counted too: it was not if the batch that made it
            // crashed before counting; the store of counters knows which records it counted.
            for (counter, counts) in [
                (counter::COMPLETED, true),
                (counter::ELIGIBLE, eligible),
                (counter::SUGGESTIONS, suggestion.is_some()),
            ] {
                if counts {
                    tally.counted.push(Counted {
                        at: at.clone(),
                        counter,
                        delta: 1,
                    });
                }
            }
            if let Some(s) = suggestion {
                if first {
                    tally.fresh += 1;
                    tally.latencies.push(batch.committed_at[i]);
                } else {
                    tally.replayed += 1;
                }
                let value = serde_json::to_vec(&s).map_err(|e| {
                    PortError::fatal("recommender", format!("cannot encode a suggestion: {e}"))
                })?;
                tally
                    .suggestions
                    .push(Record::keyed(s.order_id.into_bytes(), Some(value)));
            }
        }
        Ok(tally)
    }

    /// Sends the batch's dead letters, then its suggestions, and waits for their
    /// acknowledgement. Returns how many suggestions the log refused and were dead-lettered.
    async fn send(&self, batch: &Batch, tally: &Tally, e: &mut Engines<'_>) -> Result<u64> {
        let dlq = &self.config.dead_letter_topic;
        let none = |_| Vec::new();
        if !batch.dead.is_empty() {
            send_or_dead_letter(e.producer, dlq, &batch.dead, dlq, none).await?;
        }
        if tally.suggestions.is_empty() {
            return Ok(0);
        }
        let suggestions = &self.config.suggestions_topic;
        send_or_dead_letter(e.producer, suggestions, &tally.suggestions, dlq, none).await
    }

    /// Commit → suggestion acknowledged, for each suggestion made for the first time.
    fn record_latencies(&self, committed_at_us: &[i64]) {
        let acked_us = brewline_ports::now_us();
        for at in committed_at_us {
            self.stats.record_latency(acked_us - at);
        }
    }

    /// The batch's durable counters of its records, each counted once: completions, eligible
    /// orders, suggestions, dead letters.
    async fn count(&self, batch: &Batch, tally: &Tally, e: Stores<'_>) -> Result<()> {
        let mut counted = tally.counted.clone();
        counted.extend(batch.dead_at.iter().map(|at| Counted {
            at: at.clone(),
            counter: counter::DEAD_LETTERS,
            delta: 1,
        }));
        with_retries("updating counters", || {
            e.counters
                .add_counted(&self.config.group, &counted, &batch.offsets)
        })
        .await
    }

    /// The batch's figures in this process: events in and out per topic, and running totals.
    fn record(&self, batch: &Batch, tally: &Tally, refused: u64) {
        let dead_count = batch.dead.len() as u64 + refused;
        let c = &self.config;
        let stats = &self.stats;
        stats.events_in.add(&c.orders_topic, batch.order_events);
        stats
            .events_in
            .add(&c.order_details_topic, batch.line_events);
        stats.events_out.add(
            &c.suggestions_topic,
            tally.suggestions.len() as u64 - refused,
        );
        stats.events_out.add(&c.dead_letter_topic, dead_count);
        Stats::add(&stats.order_events, batch.order_events);
        Stats::add(&stats.line_events, batch.line_events);
        Stats::add(&stats.completed, tally.completed);
        Stats::add(&stats.eligible, tally.eligible);
        Stats::add(&stats.suggestions, tally.fresh);
        Stats::add(&stats.replayed, tally.replayed);
        Stats::add(&stats.dead_letters, dead_count);
    }

    /// Sweeps expired order state and picks up new lookups, each on its own schedule.
    async fn housekeeping(&mut self, e: &mut Engines<'_>) -> Result<()> {
        if self.last_expire.elapsed() >= self.config.expire_every {
            self.last_expire = Instant::now();
            let ttl_ms = self.config.order_ttl.as_millis() as i64;
            self.open.expire(brewline_ports::now_ms() - ttl_ms);
            let expired = with_retries("expiring order state", || e.orders.expire()).await?;
            if !expired.is_empty() {
                tracing::warn!(
                    count = expired.len(),
                    first = %expired[0],
                    "orders expired before all their lines arrived"
                );
                let n = expired.len() as u64;
                Stats::add(&self.stats.expired_incomplete, n);
                let delta = [(counter::EXPIRED_INCOMPLETE, n)];
                with_retries("updating counters", || e.counters.add(&delta)).await?;
            }
        }
        if self.last_lag_check.elapsed() >= LAG_EVERY {
            self.last_lag_check = Instant::now();
            let lag = e.consumer.lag().await;
            match lag {
                Ok(lag) => self.stats.consumer_lag.store(lag, Ordering::Relaxed),
                Err(err) => tracing::warn!(error = %err, "reading the consumer lag failed"),
            }
        }
        if self.last_lookup_check.elapsed() >= self.config.lookups_every {
            self.last_lookup_check = Instant::now();
            let version = with_retries("checking lookups", || e.lookups.version()).await?;
            if version != self.lookups_version && Some(version) != self.refused_version {
                self.load_lookups(e).await?;
            }
        }
        Ok(())
    }

    /// Handles `batch`. With transactions, its Redis work runs while the batch handled before
    /// it (`pending`) is published, and it is left pending in turn when `more` is read ahead
    /// (else it is published now: nothing would overlap it, and its suggestions would wait).
    async fn step(
        &mut self,
        batch: Batch,
        pending: &mut Option<Handled>,
        more: bool,
        e: &mut Engines<'_>,
    ) -> Result<()> {
        if e.consumer.transactions().is_none() {
            return self.finish(batch, e).await;
        }
        let handled = match pending.take() {
            None => self.prepare(batch, e.stores()).await,
            Some(before) => {
                let (published, handled) = {
                    let stores = e.stores();
                    let txn = stores.txn.ok_or_else(no_transactions)?;
                    let publish = self.timed_publish(txn, &before);
                    tokio::join!(publish, self.prepare(batch, stores))
                };
                // The batch before is done even when this one failed: then this one is read
                // again after the rebuild, the one before is not.
                self.after(before, published?, e).await?;
                handled
            }
        };
        let handled = handled?;
        if more {
            *pending = Some(handled);
            return Ok(());
        }
        self.publish_now(handled, e).await
    }

    /// Publishes a handled batch and records it.
    async fn publish_now(&mut self, handled: Handled, e: &mut Engines<'_>) -> Result<()> {
        let txn = e.consumer.transactions().ok_or_else(no_transactions)?;
        let refused = self.timed_publish(txn, &handled).await?;
        self.after(handled, refused, e).await
    }

    /// [`Self::publish`], its time added to the send stage; borrows nothing of the worker.
    fn timed_publish<'a>(
        &self,
        txn: &'a dyn Transactions,
        handled: &'a Handled,
    ) -> impl std::future::Future<Output = Result<u64>> + 'a {
        let (to, stats) = (self.outputs(), self.stats.clone());
        async move {
            let t = Instant::now();
            let refused = Self::publish(txn, to, handled).await;
            StageNanos::add(&stats.stage_nanos.send, t);
            refused
        }
    }

    /// Recommends until told to stop; with `stop.drained`, stops once every record is read.
    ///
    /// While a batch is applied, the records ready after it are decoded on another thread;
    /// with transactions, a batch is published while the next one is applied. A batch read
    /// ahead is never committed before it is handled, nor a batch handled before the partitions
    /// moved: they are simply read again.
    pub async fn run(&mut self, e: &mut Engines<'_>, stop: StopWhen) -> Result<()> {
        if self.lookups_version == 0 && !self.wait_for_lookups(e, &stop).await? {
            return Ok(());
        }
        let mut ahead: Option<tokio::task::JoinHandle<Batch>> = None;
        // Handled, not yet published: only while a batch is read ahead.
        let mut pending: Option<Handled> = None;
        let mut backoff = Backoff::new("reading the CDC topics");
        loop {
            if stop.shutting_down() {
                return match pending.take() {
                    Some(handled) => match self.publish_now(handled, e).await {
                        // Not committed: read again next time.
                        Err(lost) if lost.state_lost || lost.aborted => Ok(()),
                        done => done,
                    },
                    None => Ok(()),
                };
            }
            let upstream_done = stop.upstream_done();
            let batch = match ahead.take() {
                Some(decoding) => {
                    let t = Instant::now();
                    let batch = decoding.await.map_err(|e| {
                        PortError::fatal("recommender", format!("decoding failed: {e}"))
                    })?;
                    StageNanos::add(&self.stats.stage_nanos.decide, t);
                    Some(batch)
                }
                None => {
                    let polled = self.next_batch(e, self.config.poll_wait).await;
                    // A batch is read on one side of a rebalance: after this one, if any.
                    if self.moved(e) {
                        pending = None;
                    }
                    match backoff.retry(polled).await {
                        Some(result) => result?,
                        None => continue,
                    }
                }
            };
            let Some(batch) = batch else {
                self.housekeeping(e).await?;
                if upstream_done && e.consumer.lag().await? == 0 {
                    return Ok(());
                }
                continue;
            };
            let t = Instant::now();
            match e.consumer.poll(self.config.batch, Duration::ZERO).await {
                Ok(next) if !next.is_empty() => {
                    let topics = self.topics.clone();
                    ahead = Some(tokio::task::spawn_blocking(move || {
                        Batch::decode(&topics, next)
                    }));
                }
                Ok(_) => {}
                Err(err) if err.retryable => {
                    tracing::warn!(error = %err, "reading ahead failed; reading again after this batch");
                }
                Err(err) => return Err(err),
            }
            StageNanos::add(&self.stats.stage_nanos.poll, t);
            if self.moved(e) {
                // Read before the partitions moved: maybe another member's now, and read again
                // from the committed offsets where still this one's. Not handled, and the
                // batch handled before it not published (it would commit offsets of
                // partitions this member may no longer hold).
                pending = None;
                continue;
            }
            match self.step(batch, &mut pending, ahead.is_some(), e).await {
                Ok(()) => {}
                Err(lost) if lost.state_lost || lost.aborted => {
                    // What was read ahead or handled and not published is read again after
                    // the rewind.
                    ahead = None;
                    pending = None;
                    self.rebuild(e, &lost).await?;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

fn no_transactions() -> PortError {
    PortError::fatal("recommender", "the consumer has no transactions")
}

#[cfg(test)]
mod tests {
    use super::*;
    use brewline_core::suggestion::RandomStrategy;

    fn recommender() -> Recommender {
        let config = RecommenderSettings {
            orders_topic: "orders".into(),
            order_details_topic: "lines".into(),
            suggestions_topic: "suggestions".into(),
            dead_letter_topic: "dlq".into(),
            group: "g".into(),
            batch: 10,
            poll_wait: Duration::from_millis(10),
            expire_every: Duration::from_secs(60),
            order_ttl: Duration::from_secs(90),
            lookups_every: Duration::from_millis(0),
        };
        let suggester = Suggester::new(1, Box::new(RandomStrategy));
        Recommender::new(config, suggester, Arc::new(Stats::default()))
    }

    /// Found by the chaos run (seed 2: Redis killed and flushed, then a rebalance): a batch
    /// read again below the committed mark committed its own end as the mark, lowering it, and
    /// the member that took the partition next sent 17 suggestions again.
    #[test]
    fn a_batch_read_again_below_the_sent_mark_does_not_lower_it() {
        let mut r = recommender();
        r.sent_through.insert((Arc::from("lines"), 0), 120);
        let progress = r.progress(&[("lines".into(), 0, 80), ("lines".into(), 1, 30)]);
        assert_eq!(progress[0].sent_through, 120, "kept: read again below it");
        assert_eq!(
            progress[1].sent_through, 30,
            "nothing known: the batch's end"
        );
        r.sent(&[("lines".into(), 0, 150)]);
        assert_eq!(r.progress(&[("lines".into(), 0, 150)])[0].sent_through, 150);
        let at = |offset| EventRef {
            topic: Arc::from("lines"),
            partition: 0,
            offset,
        };
        assert!(r.handled_before(&at(149)));
        assert!(!r.handled_before(&at(150)));
    }
}
