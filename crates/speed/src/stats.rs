//! The running figures of the speed layer, shared between the loops and whoever reports them
//! (progress bars, summaries, metrics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Figures since this process started.
#[derive(Debug)]
pub struct Stats {
    /// Row changes captured from the source.
    pub captured: AtomicU64,
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
    /// Time the recommender spent in each stage of its batches, in nanoseconds.
    pub stage_nanos: StageNanos,
    /// Microseconds from the source commit to the suggestion acknowledged by the log.
    /// (`None` only if the histogram could not be made, which its fixed bounds rule out.)
    latency_us: Mutex<Option<Histogram<u64>>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            captured: AtomicU64::new(0),
            order_events: AtomicU64::new(0),
            line_events: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            eligible: AtomicU64::new(0),
            suggestions: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            expired_incomplete: AtomicU64::new(0),
            stage_nanos: StageNanos::default(),
            // 1 µs to 1 hour, 3 significant digits.
            latency_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).ok()),
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
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn record_latency(&self, us: i64) {
        if let Ok(mut guard) = self.latency_us.lock() {
            if let Some(h) = guard.as_mut() {
                h.saturating_record(us.max(1) as u64);
            }
        }
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
