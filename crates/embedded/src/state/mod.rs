//! The embedded state store: per-order state, the static lookups and running counters — what
//! Redis holds in production.
//!
//! Like Redis with its append-only file, live order state is held in memory and every batch of
//! changes is made durable by appending one journal entry — the new state of each order the
//! batch touched — before the batch's outcome is returned. On open the journal of the last TTL
//! is replayed; older entries are trimmed from its head. Appends are sequential, so a batch costs
//! one write however random the order ids are.
//!
//! Where Redis keeps `ordered_products:{order}`, `message_count:{order}`, the order's header and
//! `order_status:{order}` as separate keys, this store keeps them together as one
//! [`OrderState`]. An order's state expires [`EmbeddedState::ttl`] after its last change, as
//! Redis' `EXPIRE` makes it.
//!
//! All handles on one state file in a process share one in-memory state, so two workers
//! complete an order once; another process is refused while one has the file open.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use brewline_core::assembly::{OrderState, Step};
use brewline_core::suggestion::{Lookups, Suggestion};
use brewline_ports::{Applied, Counters, LookupStore, OrderStore, PortError, Result};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use rustc_hash::FxHashMap;

use crate::sqlite::{Db, PageSize};

const ENGINE: &str = "embedded state";
const SCHEMA: &str = "
-- One entry per applied batch: a JSON object from order id to the order's new state.
CREATE TABLE IF NOT EXISTS order_journal (
    seq INTEGER PRIMARY KEY,
    touched_ms INTEGER NOT NULL,
    states TEXT NOT NULL
);
-- touched_ms grows with seq, so this index is appended to, never split in the middle.
CREATE INDEX IF NOT EXISTS order_journal_touched ON order_journal (touched_ms);
CREATE TABLE IF NOT EXISTS lookups (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// The state of one order and when it last changed.
#[derive(Clone)]
struct Live {
    state: OrderState,
    touched_ms: i64,
}

/// What one batch at a time works on.
struct Working {
    orders: FxHashMap<String, Live>,
    /// The journal entry being encoded, kept between batches to reuse its memory.
    entry: Vec<u8>,
}

struct Inner {
    db: Db,
    ttl: Duration,
    working: tokio::sync::Mutex<Working>,
    /// Held while open: one process at a time.
    _lock: File,
}

/// Order state, lookups and counters in a SQLite file.
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

impl EmbeddedState {
    /// Opens (creating when needed) the state at `path`; order state lives for `ttl` after its
    /// last change.
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
        let db = Db::open(path, ENGINE, PageSize::LargeRows, SCHEMA, |_| Ok(()))?;
        let live = Self::replay(&db)?;
        let inner = Arc::new(Inner {
            db,
            ttl,
            working: tokio::sync::Mutex::new(Working {
                orders: live,
                entry: Vec::new(),
            }),
            _lock: lock_file,
        });
        open.insert(key, Arc::downgrade(&inner));
        Ok(EmbeddedState { inner })
    }

    /// Every order state the journal still holds. States older than the TTL are kept too, so
    /// that [`OrderStore::expire`] counts the orders that expired incomplete while no process
    /// was running.
    fn replay(db: &Db) -> Result<FxHashMap<String, Live>> {
        let entries: Vec<(i64, String)> = db.blocking(|c| {
            c.prepare("SELECT touched_ms, states FROM order_journal ORDER BY seq")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })?;
        let mut live = FxHashMap::default();
        for (touched_ms, text) in entries {
            let states: HashMap<String, OrderState> = serde_json::from_str(&text).map_err(|e| {
                PortError::fatal(ENGINE, format!("journal entry is unreadable: {e}"))
            })?;
            for (id, state) in states {
                live.insert(id, Live { state, touched_ms });
            }
        }
        Ok(live)
    }

    fn cutoff(&self) -> i64 {
        crate::now_ms() - self.inner.ttl.as_millis() as i64
    }

    /// Appends the new states of the `touched` orders (taken out of `live`) to the journal, then
    /// puts them back in `live`. If the append fails, `live` is rebuilt from the journal.
    async fn journal(
        &self,
        live: &mut FxHashMap<String, Live>,
        entry: &mut Vec<u8>,
        touched: FxHashMap<String, OrderState>,
        now: i64,
    ) -> Result<()> {
        let mut buffer = std::mem::take(entry);
        buffer.clear();
        let written = match serde_json::to_writer(&mut buffer, &touched) {
            Ok(()) => {
                self.inner
                    .db
                    .run(move |c| {
                        let text =
                            std::str::from_utf8(&buffer).map_err(rusqlite::Error::Utf8Error)?;
                        c.prepare_cached(
                            "INSERT INTO order_journal (touched_ms, states) VALUES (?1, ?2)",
                        )?
                        .execute(params![now, text])?;
                        Ok(buffer)
                    })
                    .await
            }
            Err(e) => Err(PortError::fatal(
                ENGINE,
                format!("cannot encode order state: {e}"),
            )),
        };
        match written {
            Ok(buffer) => *entry = buffer,
            Err(e) => {
                // Put back what the journal holds; if even that fails, this worker must stop
                // (a retry would work on missing state) and a restart replays.
                *live = Self::replay(&self.inner.db).map_err(|replay| {
                    PortError::fatal(
                        ENGINE,
                        format!("{e}; then reloading the journal failed: {replay}"),
                    )
                })?;
                return Err(e);
            }
        }
        live.reserve(touched.len());
        for (id, state) in touched {
            live.insert(
                id,
                Live {
                    state,
                    touched_ms: now,
                },
            );
        }
        Ok(())
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
    async fn apply(&self, changes: &[Applied]) -> Result<Vec<Step>> {
        // Held until the batch is durable and installed: one batch at a time per state.
        let mut working = self.inner.working.lock().await;
        let Working {
            orders: live,
            entry,
        } = &mut *working;
        let now = crate::now_ms();
        let cutoff = now - self.inner.ttl.as_millis() as i64;
        // The touched states are taken out of the live map and put back once the journal has
        // them; if the journal write fails, the live map is rebuilt from the journal.
        let mut touched: FxHashMap<String, OrderState> =
            FxHashMap::with_capacity_and_hasher(changes.len(), Default::default());
        let mut steps = Vec::with_capacity(changes.len());
        for a in changes {
            let id = a.change.order_id();
            let state = match touched.get_mut(id) {
                Some(state) => state,
                None => {
                    let state = live
                        .remove(id)
                        .filter(|l| l.touched_ms >= cutoff)
                        .map(|l| l.state)
                        .unwrap_or_default();
                    touched.entry(id.to_string()).or_insert(state)
                }
            };
            steps.push(state.apply(&a.change, &a.at));
        }
        self.journal(live, entry, touched, now).await?;
        Ok(steps)
    }

    async fn remember(&self, suggestions: &[Suggestion]) -> Result<()> {
        if suggestions.is_empty() {
            return Ok(());
        }
        let mut working = self.inner.working.lock().await;
        let Working {
            orders: live,
            entry,
        } = &mut *working;
        let mut touched: FxHashMap<String, OrderState> = FxHashMap::default();
        for s in suggestions {
            if let Some(l) = live.remove(&s.order_id) {
                let mut state = l.state;
                state.remember(s.clone());
                touched.insert(s.order_id.clone(), state);
            }
        }
        self.journal(live, entry, touched, crate::now_ms()).await
    }

    async fn expire(&self) -> Result<Vec<String>> {
        let cutoff = self.cutoff();
        let mut working = self.inner.working.lock().await;
        // Trim the journal first: if that fails, nothing is dropped and the next call reports
        // the same orders.
        self.inner
            .db
            .run(move |c| {
                c.execute("DELETE FROM order_journal WHERE touched_ms < ?1", [cutoff])
                    .map(drop)
            })
            .await?;
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
                let version: i64 = tx
                    .query_row("SELECT COALESCE(MAX(version), 0) + 1 FROM lookups", [], |r| {
                        r.get(0)
                    })?;
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
