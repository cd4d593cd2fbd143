//! The embedded state store: per-order state, the static lookups and running counters — what
//! Redis holds in production.
//!
//! Like Redis with its append-only file, live order state is held in memory and every batch of
//! changes is made durable by appending one record — the new state of each order the batch
//! touched — to the [`journal`] before the batch's outcome is returned; on open the journal is
//! replayed. Appends are sequential, so a batch costs one write however random the order ids
//! are. Lookups and counters, small and rarely written, are in a SQLite file.
//!
//! Where Redis keeps `ordered_products:{order}`, `message_count:{order}`, the order's header and
//! `order_status:{order}` as separate keys, this store keeps them together as one
//! [`OrderState`]. An order's state expires [`EmbeddedState::ttl`] after its last change, as
//! Redis' `EXPIRE` makes it.
//!
//! All handles on one state file in a process share one in-memory state, so two workers
//! complete an order once; another process is refused while one has the file open.

mod journal;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use brewline_core::assembly::{OrderState, Step};
use brewline_core::suggestion::Lookups;
use brewline_ports::{
    Applied, Counted, Counters, LookupStore, OrderStore, PortError, Result, Suggest,
};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use rustc_hash::FxHashMap;

use crate::sqlite::{Db, PageSize};
use journal::{Journal, JournalError, Replayed};

const ENGINE: &str = "embedded state";
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lookups (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counted_through (
    scope TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (scope, topic, partition)
);
";

/// The state of one order, when it last changed, and the last batch that changed it.
struct Live {
    state: OrderState,
    touched_ms: i64,
    batch: u64,
}

/// What one batch at a time works on.
struct Working {
    orders: FxHashMap<String, Live>,
    journal: Journal,
    /// Numbers the batches, to list each order a batch touches once.
    batch: u64,
}

struct Inner {
    db: Db,
    ttl: Duration,
    working: tokio::sync::Mutex<Working>,
    /// Held while open: one process at a time.
    _lock: File,
}

/// Order state (in memory, journaled), lookups and counters (in a SQLite file).
#[derive(Clone)]
pub struct EmbeddedState {
    inner: Arc<Inner>,
}

/// Open state files of this process, so that every handle on one file shares its state.
fn registry() -> MutexGuard<'static, HashMap<PathBuf, Weak<Inner>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<Inner>>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

fn journal_error(e: JournalError) -> PortError {
    PortError::fatal(ENGINE, e)
}

fn live(replayed: Replayed) -> FxHashMap<String, Live> {
    replayed
        .into_iter()
        .map(|(id, (state, touched_ms))| {
            (
                id,
                Live {
                    state,
                    touched_ms,
                    batch: 0,
                },
            )
        })
        .collect()
}

impl EmbeddedState {
    /// Opens (creating when needed) the state at `path` (a SQLite file, with the order journal
    /// in the folder beside it of the same name and extension `journal`); order state lives
    /// for `ttl` after its last change.
    pub fn open(path: &Path, ttl: Duration) -> Result<EmbeddedState> {
        let fatal =
            |e: std::io::Error| PortError::fatal(ENGINE, format!("{}: {e}", path.display()));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(fatal)?;
        }
        // The file must exist to be canonicalised; SQLite creates it on first open anyway.
        File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(fatal)?;
        let key = path.canonicalize().map_err(fatal)?;
        let mut open = registry();
        if let Some(inner) = open.get(&key).and_then(Weak::upgrade) {
            return Ok(EmbeddedState { inner });
        }
        let lock_path = key.with_extension("lock");
        let lock_file = File::create(&lock_path).map_err(fatal)?;
        lock_file.try_lock().map_err(|_| {
            PortError::fatal(
                ENGINE,
                format!(
                    "{} is in use by another brewline process; the embedded state has one owner (stop the other process, or use Redis to share state)",
                    path.display()
                ),
            )
        })?;
        let db = Db::open(path, ENGINE, PageSize::SmallRows, SCHEMA, |_| Ok(()))?;
        let (journal, replayed) =
            Journal::open(&key.with_extension("journal"), ttl).map_err(journal_error)?;
        let inner = Arc::new(Inner {
            db,
            ttl,
            working: tokio::sync::Mutex::new(Working {
                orders: live(replayed),
                journal,
                batch: 0,
            }),
            _lock: lock_file,
        });
        open.insert(key, Arc::downgrade(&inner));
        Ok(EmbeddedState { inner })
    }

    fn cutoff(&self) -> i64 {
        crate::now_ms() - self.inner.ttl.as_millis() as i64
    }

    /// The state of one order, if it has not expired (for checks and tests).
    pub async fn order(&self, order_id: &str) -> Result<Option<OrderState>> {
        let cutoff = self.cutoff();
        Ok(self
            .inner
            .working
            .lock()
            .await
            .orders
            .get(order_id)
            .filter(|l| l.touched_ms >= cutoff)
            .map(|l| l.state.clone()))
    }
}

#[async_trait]
impl OrderStore for EmbeddedState {
    async fn apply(&self, changes: &[Applied], suggest: Suggest<'_>) -> Result<Vec<Step>> {
        // Held until the batch is durable: one batch at a time per state.
        let mut working = self.inner.working.lock().await;
        let Working {
            orders,
            journal,
            batch,
        } = &mut *working;
        *batch += 1;
        let now = crate::now_ms();
        let cutoff = now - self.inner.ttl.as_millis() as i64;
        // The orders this batch touched, each once; their states are changed in place and, if
        // the journal cannot take them, the live map is rebuilt from the journal.
        let mut touched: Vec<&str> = Vec::with_capacity(changes.len());
        let mut steps = Vec::with_capacity(changes.len());
        for a in changes {
            let id = a.change.order_id();
            let live = match orders.get_mut(id) {
                Some(live) => live,
                None => orders.entry(id.to_string()).or_insert(Live {
                    state: OrderState::default(),
                    touched_ms: now,
                    batch: 0,
                }),
            };
            if live.batch != *batch {
                if live.touched_ms < cutoff {
                    // Expired, not yet swept: starts afresh, as on a Redis key that expired.
                    live.state = OrderState::default();
                }
                live.batch = *batch;
                live.touched_ms = now;
                touched.push(id);
            }
            steps.push(live.state.apply(&a.change, &a.at, suggest));
        }
        let appended = journal.append(
            now,
            touched.iter().filter_map(|id| {
                let (id, live) = orders.get_key_value(*id)?;
                Some((id.as_str(), &live.state))
            }),
        );
        if let Err(e) = appended {
            // Put back what the journal holds; if even that fails, this worker must stop (a
            // retry would work on missing state) and a restart replays.
            *orders = live(journal.reload().map_err(|reload| {
                PortError::fatal(
                    ENGINE,
                    format!("{e}; then reloading the journal failed: {reload}"),
                )
            })?);
            return Err(PortError::retryable(ENGINE, e));
        }
        Ok(steps)
    }

    async fn expire(&self) -> Result<Vec<String>> {
        let cutoff = self.cutoff();
        let mut working = self.inner.working.lock().await;
        // Record the cutoff first: if that fails, nothing is dropped and the next call reports
        // the same orders.
        working.journal.expire(cutoff).map_err(journal_error)?;
        let mut open = Vec::new();
        working.orders.retain(|id, l| {
            let keep = l.touched_ms >= cutoff;
            if !keep && l.state.is_open() {
                open.push(id.clone());
            }
            keep
        });
        open.sort();
        Ok(open)
    }
}

#[async_trait]
impl LookupStore for EmbeddedState {
    async fn publish(&self, lookups: &Lookups) -> Result<u64> {
        let body = serde_json::to_string(lookups)
            .map_err(|e| PortError::fatal(ENGINE, format!("cannot encode lookups: {e}")))?;
        self.inner.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // The next version, and never below the time: see `LookupStore::publish`.
                let version: i64 = tx.query_row(
                    "SELECT MAX(COALESCE(MAX(version), 0) + 1, ?1) FROM lookups",
                    [brewline_ports::now_ms()],
                    |r| r.get(0),
                )?;
                tx.execute(
                    "INSERT INTO lookups (id, version, body) VALUES (1, ?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET version = excluded.version, body = excluded.body",
                    params![version, body],
                )?;
                tx.commit()?;
                Ok(version as u64)
            })
            .await
    }

    async fn version(&self) -> Result<u64> {
        self.inner
            .db
            .run(|c| {
                c.query_row("SELECT COALESCE(MAX(version), 0) FROM lookups", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .await
            .map(|v| v as u64)
    }

    async fn load(&self) -> Result<(Lookups, u64)> {
        let row: Option<(i64, String)> = self
            .inner
            .db
            .run(|c| {
                c.query_row("SELECT version, body FROM lookups WHERE id = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
            })
            .await?;
        match row {
            None => Ok((Lookups::default(), 0)),
            Some((v, body)) => serde_json::from_str(&body)
                .map(|l| (l, v as u64))
                .map_err(|e| {
                    PortError::fatal(ENGINE, format!("stored lookups are unreadable: {e}"))
                }),
        }
    }
}

#[async_trait]
impl Counters for EmbeddedState {
    async fn add(&self, deltas: &[(&str, u64)]) -> Result<()> {
        let deltas: Vec<(String, i64)> = deltas
            .iter()
            .filter(|(_, d)| *d > 0)
            .map(|(n, d)| (n.to_string(), *d as i64))
            .collect();
        if deltas.is_empty() {
            return Ok(());
        }
        self.inner
            .db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut st = tx.prepare_cached(
                        "INSERT INTO counters (name, value) VALUES (?1, ?2)
                         ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                    )?;
                    for (n, d) in &deltas {
                        st.execute(params![n, d])?;
                    }
                }
                tx.commit()
            })
            .await
    }

    async fn add_counted(
        &self,
        scope: &str,
        counts: &[Counted],
        through: &[(String, i32, i64)],
    ) -> Result<()> {
        let scope = scope.to_string();
        let counts: Vec<(String, i32, i64, &'static str, i64)> = counts
            .iter()
            .filter(|c| c.delta > 0)
            .map(|c| {
                let a = &c.at;
                (
                    a.topic.to_string(),
                    a.partition,
                    a.offset,
                    c.counter,
                    c.delta as i64,
                )
            })
            .collect();
        let through = through.to_vec();
        self.inner
            .db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut next = tx.prepare_cached(
                        "SELECT next_offset FROM counted_through
                         WHERE scope = ?1 AND topic = ?2 AND partition = ?3",
                    )?;
                    let mut before: HashMap<(String, i32), i64> = HashMap::new();
                    let mut counted = |topic: &str, p: i32| -> rusqlite::Result<i64> {
                        if let Some(n) = before.get(&(topic.to_string(), p)) {
                            return Ok(*n);
                        }
                        let n: i64 = next
                            .query_row(params![scope, topic, p], |r| r.get(0))
                            .optional()?
                            .unwrap_or(0);
                        before.insert((topic.to_string(), p), n);
                        Ok(n)
                    };
                    for (topic, p, _) in &through {
                        counted(topic, *p)?;
                    }
                    let mut raise = tx.prepare_cached(
                        "INSERT INTO counters (name, value) VALUES (?1, ?2)
                         ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                    )?;
                    for (topic, p, offset, name, delta) in &counts {
                        if *offset >= counted(topic, *p)? {
                            raise.execute(params![name, delta])?;
                        }
                    }
                    let mut moved = tx.prepare_cached(
                        "INSERT INTO counted_through (scope, topic, partition, next_offset)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (scope, topic, partition)
                         DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)",
                    )?;
                    for (topic, p, n) in &through {
                        moved.execute(params![scope, topic, p, n])?;
                    }
                }
                tx.commit()
            })
            .await
    }

    async fn counted_through(&self, scope: &str, partitions: &[(String, i32)]) -> Result<Vec<i64>> {
        let scope = scope.to_string();
        let partitions = partitions.to_vec();
        self.inner
            .db
            .run(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT next_offset FROM counted_through
                     WHERE scope = ?1 AND topic = ?2 AND partition = ?3",
                )?;
                partitions
                    .iter()
                    .map(|(t, p)| {
                        st.query_row(params![scope, t, p], |r| r.get(0))
                            .optional()
                            .map(|n| n.unwrap_or(0))
                    })
                    .collect()
            })
            .await
    }

    async fn get(&self) -> Result<BTreeMap<String, u64>> {
        self.inner
            .db
            .run(|c| {
                c.prepare("SELECT name, value FROM counters ORDER BY name")?
                    .query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                    })?
                    .collect()
            })
            .await
    }
}

#[cfg(test)]
mod tests;
