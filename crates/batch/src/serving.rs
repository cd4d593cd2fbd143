//! The batch view the serving layer reads.
//!
//! A run that publishes gold ends by writing a manifest ([`MANIFEST`]): the run, when its data
//! ends, and the version of every table it read or wrote. The serving layer reads the marts at
//! those versions, so it never sees half a run, and the offsets bronze had landed at its
//! version, where the speed layer's increments start (the Lambda merge's watermark).

use std::collections::{BTreeMap, HashMap};

use brewline_core::sales::{Header, HeldOrders, Line, OrderRows, Sales, SalesBook};
use deltalake::arrow::array::RecordBatch;
use deltalake::datafusion::prelude::{col, lit, SessionContext};
use serde::{Deserialize, Serialize};

use crate::job::Layer;
use crate::lake::{self, column, FromArray, Lake};
use crate::{BatchError, Result};

/// Where the manifest of the last published run is, under the lake's root.
pub const MANIFEST: &str = "_serving/batch_view.json";

/// How far the batch view reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub run_id: String,
    /// When the run published its gold layer (epoch ms).
    pub published_ms: i64,
    /// The latest order time in the facts (epoch ms; `None`: no orders yet).
    pub through_ms: Option<i64>,
    /// The version of each table the run read or wrote.
    pub versions: BTreeMap<String, i64>,
}

/// Writes the manifest of a run whose gold layer was just published (`ctx` holds its tables).
pub(crate) async fn publish(
    lake: &Lake,
    ctx: &SessionContext,
    run_id: &str,
    versions: BTreeMap<String, i64>,
) -> Result<Watermark> {
    let through = query(
        ctx,
        "SELECT MAX(ordered_at_ms) AS through_ms FROM fact_orders",
    )
    .await?;
    let watermark = Watermark {
        run_id: run_id.to_string(),
        published_ms: brewline_ports::now_ms(),
        through_ms: through
            .iter()
            .map(|b| column::<i64>(b, "fact_orders", "through_ms"))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .flatten()
            .max(),
        versions,
    };
    let bytes = serde_json::to_vec_pretty(&watermark).map_err(|e| BatchError::lake(MANIFEST, e))?;
    lake.put_file(MANIFEST, bytes).await?;
    Ok(watermark)
}

/// Where the versions of the bronze tables a silver layer was built from are kept.
const SILVER_INPUTS: &str = "_serving/silver_inputs.json";

/// What a published silver layer was built from.
#[derive(Debug, Serialize, Deserialize)]
struct SilverInputs {
    silver: BTreeMap<String, i64>,
    bronze: BTreeMap<String, i64>,
}

/// Records, after silver is published, the versions it was built from.
pub(crate) async fn record_silver_inputs(
    lake: &Lake,
    versions: &BTreeMap<String, i64>,
) -> Result<()> {
    let inputs = SilverInputs {
        silver: Layer::Silver.versions_in(versions),
        bronze: Layer::Bronze.versions_in(versions),
    };
    let bytes =
        serde_json::to_vec_pretty(&inputs).map_err(|e| BatchError::lake(SILVER_INPUTS, e))?;
    lake.put_file(SILVER_INPUTS, bytes).await
}

/// In `versions` (of a run that builds gold on a published silver), the bronze versions that
/// silver was built from, when it is the silver [`record_silver_inputs`] recorded; else they
/// stay the current ones (a lake built before the record existed).
pub(crate) async fn bronze_of_silver(
    lake: &Lake,
    versions: &mut BTreeMap<String, i64>,
) -> Result<()> {
    let Some(bytes) = lake.get_file(SILVER_INPUTS).await? else {
        return Ok(());
    };
    let inputs: SilverInputs =
        serde_json::from_slice(&bytes).map_err(|e| BatchError::lake(SILVER_INPUTS, e))?;
    if inputs.silver == Layer::Silver.versions_in(versions) {
        versions.extend(inputs.bronze);
    } else {
        tracing::warn!("the published silver is not the one {SILVER_INPUTS} records: the serving watermark is the current bronze");
    }
    Ok(())
}

async fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let df = ctx.sql(sql).await.map_err(|e| BatchError::lake(sql, e))?;
    df.collect().await.map_err(|e| BatchError::lake(sql, e))
}

/// The silver tables an order's rows are looked up in.
const ORDER_TABLES: [(&str, &str); 3] = [
    ("silver/orders", "silver_orders"),
    ("silver/order_lines", "silver_order_lines"),
    ("silver/suggestions", "silver_suggestions"),
];

/// The marts the figures are read from.
const MARTS: [(&str, &str); 6] = [
    ("mart/revenue_daily", "revenue_daily"),
    ("mart/suggestions_daily", "suggestions_daily"),
    ("mart/revenue_hourly", "revenue_hourly"),
    ("mart/revenue_store_daily", "revenue_store_daily"),
    ("mart/revenue_city_daily", "revenue_city_daily"),
    ("mart/revenue_product_daily", "revenue_product_daily"),
];

/// The last published run's figures, and its orders' rows for the speed layer to build on.
pub struct BatchView {
    /// `None`: no run was published yet (the figures are empty, the speed layer starts at the
    /// beginning of the topics).
    pub watermark: Option<Watermark>,
    pub book: SalesBook,
    /// Orders with lines or a suggestion but no `orders` row in the view.
    pub orphans: HashMap<String, OrderRows>,
    /// The orders whose `orders` row the view holds.
    pub held: HeldOrders,
    lake: Lake,
    ctx: SessionContext,
}

/// Values of `name` in every row of `batches`, with `None` for a null.
fn values<T: FromArray>(
    batches: &[RecordBatch],
    table: &str,
    name: &str,
) -> Result<Vec<Option<T>>> {
    let mut out = Vec::new();
    for b in batches {
        out.extend(column::<T>(b, table, name)?);
    }
    Ok(out)
}

/// Integers of `name`, nulls as 0 (sums over nothing).
fn ints(batches: &[RecordBatch], table: &str, name: &str) -> Result<Vec<i64>> {
    Ok(values::<i64>(batches, table, name)?
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect())
}

fn texts(batches: &[RecordBatch], table: &str, name: &str) -> Result<Vec<String>> {
    Ok(values::<String>(batches, table, name)?
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect())
}

/// The columns of [`Sales`] and the names the marts give them.
const SALES_COLUMNS: [&str; 8] = [
    "orders",
    "lines",
    "quantity",
    "revenue",
    "accepted_suggestions",
    "accepted_revenue",
    "suggestions",
    "offered_revenue",
];

/// Adds each row of a mart (`batches` of `table`) to `map` under its key: the figures of the
/// columns it has, 0 for those it has not.
fn add_rows<K: Ord>(
    map: &mut BTreeMap<K, Sales>,
    keys: impl IntoIterator<Item = K>,
    batches: &[RecordBatch],
    table: &str,
) -> Result<()> {
    let rows = lake::rows(batches);
    let has = |name: &str| {
        batches
            .first()
            .is_some_and(|b| b.schema().column_with_name(name).is_some())
    };
    let mut columns = Vec::with_capacity(SALES_COLUMNS.len());
    for name in SALES_COLUMNS {
        columns.push(if has(name) {
            ints(batches, table, name)?
        } else {
            vec![0; rows]
        });
    }
    for (i, key) in keys.into_iter().enumerate() {
        let row = Sales {
            orders: columns[0][i],
            lines: columns[1][i],
            quantity: columns[2][i],
            revenue: columns[3][i],
            accepted: columns[4][i],
            accepted_revenue: columns[5][i],
            suggestions: columns[6][i],
            offered_revenue: columns[7][i],
        };
        let figures = map.entry(key).or_default();
        *figures = figures.plus(&row);
    }
    Ok(())
}

/// The watermark of the last published run, from its manifest (`None`: no run published).
pub async fn watermark(lake: &Lake) -> Result<Option<Watermark>> {
    match lake.get_file(MANIFEST).await? {
        Some(bytes) => Ok(Some(
            serde_json::from_slice::<Watermark>(&bytes)
                .map_err(|e| BatchError::lake(MANIFEST, format!("unreadable: {e}")))?,
        )),
        None => Ok(None),
    }
}

impl BatchView {
    /// The view of the last published run (an empty one when there is none).
    pub async fn load(lake: &Lake) -> Result<BatchView> {
        let ctx = SessionContext::new();
        let watermark = watermark(lake).await?;
        let mut view = BatchView {
            watermark,
            book: SalesBook::default(),
            orphans: HashMap::new(),
            held: HeldOrders::default(),
            lake: lake.clone(),
            ctx,
        };
        let Some(watermark) = view.watermark.clone() else {
            return Ok(view);
        };
        for (table, name) in ORDER_TABLES.iter().chain(MARTS.iter()) {
            let version = watermark.versions.get(*table).copied().ok_or_else(|| {
                BatchError::lake(
                    table,
                    format!(
                        "the manifest of run {} has no version of it",
                        watermark.run_id
                    ),
                )
            })?;
            view.lake
                .register_at(&view.ctx, table, name, Some(version))
                .await?;
        }
        view.book = view.read_book().await?;
        let orphans = query(
            &view.ctx,
            "SELECT DISTINCT x.order_id FROM (SELECT order_id FROM silver_order_lines UNION ALL SELECT order_id FROM silver_suggestions) x LEFT JOIN silver_orders o ON o.order_id = x.order_id WHERE o.order_id IS NULL",
        )
        .await?;
        let ids = texts(&orphans, "silver", "order_id")?;
        view.orphans = view.orders(&ids).await?;
        let held = query(&view.ctx, "SELECT order_id FROM silver_orders").await?;
        view.held = HeldOrders::with_capacity(lake::rows(&held));
        for b in &held {
            for id in column::<String>(b, "silver/orders", "order_id")?
                .into_iter()
                .flatten()
            {
                view.held.insert(&id);
            }
        }
        Ok(view)
    }

    async fn mart(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        query(&self.ctx, sql).await
    }

    async fn read_book(&self) -> Result<SalesBook> {
        let mut book = SalesBook::default();
        for (table, sql) in [
            ("mart/revenue_daily", "SELECT * FROM revenue_daily"),
            (
                "mart/suggestions_daily",
                "SELECT order_date, suggestions, offered_revenue FROM suggestions_daily",
            ),
        ] {
            let b = self.mart(sql).await?;
            add_rows(&mut book.daily, texts(&b, table, "order_date")?, &b, table)?;
        }
        let t = "mart/revenue_hourly";
        let b = self.mart("SELECT * FROM revenue_hourly").await?;
        let hours = texts(&b, t, "order_date")?
            .into_iter()
            .zip(ints(&b, t, "order_hour")?)
            .map(|(day, hour)| {
                Ok((
                    day,
                    i32::try_from(hour).map_err(|e| BatchError::lake(t, e))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        add_rows(&mut book.hourly, hours, &b, t)?;
        let t = "mart/revenue_store_daily";
        let b = self.mart("SELECT * FROM revenue_store_daily").await?;
        let keys = texts(&b, t, "order_date")?
            .into_iter()
            .zip(ints(&b, t, "store_id")?);
        add_rows(&mut book.stores, keys, &b, t)?;
        let t = "mart/revenue_city_daily";
        let b = self.mart("SELECT * FROM revenue_city_daily").await?;
        let keys = texts(&b, t, "order_date")?
            .into_iter()
            .zip(texts(&b, t, "city")?);
        add_rows(&mut book.cities, keys, &b, t)?;
        let t = "mart/revenue_product_daily";
        let b = self.mart("SELECT * FROM revenue_product_daily").await?;
        let keys = texts(&b, t, "order_date")?
            .into_iter()
            .zip(texts(&b, t, "product_id")?);
        add_rows(&mut book.products, keys, &b, t)?;
        Ok(book)
    }

    /// The next offset bronze had landed of each of the topic's `partitions` (0: none), as of
    /// the view's version of `table` (the bronze table of `topic`).
    pub async fn landed(&self, table: &str, topic: &str, partitions: i32) -> Result<Vec<i64>> {
        let Some(watermark) = &self.watermark else {
            return Ok(vec![0; usize::try_from(partitions).unwrap_or_default()]);
        };
        let version = watermark.versions.get(table).copied().ok_or_else(|| {
            BatchError::lake(
                table,
                format!(
                    "the manifest of run {} has no version of it",
                    watermark.run_id
                ),
            )
        })?;
        let apps: Vec<String> = (0..partitions).map(|p| format!("{topic}/{p}")).collect();
        Ok(self
            .lake
            .transaction_versions_at(table, Some(version), &apps)
            .await?
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect())
    }

    /// The rows of each of `ids` in the view (empty rows for an order it does not hold).
    pub async fn orders(&self, ids: &[String]) -> Result<HashMap<String, OrderRows>> {
        let mut out: HashMap<String, OrderRows> = ids
            .iter()
            .map(|id| (id.clone(), OrderRows::default()))
            .collect();
        if self.watermark.is_none() || ids.is_empty() {
            return Ok(out);
        }
        let t = "silver/orders";
        let b = self.rows_of("silver_orders", ids).await?;
        let (id, at, store, payment) = (
            texts(&b, t, "order_id")?,
            values::<i64>(&b, t, "ordered_at_ms")?,
            ints(&b, t, "store_id")?,
            ints(&b, t, "payment_method_id")?,
        );
        for i in 0..id.len() {
            if let (Some(rows), Some(at)) = (out.get_mut(&id[i]), at[i]) {
                rows.header = Some(Header {
                    ordered_at_ms: at,
                    store_id: store[i],
                    payment_method_id: payment[i],
                });
            }
        }
        let t = "silver/order_lines";
        let b = self.rows_of("silver_order_lines", ids).await?;
        let (id, product, quantity, subtotal, suggested) = (
            texts(&b, t, "order_id")?,
            texts(&b, t, "product_id")?,
            ints(&b, t, "quantity")?,
            ints(&b, t, "subtotal")?,
            values::<bool>(&b, t, "is_suggestion")?,
        );
        for i in 0..id.len() {
            if let Some(rows) = out.get_mut(&id[i]) {
                rows.lines.insert(
                    product[i].clone(),
                    Line {
                        quantity: quantity[i],
                        subtotal: subtotal[i],
                        is_suggestion: suggested[i].unwrap_or_default(),
                    },
                );
            }
        }
        let t = "silver/suggestions";
        let b = self.rows_of("silver_suggestions", ids).await?;
        let (id, subtotal) = (texts(&b, t, "order_id")?, ints(&b, t, "subtotal")?);
        for i in 0..id.len() {
            if let Some(rows) = out.get_mut(&id[i]) {
                rows.suggested = Some(subtotal[i]);
            }
        }
        Ok(out)
    }

    async fn rows_of(&self, name: &str, ids: &[String]) -> Result<Vec<RecordBatch>> {
        let df = self
            .ctx
            .table(name)
            .await
            .map_err(|e| BatchError::lake(name, e))?;
        let wanted = ids.iter().map(|id| lit(id.as_str())).collect();
        df.filter(col("order_id").in_list(wanted, false))
            .map_err(|e| BatchError::lake(name, e))?
            .collect()
            .await
            .map_err(|e| BatchError::lake(name, e))
    }
}
