//! The embedded state store: per-order state, the static lookups and running counters in
//! SQLite — what Redis holds in production.
//!
//! Where Redis keeps `ordered_products:{order}`, `message_count:{order}`, the order's header
//! and `order_status:{order}` as separate keys, this store keeps one row per order holding the
//! same [`OrderState`], written in the same transaction as every other change of its batch. An
//! order's state expires [`EmbeddedState::ttl`] after its last change, as Redis' `EXPIRE` does.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use brewline_core::assembly::{OrderState, Step};
use brewline_core::suggestion::Lookups;
use brewline_ports::{Applied, Counters, LookupStore, OrderStore, PortError, Result};
use rusqlite::{params, OptionalExtension};

use crate::sqlite::Db;

const ENGINE: &str = "embedded state";
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS order_state (
    order_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    touched_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS order_state_touched ON order_state (touched_ms);
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

/// Order state, lookups and counters in a SQLite file.
#[derive(Clone)]
pub struct EmbeddedState {
    db: Db,
    ttl: Duration,
}

impl EmbeddedState {
    pub fn open(path: &Path, ttl: Duration) -> Result<EmbeddedState> {
        Ok(EmbeddedState {
            db: Db::open(path, ENGINE, SCHEMA, |_| Ok(()))?,
            ttl,
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The stored state of one order, if it has not expired (for checks and tests).
    pub async fn order(&self, order_id: &str) -> Result<Option<OrderState>> {
        let id = order_id.to_string();
        let cutoff = crate::now_ms() - self.ttl.as_millis() as i64;
        let text: Option<String> = self
            .db
            .run(move |c| {
                c.query_row(
                    "SELECT state FROM order_state WHERE order_id = ?1 AND touched_ms >= ?2",
                    params![id, cutoff],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        text.map(|t| decode_state(&t)).transpose()
    }
}

fn decode_state(text: &str) -> Result<OrderState> {
    serde_json::from_str(text)
        .map_err(|e| PortError::fatal(ENGINE, format!("stored order state is unreadable: {e}")))
}

#[async_trait]
impl OrderStore for EmbeddedState {
    async fn apply(&self, changes: Vec<Applied>) -> Result<Vec<Step>> {
        let ttl_ms = self.ttl.as_millis() as i64;
        self.db
            .run(move |c| {
                let now = crate::now_ms();
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let mut touched: HashMap<String, OrderState> = HashMap::new();
                let mut steps = Vec::with_capacity(changes.len());
                {
                    let mut load = tx.prepare_cached(
                        "SELECT state FROM order_state WHERE order_id = ?1 AND touched_ms >= ?2",
                    )?;
                    for a in &changes {
                        let id = a.change.order_id();
                        if !touched.contains_key(id) {
                            let text: Option<String> = load
                                .query_row(params![id, now - ttl_ms], |r| r.get(0))
                                .optional()?;
                            let state = match text {
                                Some(t) => match decode_state(&t) {
                                    Ok(s) => s,
                                    Err(e) => return Ok(Err(e)),
                                },
                                None => OrderState::default(),
                            };
                            touched.insert(id.to_string(), state);
                        }
                        if let Some(state) = touched.get_mut(id) {
                            steps.push(state.apply(&a.change, &a.at));
                        }
                    }
                    let mut save = tx.prepare_cached(
                        "INSERT INTO order_state (order_id, state, touched_ms) VALUES (?1, ?2, ?3)
                         ON CONFLICT (order_id) DO UPDATE SET state = excluded.state,
                             touched_ms = excluded.touched_ms",
                    )?;
                    for (id, state) in &touched {
                        let text = serde_json::to_string(state)
                            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                        save.execute(params![id, text, now])?;
                    }
                }
                tx.commit()?;
                Ok(Ok(steps))
            })
            .await?
    }

    async fn expire(&self) -> Result<Vec<String>> {
        let cutoff = crate::now_ms() - self.ttl.as_millis() as i64;
        let rows: Vec<(String, String)> = self
            .db
            .run(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let rows = tx
                    .prepare("SELECT order_id, state FROM order_state WHERE touched_ms < ?1")?
                    .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                tx.execute("DELETE FROM order_state WHERE touched_ms < ?1", [cutoff])?;
                tx.commit()?;
                Ok(rows)
            })
            .await?;
        let mut open = Vec::new();
        for (id, text) in rows {
            if decode_state(&text)?.is_open() {
                open.push(id);
            }
        }
        Ok(open)
    }
}

#[async_trait]
impl LookupStore for EmbeddedState {
    async fn publish(&self, lookups: &Lookups) -> Result<u64> {
        let body = serde_json::to_string(lookups)
            .map_err(|e| PortError::fatal(ENGINE, format!("cannot encode lookups: {e}")))?;
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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
        self.db
            .run(|c| c.query_row("SELECT COALESCE(MAX(version), 0) FROM lookups", [], |r| r.get::<_, i64>(0)))
            .await
            .map(|v| v as u64)
    }

    async fn load(&self) -> Result<(Lookups, u64)> {
        let row: Option<(i64, String)> = self
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
                .map_err(|e| PortError::fatal(ENGINE, format!("stored lookups are unreadable: {e}"))),
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
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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
        self.db
            .run(|c| {
                c.prepare("SELECT name, value FROM counters ORDER BY name")?
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
                    .collect()
            })
            .await
    }
}

#[cfg(test)]
mod tests;
