//! One batch run at a time per lake: a lease in the lake itself, so that runs on different
//! machines (an Airflow worker and a cron job) exclude each other, and a run killed without a
//! chance to release it blocks the next one only until its lease ends.
//!
//! The lease is a chain of small objects `_lock/{n}` written with a conditional put (create
//! only if absent: atomic on a filesystem, `If-None-Match` on S3). The latest one says who
//! holds the lake and until when; a run takes the lake by creating the next one, which only
//! one run can do, and only when the latest is released or expired. A holder renews its lease
//! while it runs, and finds out it lost the lake (it stalled past its lease and another run
//! took over) when a later object exists: it then publishes nothing more. A holder of the same
//! host whose process is gone (killed) is known dead at once: its lease is not waited out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::lake::Lake;
use crate::{BatchError, Result};

/// Where the lease objects live under the lake's root.
const DIR: &str = "_lock";
/// How long a lease lasts without renewal: a killed run blocks the lake at most this long.
pub const LEASE: Duration = Duration::from_secs(60);

/// Who holds the lake, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    run_id: String,
    host: String,
    pid: u32,
    expires_ms: i64,
    released: bool,
}

impl Holder {
    /// Whether the lake is still held: not released, the lease not run out, and the holder not
    /// known to be gone (a process of this host that no longer runs: killed).
    fn holds(&self, now_ms: i64) -> bool {
        !self.released && self.expires_ms > now_ms && !self.gone()
    }

    fn gone(&self) -> bool {
        self.host == hostname()
            && self.pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// The lake, held by this process's run until [`RunLock::release`].
pub struct RunLock {
    store: Arc<dyn ObjectStore>,
    n: u64,
    holder: Holder,
    lease: Duration,
    lost: Arc<AtomicBool>,
    renewing: tokio::task::JoinHandle<()>,
}

fn entry(n: u64) -> Path {
    Path::from(format!("{DIR}/{n:020}.json"))
}

fn error(e: impl std::fmt::Display) -> BatchError {
    BatchError::lake(DIR, e)
}

/// The number of the latest lease object and what it says.
async fn latest(store: &dyn ObjectStore) -> Result<Option<(u64, Holder)>> {
    use futures_util::TryStreamExt;
    let listed: Vec<_> = store
        .list(Some(&Path::from(DIR)))
        .try_collect()
        .await
        .map_err(error)?;
    let Some(n) = listed
        .iter()
        .filter_map(|m| {
            m.location
                .filename()?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()
        })
        .max()
    else {
        return Ok(None);
    };
    match store.get(&entry(n)).await {
        Ok(got) => {
            let bytes = got.bytes().await.map_err(error)?;
            let holder =
                serde_json::from_slice(&bytes).map_err(|e| error(format!("{}: {e}", entry(n))))?;
            Ok(Some((n, holder)))
        }
        // Released and cleaned up between the list and the read: free.
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(error(e)),
    }
}

async fn write(store: &dyn ObjectStore, n: u64, holder: &Holder, mode: PutMode) -> Result<()> {
    let body = serde_json::to_vec(holder).map_err(error)?;
    store
        .put_opts(
            &entry(n),
            PutPayload::from(body),
            PutOptions {
                mode,
                ..PutOptions::default()
            },
        )
        .await
        .map(drop)
        .map_err(error)
}

impl RunLock {
    /// Takes the lake for `run_id` for a [`LEASE`]; fails, naming the holder, when another run
    /// holds it.
    pub async fn acquire(lake: &Lake, run_id: &str) -> Result<RunLock> {
        RunLock::acquire_for(lake, run_id, LEASE).await
    }

    /// [`RunLock::acquire`] with a lease of `lease`, renewed every third of it.
    pub async fn acquire_for(lake: &Lake, run_id: &str, lease: Duration) -> Result<RunLock> {
        let store = lake.store()?;
        let now = brewline_ports::now_ms();
        let (n, previous) = match latest(store.as_ref()).await? {
            Some((n, h)) => (n, Some(h)),
            None => (0, None),
        };
        if let Some(h) = previous.as_ref().filter(|h| h.holds(now)) {
            return Err(busy(h, now));
        }
        let holder = Holder {
            run_id: run_id.to_string(),
            host: hostname(),
            pid: std::process::id(),
            expires_ms: now + lease.as_millis() as i64,
            released: false,
        };
        match write(store.as_ref(), n + 1, &holder, PutMode::Create).await {
            Ok(()) => {}
            Err(_) => {
                // Another run created it first: it holds the lake now.
                let (_, h) = latest(store.as_ref())
                    .await?
                    .ok_or_else(|| error("lease vanished"))?;
                return Err(busy(&h, brewline_ports::now_ms()));
            }
        }
        if let Some(h) = previous.filter(|h| !h.released) {
            tracing::warn!(run = %h.run_id, host = %h.host, pid = h.pid, "took over the lake from a run whose lease ran out (killed?)");
        }
        // The chain's older links are history: best effort.
        if n > 0 {
            let _ = store.delete(&entry(n)).await;
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewing = tokio::spawn(renew(
            store.clone(),
            n + 1,
            holder.clone(),
            lease,
            lost.clone(),
        ));
        Ok(RunLock {
            store,
            n: n + 1,
            holder,
            lease,
            lost,
            renewing,
        })
    }

    /// An error when the lease was lost (this run stalled past it and another took the lake):
    /// called before each publication.
    pub fn ensure_held(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(BatchError::Locked(format!(
                "run {} lost the lake's lease (it stalled for more than {:.0} s and another run took over); it publishes nothing more",
                self.holder.run_id,
                self.lease.as_secs_f64()
            )));
        }
        Ok(())
    }

    /// Gives the lake back.
    pub async fn release(self) {
        self.renewing.abort();
        if self.lost.load(Ordering::SeqCst) {
            return;
        }
        let released = Holder {
            released: true,
            ..self.holder.clone()
        };
        if let Err(e) = write(self.store.as_ref(), self.n, &released, PutMode::Overwrite).await {
            tracing::warn!(error = %e, "releasing the lake's lease failed; it ends on its own within {:.0} s", self.lease.as_secs_f64());
        }
    }
}

/// Renews the lease every third of it, until a later lease object shows it was lost.
async fn renew(
    store: Arc<dyn ObjectStore>,
    n: u64,
    mut holder: Holder,
    lease: Duration,
    lost: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(lease / 3).await;
        match latest(store.as_ref()).await {
            Ok(Some((latest, _))) if latest != n => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading the lake's lease failed"),
        }
        holder.expires_ms = brewline_ports::now_ms() + lease.as_millis() as i64;
        if let Err(e) = write(store.as_ref(), n, &holder, PutMode::Overwrite).await {
            tracing::warn!(error = %e, "renewing the lake's lease failed; trying again");
        }
    }
}

fn busy(h: &Holder, now_ms: i64) -> BatchError {
    BatchError::Locked(format!(
        "run {} (host {}, pid {}) is building this lake; its lease ends in {} s unless it renews it. One run at a time: try again after it",
        h.run_id,
        h.host,
        h.pid,
        ((h.expires_ms - now_ms).max(0) + 999) / 1000
    ))
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake() -> (tempfile::TempDir, Lake) {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::at(dir.path().to_str().unwrap());
        (dir, lake)
    }

    fn locked(e: BatchError) -> String {
        match e {
            BatchError::Locked(m) => m,
            other => panic!("not a lock error: {other}"),
        }
    }

    #[tokio::test]
    async fn one_run_at_a_time_and_the_next_once_it_is_released() {
        let (_dir, lake) = lake();
        let a = RunLock::acquire(&lake, "run-a").await.unwrap();
        let why = locked(RunLock::acquire(&lake, "run-b").await.err().unwrap());
        assert!(
            why.contains("run run-a") && why.contains("try again"),
            "{why}"
        );
        a.release().await;
        let b = RunLock::acquire(&lake, "run-b").await.unwrap();
        b.ensure_held().unwrap();
        b.release().await;
    }

    #[tokio::test]
    async fn a_killed_run_blocks_the_lake_only_until_its_lease_ends() {
        let (_dir, lake) = lake();
        let killed = RunLock::acquire_for(&lake, "run-killed", Duration::from_millis(400))
            .await
            .unwrap();
        // Killed: it neither renews nor releases.
        killed.renewing.abort();
        std::mem::forget(killed);
        let why = locked(RunLock::acquire(&lake, "run-b").await.err().unwrap());
        assert!(why.contains("run-killed"), "{why}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let b = RunLock::acquire(&lake, "run-b").await.unwrap();
        b.release().await;
    }

    #[tokio::test]
    async fn a_killed_run_of_this_host_is_not_waited_for() {
        let (_dir, lake) = lake();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let store = lake.store().unwrap();
        let killed = Holder {
            run_id: "run-killed".into(),
            host: hostname(),
            pid: dead,
            expires_ms: brewline_ports::now_ms() + 60_000,
            released: false,
        };
        write(store.as_ref(), 1, &killed, PutMode::Create)
            .await
            .unwrap();
        let b = RunLock::acquire(&lake, "run-b").await.unwrap();
        b.release().await;
        // One of another host is waited for.
        let elsewhere = Holder {
            host: "another-host".into(),
            ..killed
        };
        write(store.as_ref(), 3, &elsewhere, PutMode::Create)
            .await
            .unwrap();
        let why = locked(RunLock::acquire(&lake, "run-c").await.err().unwrap());
        assert!(why.contains("another-host"), "{why}");
    }

    #[tokio::test]
    async fn a_run_that_stalled_past_its_lease_knows_it_lost_the_lake() {
        let (_dir, lake) = lake();
        let lease = Duration::from_millis(300);
        let stalled = RunLock::acquire_for(&lake, "run-stalled", lease)
            .await
            .unwrap();
        // Another run took over (as after the stalled run's lease ran out).
        let store = lake.store().unwrap();
        let taker = Holder {
            run_id: "run-b".into(),
            host: "h".into(),
            pid: 1,
            expires_ms: brewline_ports::now_ms() + 60_000,
            released: false,
        };
        write(store.as_ref(), stalled.n + 1, &taker, PutMode::Create)
            .await
            .unwrap();
        tokio::time::sleep(lease).await;
        let why = locked(stalled.ensure_held().err().unwrap());
        assert!(why.contains("lost the lake's lease"), "{why}");
        stalled.release().await;
        let (_, latest) = latest(store.as_ref()).await.unwrap().unwrap();
        assert_eq!(latest, taker, "the loser leaves the taker's lease alone");
    }
}
