//! brewline's speed layer over any engines: change capture into the log, the real-time
//! recommender, and the accept stage (suggestions customers take, written back), with dead
//! letters and the running figures they report.
//!
//! Everything here talks to engines only through `brewline-ports`; the binary decides which
//! implementations (embedded or real) to plug in.

pub mod accept;
pub mod capture;
pub mod dead_letter;
pub mod lookup_cache;
pub mod lookup_guard;
pub mod metrics;
pub mod open_orders;
pub mod recommender;
pub mod stats;

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use brewline_ports::PortError;
use tokio::sync::watch;

/// When a loop should end.
#[derive(Clone)]
pub struct StopWhen {
    /// Set when the stage upstream has finished: stop once nothing is left to read.
    pub drained: watch::Receiver<bool>,
    /// Set to stop now, after the batch in hand is done and committed.
    pub shutdown: watch::Receiver<bool>,
}

impl StopWhen {
    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn upstream_done(&self) -> bool {
        *self.drained.borrow()
    }
}

/// Failed engine calls of this process, by engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    pub errors: u64,
    pub retries: u64,
}

static FAILURES: Mutex<BTreeMap<&'static str, Failures>> = Mutex::new(BTreeMap::new());

fn count_failure(engine: &'static str, retried: bool) {
    let mut all = FAILURES.lock().unwrap_or_else(PoisonError::into_inner);
    let f = all.entry(engine).or_default();
    f.errors += 1;
    f.retries += u64::from(retried);
}

/// Failed engine calls of this process so far, by engine.
pub fn engine_failures() -> Vec<(&'static str, Failures)> {
    FAILURES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(e, f)| (*e, *f))
        .collect()
}

/// Waits longer after each retryable failure of an engine call (50 ms doubling to 5 s).
pub struct Backoff {
    what: &'static str,
    wait: Duration,
}

impl Backoff {
    pub fn new(what: &'static str) -> Backoff {
        Backoff {
            what,
            wait: Duration::from_millis(50),
        }
    }

    /// `None` after a pause when `result` failed in a way a retry may mend (call again);
    /// else `Some(result)`.
    pub async fn retry<T>(&mut self, result: Result<T, PortError>) -> Option<Result<T, PortError>> {
        match result {
            Err(e) if e.retryable => {
                count_failure(e.engine, true);
                tracing::warn!(error = %e, retry_in_ms = self.wait.as_millis() as u64, "{} failed; retrying", self.what);
                tokio::time::sleep(self.wait).await;
                self.wait = (self.wait * 2).min(Duration::from_secs(5));
                None
            }
            other => {
                if let Err(e) = &other {
                    count_failure(e.engine, false);
                }
                // Back to the shortest wait for the next failure.
                self.wait = Duration::from_millis(50);
                Some(other)
            }
        }
    }
}

/// Commits `offsets`, retrying while a retry may mend the failure.
pub async fn commit_with_retries(
    consumer: &mut dyn brewline_ports::Consumer,
    offsets: &[(String, i32, i64)],
) -> Result<(), PortError> {
    let mut backoff = Backoff::new("committing offsets");
    loop {
        if let Some(done) = backoff.retry(consumer.commit(offsets).await).await {
            return done;
        }
    }
}

/// Runs `attempt` until it succeeds or fails with an error that a retry cannot mend.
pub async fn with_retries<T, F, Fut>(what: &'static str, mut attempt: F) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PortError>>,
{
    let mut backoff = Backoff::new(what);
    loop {
        if let Some(done) = backoff.retry(attempt().await).await {
            return done;
        }
    }
}
