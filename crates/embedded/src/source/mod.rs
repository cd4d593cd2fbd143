//! The embedded source database: `coffee_shop` in SQLite, with a changelog that triggers fill
//! in the same transaction as each row change — the embedded stand-in for MySQL's row binlog.
//!
//! Every write goes through [`EmbeddedSource`], which numbers its transactions so that the
//! change feed can hand out whole transactions and resume after the last one it delivered.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use brewline_core::debezium::{Op, Source, TableSchema};
use brewline_core::names;
use brewline_core::order::NewOrder;
use brewline_core::reference::{
    Category, Customer, DimensionExtract, PaymentMethod, Product, ReferenceData, Store, Tier,
    Versioned,
};
use brewline_core::suggestion::Suggestion;
use brewline_ports::{
    Capturable, ChangeFeed, PortError, Result, RowChange, SourceCounts, SourceDb,
};
use rusqlite::functions::FunctionFlags;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::Notify;

use crate::sqlite::{Db, PageSize};

const ENGINE: &str = "embedded source";
const SCHEMA: &str = include_str!("schema.sql");

/// The tables whose changes are captured.
fn captured_tables() -> [TableSchema; 2] {
    let (server, db) = (names::CDC_TOPIC_PREFIX, names::SOURCE_DATABASE);
    [
        TableSchema::orders(server, db),
        TableSchema::order_details(server, db),
    ]
}

/// Triggers that copy each insert, update and delete of `table` into `changelog`, with the row
/// images as JSON objects of the table's columns.
fn capture_triggers(table: &TableSchema) -> String {
    let image = |row: &str| {
        let fields: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("'{0}', {row}.\"{0}\"", c.name))
            .collect();
        format!("json_object({})", fields.join(", "))
    };
    let t = &table.table;
    let trigger = |name: &str, event: &str, op: &str, before: &str, after: &str| {
        format!(
            "CREATE TRIGGER IF NOT EXISTS {t}_{name} AFTER {event} ON {t} BEGIN
                 INSERT INTO changelog (txn, tbl, op, before, after, ts_us)
                 VALUES (brewline_txn(), '{t}', '{op}', {before}, {after}, brewline_txn_us());
             END;\n"
        )
    };
    [
        trigger("insert", "INSERT", "c", "NULL", &image("NEW")),
        trigger("update", "UPDATE", "u", &image("OLD"), &image("NEW")),
        trigger("delete", "DELETE", "d", &image("OLD"), "NULL"),
    ]
    .concat()
}

/// The transaction now being written: its number and start time, read by the triggers.
#[derive(Default)]
struct TxnClock {
    txn: AtomicI64,
    started_us: AtomicI64,
}

/// `coffee_shop` in a SQLite file.
#[derive(Clone)]
pub struct EmbeddedSource {
    db: Db,
    path: PathBuf,
    clock: Arc<TxnClock>,
    committed: Arc<Notify>,
}

impl EmbeddedSource {
    /// Opens (creating when needed) the database at `path`, with its tables and triggers.
    pub fn open(path: &Path) -> Result<EmbeddedSource> {
        let clock = Arc::new(TxnClock::default());
        let for_functions = clock.clone();
        let triggers: String = captured_tables().iter().map(capture_triggers).collect();
        let db = Db::open(
            path,
            ENGINE,
            PageSize::SmallRows,
            &format!("{SCHEMA}\n{triggers}"),
            move |conn| register_clock(conn, for_functions),
        )?;
        let last: i64 = db.blocking(|c| {
            c.query_row("SELECT COALESCE(MAX(txn), 0) FROM changelog", [], |r| {
                r.get(0)
            })
        })?;
        clock.txn.store(last, Ordering::SeqCst);
        Ok(EmbeddedSource {
            db,
            path: path.to_path_buf(),
            clock,
            committed: Arc::new(Notify::new()),
        })
    }

    /// Runs `f` in one transaction of its own; its row changes reach the changelog together.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let clock = self.clock.clone();
        let out = self
            .db
            .run(move |conn| {
                clock.txn.fetch_add(1, Ordering::SeqCst);
                clock.started_us.store(crate::now_us(), Ordering::SeqCst);
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let out = f(&tx)?;
                tx.commit()?;
                Ok(out)
            })
            .await?;
        self.committed.notify_waiters();
        Ok(out)
    }

    /// Runs SQL statements in one transaction, as an operator or a test would; changes to
    /// `orders` and `order_details` reach the change feed.
    pub async fn execute(&self, sql: &str) -> Result<()> {
        let sql = sql.to_string();
        self.write(move |tx| tx.execute_batch(&sql)).await
    }

    /// Runs one query returning a single integer (for checks and tests).
    pub async fn query_i64(&self, sql: &str) -> Result<i64> {
        let sql = sql.to_string();
        self.db
            .run(move |c| c.query_row(&sql, [], |r| r.get(0)))
            .await
    }
}

fn register_clock(conn: &Connection, clock: Arc<TxnClock>) -> rusqlite::Result<()> {
    let c = clock.clone();
    conn.create_scalar_function("brewline_txn", 0, FunctionFlags::SQLITE_UTF8, move |_| {
        Ok(c.txn.load(Ordering::SeqCst))
    })?;
    conn.create_scalar_function(
        "brewline_txn_us",
        0,
        FunctionFlags::SQLITE_UTF8,
        move |_| Ok(clock.started_us.load(Ordering::SeqCst)),
    )
}

#[async_trait]
impl SourceDb for EmbeddedSource {
    async fn init_schema(&self) -> Result<()> {
        // Tables and triggers are created on open; this checks they are there.
        let n = self
            .query_i64("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('orders', 'order_details', 'changelog')")
            .await?;
        match n {
            3 => Ok(()),
            _ => Err(PortError::fatal(
                ENGINE,
                format!("{}: schema incomplete", self.path.display()),
            )),
        }
    }

    async fn seed_reference(&self, reference: &ReferenceData) -> Result<()> {
        let r = reference.clone();
        self.write(move |tx| {
            let now = crate::now_ms();
            let mut st = tx.prepare_cached(
                "INSERT INTO stores (id, name, address, district, city, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, address = excluded.address,
                     district = excluded.district, city = excluded.city, updated_at = excluded.updated_at
                 WHERE (name, address, district, city)
                     IS NOT (excluded.name, excluded.address, excluded.district, excluded.city)",
            )?;
            for s in &r.stores {
                st.execute(params![s.id, s.name, s.address, s.district, s.city, now])?;
            }
            let mut st = tx.prepare_cached(
                "INSERT INTO payment_method (id, method_name, bank, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET method_name = excluded.method_name,
                     bank = excluded.bank, updated_at = excluded.updated_at
                 WHERE (method_name, bank) IS NOT (excluded.method_name, excluded.bank)",
            )?;
            for p in &r.payment_methods {
                st.execute(params![p.id, p.method_name, p.bank, now])?;
            }
            let mut st = tx.prepare_cached(
                "INSERT INTO product_category (id, name, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, updated_at = excluded.updated_at
                 WHERE name IS NOT excluded.name",
            )?;
            for c in &r.categories {
                st.execute(params![c.id, c.name, now])?;
            }
            let mut st = tx.prepare_cached(
                "INSERT INTO products (id, name, category_id, unit_price, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                     category_id = excluded.category_id, unit_price = excluded.unit_price,
                     updated_at = excluded.updated_at
                 WHERE (name, category_id, unit_price)
                     IS NOT (excluded.name, excluded.category_id, excluded.unit_price)",
            )?;
            for p in &r.products {
                st.execute(params![p.id, p.name, p.category_id, p.unit_price, now])?;
            }
            let mut st = tx.prepare_cached(
                "INSERT INTO customers (id, name, phone_number, tier, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                     phone_number = excluded.phone_number, tier = excluded.tier,
                     updated_at = excluded.updated_at
                 WHERE (name, phone_number, tier)
                     IS NOT (excluded.name, excluded.phone_number, excluded.tier)",
            )?;
            for c in &r.customers {
                st.execute(params![c.id, c.name, c.phone_number, c.tier.as_str(), now])?;
            }
            Ok(())
        })
        .await
    }

    async fn load_reference(&self) -> Result<ReferenceData> {
        self.db
            .run(|c| {
                let customers = c
                    .prepare("SELECT id, name, phone_number, tier FROM customers ORDER BY id")?
                    .query_map([], |r| {
                        let tier: String = r.get(3)?;
                        Ok(Customer {
                            id: r.get(0)?,
                            name: r.get(1)?,
                            phone_number: r.get(2)?,
                            tier: Tier::parse(&tier).unwrap_or(Tier::Regular),
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(read_dimensions(c)?.into_reference(customers))
            })
            .await
    }

    async fn extract_dimensions(&self) -> Result<DimensionExtract> {
        self.db.run(|c| read_dimensions(c)).await
    }

    async fn insert_orders(&self, orders: &[NewOrder]) -> Result<()> {
        let orders = orders.to_vec();
        let clock = self.clock.clone();
        self.db
            .run(move |conn| {
                for o in &orders {
                    clock.txn.fetch_add(1, Ordering::SeqCst);
                    let now = crate::now_us();
                    clock.started_us.store(now, Ordering::SeqCst);
                    let tx =
                        conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    tx.prepare_cached(
                        "INSERT INTO orders (id, timestamp, customer_id, store_id,
                             payment_method_id, num_products, status)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'completed')",
                    )?
                    .execute(params![
                        o.id,
                        now / 1000,
                        o.customer_id,
                        o.store_id,
                        o.payment_method_id,
                        o.num_products()
                    ])?;
                    let mut line = tx.prepare_cached(
                        "INSERT INTO order_details (order_id, product_id, quantity,
                             discount_percent, subtotal, is_suggestion)
                         VALUES (?1, ?2, ?3, 0, ?4, 0)",
                    )?;
                    for l in &o.lines {
                        line.execute(params![o.id, l.product_id, l.quantity, l.subtotal])?;
                    }
                    drop(line);
                    tx.commit()?;
                }
                Ok(())
            })
            .await?;
        self.committed.notify_waiters();
        Ok(())
    }

    async fn accept_suggestions(&self, suggestions: &[Suggestion]) -> Result<u64> {
        let suggestions = suggestions.to_vec();
        let clock = self.clock.clone();
        let written = self
            .db
            .run(move |conn| {
                clock.txn.fetch_add(1, Ordering::SeqCst);
                clock.started_us.store(crate::now_us(), Ordering::SeqCst);
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let mut written = 0;
                {
                    let mut st = tx.prepare_cached(
                        "INSERT OR IGNORE INTO order_details (order_id, product_id, quantity,
                             discount_percent, subtotal, is_suggestion)
                         SELECT ?1, ?2, ?3, ?4, ?5, 1 WHERE EXISTS (SELECT 1 FROM orders WHERE id = ?1)",
                    )?;
                    for s in &suggestions {
                        written += st.execute(params![
                            s.order_id,
                            s.product_id,
                            s.quantity,
                            s.discount_percent,
                            s.subtotal
                        ])? as u64;
                    }
                }
                tx.commit()?;
                Ok(written)
            })
            .await?;
        self.committed.notify_waiters();
        Ok(written)
    }

    async fn counts(&self) -> Result<SourceCounts> {
        self.db
            .run(|c| {
                let n = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0));
                Ok(SourceCounts {
                    orders: n("SELECT COUNT(*) FROM orders")? as u64,
                    order_lines: n("SELECT COUNT(*) FROM order_details WHERE is_suggestion = 0")?
                        as u64,
                })
            })
            .await
    }
}

#[async_trait]
impl Capturable for EmbeddedSource {
    async fn follow(&self, position: Option<String>) -> Result<Box<dyn ChangeFeed>> {
        let after = match position {
            None => 0,
            Some(p) => p.parse::<i64>().map_err(|_| {
                PortError::fatal(
                    ENGINE,
                    format!("position {p:?} is not a changelog sequence number"),
                )
            })?,
        };
        let db = Db::open(&self.path, ENGINE, PageSize::SmallRows, "", |_| Ok(()))?;
        Ok(Box::new(EmbeddedChangeFeed {
            db,
            after,
            committed: self.committed.clone(),
        }))
    }
}

/// Follows `changelog` after a sequence number.
pub struct EmbeddedChangeFeed {
    db: Db,
    after: i64,
    committed: Arc<Notify>,
}

struct LogRow {
    seq: i64,
    txn: i64,
    table: String,
    op: String,
    before: Option<String>,
    after: Option<String>,
    ts_us: i64,
}

fn read_rows(c: &Connection, after: i64, max: usize) -> rusqlite::Result<Vec<LogRow>> {
    let map = |r: &rusqlite::Row<'_>| {
        Ok(LogRow {
            seq: r.get(0)?,
            txn: r.get(1)?,
            table: r.get(2)?,
            op: r.get(3)?,
            before: r.get(4)?,
            after: r.get(5)?,
            ts_us: r.get(6)?,
        })
    };
    let mut rows: Vec<LogRow> = c
        .prepare_cached(
            "SELECT seq, txn, tbl, op, before, after, ts_us FROM changelog
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?
        .query_map(params![after, max as i64], map)?
        .collect::<rusqlite::Result<_>>()?;
    // Never cut a transaction: take the rest of the last one.
    if let Some(last) = rows.last() {
        let (seq, txn) = (last.seq, last.txn);
        let rest: Vec<LogRow> = c
            .prepare_cached(
                "SELECT seq, txn, tbl, op, before, after, ts_us FROM changelog
                 WHERE seq > ?1 AND txn = ?2 ORDER BY seq",
            )?
            .query_map(params![seq, txn], map)?
            .collect::<rusqlite::Result<_>>()?;
        rows.extend(rest);
    }
    Ok(rows)
}

fn parse_image(
    text: Option<String>,
    seq: i64,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            PortError::fatal(
                ENGINE,
                format!("changelog row {seq} has a bad row image: {e}"),
            )
        })
    })
    .transpose()
}

impl EmbeddedChangeFeed {
    fn to_changes(rows: Vec<LogRow>) -> Result<Vec<RowChange>> {
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let txn_ends = rows.get(i + 1).is_none_or(|next| next.txn != row.txn);
            let op = Op::parse(&row.op).ok_or_else(|| {
                PortError::fatal(
                    ENGINE,
                    format!("changelog row {} has op {:?}", row.seq, row.op),
                )
            })?;
            out.push(RowChange {
                table: row.table.clone(),
                op,
                before: parse_image(row.before.clone(), row.seq)?,
                after: parse_image(row.after.clone(), row.seq)?,
                source: Source {
                    ts_ms: row.ts_us / 1000,
                    ts_us: Some(row.ts_us),
                    ts_ns: Some(row.ts_us.saturating_mul(1000)),
                    snapshot: Some("false".into()),
                    db: names::SOURCE_DATABASE.into(),
                    table: Some(row.table.clone()),
                    file: "changelog".into(),
                    pos: row.seq,
                    row: 0,
                    ..Source::default()
                },
                resume_after: txn_ends.then(|| row.seq.to_string()),
                schema: None,
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl ChangeFeed for EmbeddedChangeFeed {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<RowChange>> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.committed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let after = self.after;
            let rows = self
                .db
                .run(move |c| read_rows(c, after, max.max(1)))
                .await?;
            if let Some(last) = rows.last() {
                self.after = last.seq;
                return Self::to_changes(rows);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            // Woken by a commit of this process; other processes' commits are seen by polling.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
        }
    }

    async fn behind(&mut self) -> Result<u64> {
        let after = self.after;
        let last: Option<i64> = self
            .db
            .run(|c| {
                c.query_row("SELECT MAX(seq) FROM changelog", [], |r| r.get(0))
                    .optional()
                    .map(Option::flatten)
            })
            .await?;
        Ok(last.map_or(0, |l| (l - after).max(0) as u64))
    }
}

/// Every dimension row with its `updated_at` (epoch ms).
fn read_dimensions(c: &rusqlite::Connection) -> rusqlite::Result<DimensionExtract> {
    fn versioned<T>(
        c: &rusqlite::Connection,
        sql: &str,
        row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Vec<Versioned<T>>> {
        c.prepare(sql)?
            .query_map([], |r| {
                Ok(Versioned {
                    row: row(r)?,
                    updated_at_ms: r.get("updated_at")?,
                })
            })?
            .collect()
    }
    Ok(DimensionExtract {
        stores: versioned(
            c,
            "SELECT id, name, address, district, city, updated_at FROM stores ORDER BY id",
            |r| {
                Ok(Store {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    address: r.get(2)?,
                    district: r.get(3)?,
                    city: r.get(4)?,
                })
            },
        )?,
        payment_methods: versioned(
            c,
            "SELECT id, method_name, bank, updated_at FROM payment_method ORDER BY id",
            |r| {
                Ok(PaymentMethod {
                    id: r.get(0)?,
                    method_name: r.get(1)?,
                    bank: r.get(2)?,
                })
            },
        )?,
        categories: versioned(
            c,
            "SELECT id, name, updated_at FROM product_category ORDER BY id",
            |r| {
                Ok(Category {
                    id: r.get(0)?,
                    name: r.get(1)?,
                })
            },
        )?,
        // Products in the order they were loaded: the menu's order.
        products: versioned(
            c,
            "SELECT id, name, category_id, unit_price, updated_at FROM products ORDER BY rowid",
            |r| {
                Ok(Product {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    category_id: r.get(2)?,
                    unit_price: r.get(3)?,
                })
            },
        )?,
    })
}

#[cfg(test)]
mod tests;
