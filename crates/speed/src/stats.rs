//! The running figures of the speed layer, shared between the loops and whoever reports them
//! (progress bars, summaries, metrics).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Figures since this process started.
#[derive(Debug)]
pub struct Stats {
    /// Row changes captured from the source.
    pub captured: AtomicU64,
    /// Row changes captured, by table and Debezium op code.
    pub captured_rows: ByTableOp,
    /// Milliseconds between a captured change's commit and its capture, as of the last batch
    /// (0 once the capture has caught up).
    pub capture_lag_ms: AtomicU64,
    /// Rows of the initial snapshot read so far, and in all.
    pub snapshot_rows: AtomicU64,
    pub snapshot_total: AtomicU64,
    /// Change events read from the `orders` topic.
    pub order_events: AtomicU64,
    /// Change events read from the `order_details` topic.
    pub line_events: AtomicU64,
    pub dead_letters: AtomicU64,
    pub completed: AtomicU64,
    pub eligible: AtomicU64,
    pub suggestions: AtomicU64,
    /// Suggestions sent again because their completing event was delivered again.
    pub replayed: AtomicU64,
    pub expired_incomplete: AtomicU64,
    /// Orders the tills wrote to the source.
    pub orders_written: AtomicU64,
    /// Suggestions customers accepted, written back to the source.
    pub suggestions_accepted: AtomicU64,
    /// Lookup cache loads published.
    pub lookup_loads: AtomicU64,
    /// Version of the lookups a recommender decides with (0: none yet).
    pub lookups_version: AtomicU64,
    /// Orders a recommender holds open (their first events hold the commits back).
    pub open_orders: AtomicU64,
    /// Times a recommender found its order state lost and rebuilt it from the log.
    pub state_rebuilds: AtomicU64,
    /// Transactions a recommender aborted (its partitions moved, the cluster failed it) and
    /// made again from the committed offsets.
    pub transactions_aborted: AtomicU64,
    /// Times a recommender's partitions moved (a rebalance of its group).
    pub rebalances: AtomicU64,
    /// Why the process is degraded (it decides with lookups the store no longer has, or
    /// waits for lookups), if it is.
    degraded: Mutex<Option<String>>,
    /// Records read, by topic.
    pub events_in: ByTopic,
    /// Records written and acknowledged, by topic.
    pub events_out: ByTopic,
    /// Records in the consumed topics not yet committed (as last asked).
    pub consumer_lag: AtomicU64,
    /// Time the recommender spent in each stage of its batches, in nanoseconds.
    pub stage_nanos: StageNanos,
    /// Microseconds from the source commit to the suggestion acknowledged by the log.
    /// (`None` only if the histogram could not be made, which its fixed bounds rule out.)
    latency_us: Mutex<Option<Histogram<u64>>>,
    /// The same latencies in the exported histogram's buckets (not cumulative), with their
    /// count and sum.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

/// Upper bounds of the exported latency histogram's buckets, in seconds.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A counter per topic.
#[derive(Debug, Default)]
pub struct ByTopic(Mutex<BTreeMap<String, u64>>);

impl ByTopic {
    pub fn add(&self, topic: &str, n: u64) {
        if n == 0 {
            return;
        }
        if let Ok(mut map) = self.0.lock() {
            match map.get_mut(topic) {
                Some(count) => *count += n,
                None => {
                    map.insert(topic.to_string(), n);
                }
            }
        }
    }

    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.0
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    pub fn get(&self, topic: &str) -> u64 {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(topic).copied())
            .unwrap_or(0)
    }
}

/// A counter per table and operation.
#[derive(Debug, Default)]
pub struct ByTableOp(Mutex<BTreeMap<(String, &'static str), u64>>);

impl ByTableOp {
    pub fn add(&self, table: &str, op: &'static str, n: u64) {
        if let Ok(mut map) = self.0.lock() {
            *map.entry((table.to_string(), op)).or_default() += n;
        }
    }

    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        self.0
            .lock()
            .map(|m| m.iter().map(|((t, o), n)| (t.clone(), *o, *n)).collect())
            .unwrap_or_default()
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            captured: AtomicU64::new(0),
            captured_rows: ByTableOp::default(),
            capture_lag_ms: AtomicU64::new(0),
            snapshot_rows: AtomicU64::new(0),
            snapshot_total: AtomicU64::new(0),
            order_events: AtomicU64::new(0),
            line_events: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            eligible: AtomicU64::new(0),
            suggestions: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            expired_incomplete: AtomicU64::new(0),
            orders_written: AtomicU64::new(0),
            suggestions_accepted: AtomicU64::new(0),
            lookup_loads: AtomicU64::new(0),
            lookups_version: AtomicU64::new(0),
            open_orders: AtomicU64::new(0),
            state_rebuilds: AtomicU64::new(0),
            transactions_aborted: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            degraded: Mutex::new(None),
            events_in: ByTopic::default(),
            events_out: ByTopic::default(),
            consumer_lag: AtomicU64::new(0),
            stage_nanos: StageNanos::default(),
            // 1 µs to 1 hour, 3 significant digits.
            latency_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).ok()),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
        }
    }
}

/// Where a recommender's time goes, per stage of a batch (nanoseconds, summed).
#[derive(Debug, Default)]
pub struct StageNanos {
    /// Waiting for and reading records.
    pub poll: AtomicU64,
    /// Decoding change events and choosing suggestions.
    pub decide: AtomicU64,
    /// Applying changes to the order store.
    pub apply: AtomicU64,
    /// Sending suggestions and dead letters, until acknowledged.
    pub send: AtomicU64,
    /// Committing offsets and counters.
    pub commit: AtomicU64,
}

impl StageNanos {
    pub(crate) fn add(counter: &AtomicU64, since: std::time::Instant) {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// (stage, seconds) for each stage.
    pub fn seconds(&self) -> [(&'static str, f64); 5] {
        let s = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        [
            ("poll", s(&self.poll)),
            ("decide", s(&self.decide)),
            ("apply", s(&self.apply)),
            ("send", s(&self.send)),
            ("commit", s(&self.commit)),
        ]
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Stats {
    /// Says why the process is degraded, or (`None`) that it is not any more.
    pub fn set_degraded(&self, reason: Option<String>) {
        if let Ok(mut d) = self.degraded.lock() {
            *d = reason;
        }
    }

    /// Why the process is degraded, if it is.
    pub fn degraded(&self) -> Option<String> {
        self.degraded.lock().ok().and_then(|d| d.clone())
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn record_latency(&self, us: i64) {
        let us = us.max(1) as u64;
        if let Ok(mut guard) = self.latency_us.lock() {
            if let Some(h) = guard.as_mut() {
                h.saturating_record(us);
            }
        }
        let seconds = us as f64 / 1e6;
        if let Some(i) = LATENCY_BUCKETS_SECONDS.iter().position(|b| seconds <= *b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The count in each bucket of [`LATENCY_BUCKETS_SECONDS`] (not cumulative), the count of
    /// all and their sum (µs).
    pub fn latency_buckets(&self) -> ([u64; LATENCY_BUCKETS_SECONDS.len()], u64, u64) {
        (
            self.latency_buckets
                .each_ref()
                .map(|b| b.load(Ordering::Relaxed)),
            self.latency_count.load(Ordering::Relaxed),
            self.latency_sum_us.load(Ordering::Relaxed),
        )
    }

    pub fn latency(&self) -> Latency {
        match self.latency_us.lock().as_deref() {
            Ok(Some(h)) if !h.is_empty() => Latency {
                count: h.len(),
                p50_us: h.value_at_quantile(0.50),
                p99_us: h.value_at_quantile(0.99),
                max_us: h.max(),
            },
            _ => Latency::default(),
        }
    }
}
