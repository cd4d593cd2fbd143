//! Incremental runs. A run builds silver and gold from what changed since the last run, not
//! from all of history: the orders that the events landed since then touch (each one's
//! latest state recomputed from all its events, every other order's rows kept from the
//! published version), the orders of the dimension members whose versions changed, and the
//! days of those orders in the marts by day. The dimensions and the marts over all days are
//! recomputed whole: they are small, or one pass over the facts. Every step runs the SQL a
//! full rebuild runs, over its inputs restricted to the rows touched, so an incremental run
//! makes the tables a full rebuild makes, row for row (`crates/batch/tests/batch.rs` compares
//! them after many small runs with late updates, deletes and new dimension versions).
//!
//! What the last published silver and gold were built from is recorded in the lake
//! (`_batch/silver.json`, `_batch/gold.json`): the offsets of the events silver read, the
//! silver versions gold read, and a fingerprint of the SQL. A layer is rebuilt whole when
//! that record is missing or does not match the lake (other SQL; a table changed since by
//! something other than `batch optimize` or `batch vacuum`; a gold built from another silver),
//! when more than [`MAX_TOUCHED`] orders were touched, or when asked (`brewline batch run
//! --full`).

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::datafusion::datasource::{MemTable, TableProvider};
use deltalake::datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::gates::Gate;
use crate::job::{Layer, SqlStep, SILVER};
use crate::lake::{column, Lake};
use crate::slices::{self, names_in};
use crate::staged::{Kept, Staged};
use crate::{BatchError, Result};

/// How a run computes silver and gold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only what the events and dimension versions landed since the last run touch, when the
    /// lake's record of that run allows (else whole).
    #[default]
    Incremental,
    /// Every table from bronze (`brewline batch run --full`).
    Full,
}

/// What a step recomputes in an incremental run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole table (dimensions, marts over all days).
    Whole,
    /// The rows of the orders touched: every input with an `order_id` is read for those
    /// orders only, and the published rows of the others are kept.
    Orders,
    /// The rows of the order days touched: every input with an `order_date` is read for those
    /// days only, and the published rows of the others are kept.
    Days,
}

/// More orders touched than this and a layer is rebuilt whole (the touched keys are held in
/// memory, and a rebuild reads less than a merge of most of a table).
pub const MAX_TOUCHED: u64 = 2_000_000;
/// At most this many rows of a table restricted to what a run touched are held in memory, for
/// the steps or gates that read them again; more, and each reads the table itself.
const HELD_ROWS: usize = 1_000_000;

const TOUCHED_ORDERS: &str = "touched_orders";
const TOUCHED_DAYS: &str = "touched_days";

/// The column a step of `scope` is recomputed by, and the table of its keys this run touched.
fn touched(scope: Scope) -> Option<(&'static str, &'static str)> {
    let keys = match scope {
        Scope::Orders => TOUCHED_ORDERS,
        Scope::Days => TOUCHED_DAYS,
        Scope::Whole => return None,
    };
    Some((scope.key()?, keys))
}
/// The column naming each row's file, in a scan of a published version.
const FILE_COLUMN: &str = "__brewline_file";
/// The name the published version of a table being rebuilt is read by: `previous_` + its name.
const PREVIOUS: &str = "previous_";
/// The bronze tables of events (by the names SQL reads them by): their new events touch orders.
const EVENT_TABLES: [&str; 3] = ["bronze_orders", "bronze_order_lines", "bronze_suggestions"];

/// The gold dimensions' members whose rows changed (a new version, a renamed category): the
/// keys and names of their orders may have changed.
const CHANGED_MEMBERS: [(&str, &str); 3] = [
    (
        "changed_stores",
        "SELECT store_id FROM (SELECT * FROM dim_stores EXCEPT SELECT * FROM previous_dim_stores) n
         UNION SELECT store_id FROM (SELECT * FROM previous_dim_stores EXCEPT SELECT * FROM dim_stores) p",
    ),
    (
        "changed_methods",
        "SELECT payment_method_id FROM (SELECT * FROM dim_payment_method EXCEPT SELECT * FROM previous_dim_payment_method) n
         UNION SELECT payment_method_id FROM (SELECT * FROM previous_dim_payment_method EXCEPT SELECT * FROM dim_payment_method) p",
    ),
    (
        "changed_products",
        "SELECT product_id FROM (SELECT * FROM dim_products EXCEPT SELECT * FROM previous_dim_products) n
         UNION SELECT product_id FROM (SELECT * FROM previous_dim_products EXCEPT SELECT * FROM dim_products) p",
    ),
];

/// The orders touched, and those of the [`CHANGED_MEMBERS`] in the published facts.
const ORDERS_OF_CHANGED_MEMBERS: &str = "
SELECT order_id FROM touched_orders
UNION SELECT f.order_id FROM previous_fact_orders f JOIN changed_stores c ON c.store_id = f.store_id
UNION SELECT f.order_id FROM previous_fact_orders f JOIN changed_methods c ON c.payment_method_id = f.payment_method_id
UNION SELECT f.order_id FROM previous_fact_order_lines f JOIN changed_products c ON c.product_id = f.product_id";

/// The name of the files a run wrote of a table by order (`written_` + its name): every row of
/// the orders it touched is in them.
const WRITTEN: &str = "written_";

/// What a published layer was built from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Built {
    /// The fingerprint of the layer's SQL.
    sql: String,
    /// The layer's tables as that run published them.
    versions: BTreeMap<String, i64>,
    /// Silver: the highest offset read of each topic partition of each bronze event table.
    #[serde(default)]
    offsets: Vec<ReadOffset>,
    /// Gold: the silver versions it read.
    #[serde(default)]
    silver: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct ReadOffset {
    table: String,
    topic: String,
    partition: i64,
    offset: i64,
}

/// How a layer is computed in a run, and why.
pub(crate) enum Plan {
    Whole(String),
    Incremental(Incremental),
}

impl Plan {
    /// What the run report says of the layer.
    pub(crate) fn describe(&self) -> String {
        match self {
            Plan::Whole(why) => format!("rebuilt whole: {why}"),
            Plan::Incremental(i) => i.describe(),
        }
    }

    /// A session whose tables hold only the orders touched, for the gates by order
    /// ([`crate::gates::Gate::by_order`]) of an incremental build.
    pub(crate) async fn by_order_session(
        &self,
        ctx: &SessionContext,
        gates: &[Gate],
    ) -> Result<Option<SessionContext>> {
        let Plan::Incremental(_) = self else {
            return Ok(None);
        };
        // The tables the gates by order read, each read once.
        let mut held: Vec<String> = Vec::new();
        for g in gates.iter().filter(|g| g.by_order) {
            held.extend(names_in(g.sql).into_iter().map(str::to_string));
        }
        let Some((key, keys)) = touched(Scope::Orders) else {
            return Ok(None);
        };
        Ok(Some(
            restricted(ctx, &Restriction::touched(key, keys, &held)).await?,
        ))
    }

    /// Registers the files `staged` wrote of `step`, a table by order of an incremental build,
    /// as holding every row of the orders touched.
    pub(crate) fn staged(
        &self,
        ctx: &SessionContext,
        step: &SqlStep,
        staged: &Staged,
    ) -> Result<()> {
        if matches!(self, Plan::Incremental(_)) && step.scope == Scope::Orders {
            staged.register_written(ctx, &format!("{WRITTEN}{}", step.name))?;
        }
        Ok(())
    }

    /// The silver as this plan leaves it, for gold's plan.
    pub(crate) fn silver_outcome(&self) -> SilverInRun {
        match self {
            Plan::Whole(_) => SilverInRun::Whole,
            Plan::Incremental(i) => SilverInRun::Incremental(i.since.clone()),
        }
    }

    /// The step's rows to write in this run, in parts written one after another, and the
    /// files of its published version that stay: its SQL's rows (in slices when its joins
    /// would not fit in memory, [`crate::slices`]); or (incremental) its scope recomputed, with
    /// the published rows outside it, of the days by day, of the files that held rows
    /// recomputed by order (the other files stay).
    pub(crate) async fn frame(
        &mut self,
        ctx: &SessionContext,
        lake: &Lake,
        step: &SqlStep,
    ) -> Result<(Vec<DataFrame>, Kept)> {
        match self {
            Plan::Incremental(i) if step.scope != Scope::Whole => {
                let (df, kept) = i.frame(ctx, lake, step).await?;
                Ok((vec![df], kept))
            }
            _ => Ok((slices::frames(ctx, step).await?, Kept::default())),
        }
    }
}

/// Silver in this run, as gold's plan needs it.
pub(crate) enum SilverInRun {
    /// Not built: the published one is read.
    Published,
    Whole,
    /// Built from the silver of these versions and the orders touched since.
    Incremental(BTreeMap<String, i64>),
}

/// An incremental build of a layer.
pub(crate) struct Incremental {
    layer: Layer,
    /// The versions of the layer's record (silver: for gold's plan).
    since: BTreeMap<String, i64>,
    /// Silver: the offsets its record read.
    offsets: Vec<ReadOffset>,
    /// Orders touched by the landed events (silver), or by those and the dimensions (gold,
    /// counted before its first step by order).
    orders: u64,
    orders_of_members: bool,
    days: Option<u64>,
    /// The session of the steps of one scope, its tables restricted to what was touched.
    scoped: Option<(Scope, SessionContext)>,
}

impl Incremental {
    fn describe(&self) -> String {
        let mut out = format!("incremental: {} orders touched", self.orders);
        if let Some(days) = self.days {
            out.push_str(&format!(", {days} days"));
        }
        out
    }

    async fn frame(
        &mut self,
        ctx: &SessionContext,
        lake: &Lake,
        step: &SqlStep,
    ) -> Result<(DataFrame, Kept)> {
        let Some((key, keys)) = touched(step.scope) else {
            return Ok((sql(ctx, step.table, step.sql).await?, Kept::default()));
        };
        match step.scope {
            Scope::Orders if self.layer == Layer::Gold && !self.orders_of_members => {
                self.orders = touch_orders_of_changed_members(ctx).await?;
                self.orders_of_members = true;
            }
            Scope::Days if self.days.is_none() => {
                self.days = Some(touch_days(ctx).await?);
            }
            _ => {}
        }
        // One session per scope, for the steps after each other: the facts of the days touched
        // are read once.
        if !matches!(&self.scoped, Some((scope, _)) if *scope == step.scope) {
            let fresh = crate::compute::sibling(ctx);
            self.scoped = Some((step.scope, fresh));
        }
        let Some((_, scoped)) = &self.scoped else {
            return Err(BatchError::lake(step.table, "no session for its scope"));
        };
        let held: Vec<String> = match step.scope {
            Scope::Days => vec!["fact_orders".into(), "fact_order_lines".into()],
            _ => Vec::new(),
        };
        restrict_new(ctx, scoped, &Restriction::touched(key, keys, &held)).await?;
        let recomputed = sql(scoped, step.table, step.sql).await?;
        // The published rows outside the scope: by order, only those of the files holding a
        // row recomputed (they are rewritten; the other files stay); by day, all (small).
        let (from, kept) = if step.scope == Scope::Orders {
            let (rewritten, kept) = files_holding(ctx, lake, step, key, keys).await?;
            if rewritten.is_empty() {
                return Ok((recomputed, kept));
            }
            (rewritten, kept)
        } else {
            (format!("{PREVIOUS}{}", step.name), Kept::default())
        };
        let outside = sql(
            ctx,
            step.table,
            &format!(
                "SELECT * FROM {from} p WHERE NOT EXISTS \
                 (SELECT 1 FROM {keys} k WHERE k.{key} = p.{key})"
            ),
        )
        .await?;
        let df = outside
            .union(recomputed)
            .map_err(|e| BatchError::lake(step.table, e))?;
        Ok((df, kept))
    }
}

/// Adds to the orders touched those of the gold dimensions' members that changed (read in
/// the facts only when some did): how many orders are touched.
async fn touch_orders_of_changed_members(ctx: &SessionContext) -> Result<u64> {
    let mut changed = 0;
    for (name, query) in CHANGED_MEMBERS {
        changed += remember(ctx, name, query).await?;
    }
    if changed == 0 {
        return count(ctx, TOUCHED_ORDERS).await;
    }
    // Silver's written files no longer hold every order touched.
    forget_written(ctx, Layer::Silver)?;
    remember(ctx, TOUCHED_ORDERS, ORDERS_OF_CHANGED_MEMBERS).await
}

/// Registers the days of the touched orders, as published and as recomputed (an order may
/// move), read from the files that hold those orders: how many.
async fn touch_days(ctx: &SessionContext) -> Result<u64> {
    let fail = |e: &dyn std::fmt::Display| BatchError::lake(TOUCHED_DAYS, e.to_string());
    let mut parts = Vec::new();
    for table in [
        format!("{PREVIOUS}fact_orders_rewritten"),
        format!("{WRITTEN}fact_orders"),
    ] {
        if ctx.table_exist(table.as_str()).map_err(|e| fail(&e))? {
            parts.push(format!(
                "SELECT order_date FROM {table} WHERE order_id IN (SELECT order_id FROM {TOUCHED_ORDERS})"
            ));
        }
    }
    if parts.is_empty() {
        parts.push(format!(
            "SELECT order_date FROM fact_orders WHERE order_id IN (SELECT order_id FROM {TOUCHED_ORDERS})"
        ));
    }
    let query = format!(
        "SELECT DISTINCT order_date FROM ({}) d WHERE order_date IS NOT NULL",
        parts.join(" UNION ALL ")
    );
    remember(ctx, TOUCHED_DAYS, &query).await
}

/// Forgets the written files of `layer`'s tables by order: the orders touched are more now.
fn forget_written(ctx: &SessionContext, layer: Layer) -> Result<()> {
    let steps = layer.steps();
    for step in steps.iter().filter(|s| s.scope == Scope::Orders) {
        ctx.deregister_table(format!("{WRITTEN}{}", step.name).as_str())
            .map_err(|e| BatchError::lake(step.table, e))?;
    }
    Ok(())
}

/// The rows of table `name` in `ctx`.
pub(crate) async fn count(ctx: &SessionContext, name: &str) -> Result<u64> {
    let n = sql(ctx, name, &format!("SELECT * FROM {name}"))
        .await?
        .count()
        .await
        .map_err(|e| BatchError::lake(name, e))?;
    Ok(n as u64)
}

/// Of `step`'s published version, the files holding a row whose `key` is in `keys`, registered
/// in `ctx` as a table whose name is returned ("" when there are none), and the other files.
async fn files_holding(
    ctx: &SessionContext,
    lake: &Lake,
    step: &SqlStep,
    key: &str,
    keys: &str,
) -> Result<(String, Kept)> {
    let fail = |e: &dyn std::fmt::Display| BatchError::lake(step.table, e.to_string());
    let previous = lake.open(step.table).await?;
    let with_files = previous
        .table_provider()
        .with_file_column(FILE_COLUMN)
        .await
        .map_err(|e| fail(&e))?;
    let scratch = format!("{PREVIOUS}{}_files", step.name);
    ctx.register_table(scratch.as_str(), with_files)
        .map_err(|e| fail(&e))?;
    let holding = sql(
        ctx,
        step.table,
        &format!(
            "SELECT DISTINCT {FILE_COLUMN} AS file FROM {scratch} \
             WHERE {key} IN (SELECT {key} FROM {keys})"
        ),
    )
    .await?
    .collect()
    .await
    .map_err(|e| fail(&e));
    ctx.deregister_table(scratch.as_str())
        .map_err(|e| fail(&e))?;
    let mut names = std::collections::HashSet::new();
    for b in holding? {
        for file in column::<String>(&b, step.table, "file")?
            .into_iter()
            .flatten()
        {
            // A URL or a path: the file's name is what tells files apart.
            names.insert(file.rsplit('/').next().unwrap_or_default().to_string());
        }
    }
    let (mut rewritten, mut kept) = (Vec::new(), Kept::default());
    for (path, rows) in files(&previous, step.table).await? {
        if names.contains(path.rsplit('/').next().unwrap_or_default()) {
            rewritten.push(path);
        } else {
            kept.rows += rows;
            kept.paths.push(path);
        }
    }
    if rewritten.is_empty() {
        return Ok((String::new(), kept));
    }
    let name = format!("{PREVIOUS}{}_rewritten", step.name);
    register_files(ctx, lake, &previous, step.table, &rewritten, &name).await?;
    Ok((name, kept))
}

/// The files of `table`'s version `t` (paths relative to the table) and their rows.
async fn files(t: &DeltaTable, table: &str) -> Result<Vec<(String, u64)>> {
    let fail = |e: &dyn std::fmt::Display| BatchError::lake(table, e.to_string());
    let snapshot = t.snapshot().map_err(|e| fail(&e))?;
    let views: Vec<_> = snapshot
        .snapshot()
        .file_views(t.log_store().as_ref(), None)
        .try_collect()
        .await
        .map_err(|e| fail(&e))?;
    Ok(views
        .into_iter()
        .map(|f| {
            (
                f.path().to_string(),
                f.num_records().unwrap_or_default() as u64,
            )
        })
        .collect())
}

/// Registers in `ctx` as `name` the rows of `paths`, files of `table`'s version `t`.
async fn register_files(
    ctx: &SessionContext,
    lake: &Lake,
    t: &DeltaTable,
    table: &str,
    paths: &[String],
    name: &str,
) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| BatchError::lake(table, e.to_string());
    let (url, _) = lake.table_url(table)?;
    let provider = t
        .table_provider()
        .with_file_paths(paths.iter().map(|p| format!("{url}{p}")))
        .await
        .map_err(|e| fail(&e))?;
    ctx.deregister_table(name).map_err(|e| fail(&e))?;
    ctx.register_table(name, provider).map_err(|e| fail(&e))?;
    Ok(())
}

/// Registers as the orders touched those whose rows in silver's tables by order may differ
/// between their versions `since` and now: the orders in the files added since, and in the
/// files removed since (files are never changed, only added and removed). How many; or why
/// not (a file removed since was vacuumed, more than [`MAX_TOUCHED`]).
async fn touched_in_silver_since(
    ctx: &SessionContext,
    lake: &Lake,
    since: &BTreeMap<String, i64>,
) -> Result<std::result::Result<u64, String>> {
    let mut parts = Vec::new();
    for step in SILVER.iter().filter(|s| s.scope == Scope::Orders) {
        let Some(&version) = since.get(step.table) else {
            return Ok(Err(format!("{} was not recorded", step.table)));
        };
        let now = lake.open(step.table).await?;
        let then = lake.open_at(step.table, Some(version)).await?;
        let now_files: BTreeMap<String, u64> = files(&now, step.table).await?.into_iter().collect();
        let then_files: BTreeMap<String, u64> =
            files(&then, step.table).await?.into_iter().collect();
        let added: Vec<String> = now_files
            .keys()
            .filter(|f| !then_files.contains_key(*f))
            .cloned()
            .collect();
        let removed: Vec<String> = then_files
            .keys()
            .filter(|f| !now_files.contains_key(*f))
            .cloned()
            .collect();
        for (t, paths, which) in [(&now, added, "added"), (&then, removed, "removed")] {
            if paths.is_empty() {
                continue;
            }
            let name = format!("{PREVIOUS}{}_{which}", step.name);
            register_files(ctx, lake, t, step.table, &paths, &name).await?;
            parts.push(format!("SELECT order_id FROM {name}"));
        }
    }
    let query = if parts.is_empty() {
        "SELECT order_id FROM silver_orders WHERE false".to_string()
    } else {
        format!(
            "SELECT DISTINCT order_id FROM ({}) t WHERE order_id IS NOT NULL",
            parts.join(" UNION ALL ")
        )
    };
    match remember(ctx, TOUCHED_ORDERS, &query).await {
        Ok(n) if n > MAX_TOUCHED => Ok(Err(format!(
            "{n} orders changed in silver, more than {MAX_TOUCHED}"
        ))),
        Ok(n) => Ok(Ok(n)),
        Err(e) => Ok(Err(format!(
            "the silver files changed since the last gold cannot be read ({e})"
        ))),
    }
}

/// Silver's plan: incremental from the offsets its record read, when it holds.
pub(crate) async fn plan_silver(ctx: &SessionContext, lake: &Lake, mode: Mode) -> Result<Plan> {
    if mode == Mode::Full {
        return Ok(Plan::Whole("asked (--full)".into()));
    }
    let built = match usable(lake, Layer::Silver).await? {
        Ok(built) => built,
        Err(why) => return Ok(Plan::Whole(why)),
    };
    register_previous(ctx, lake, Layer::Silver).await?;
    let touched = EVENT_TABLES
        .iter()
        .map(|name| {
            format!(
                "SELECT order_id FROM {name} WHERE order_id IS NOT NULL AND ({})",
                landed_after(&built.offsets, name)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let orders = remember(
        ctx,
        TOUCHED_ORDERS,
        &format!("SELECT DISTINCT order_id FROM ({touched}) t"),
    )
    .await?;
    if orders > MAX_TOUCHED {
        return Ok(Plan::Whole(format!(
            "{orders} orders touched, more than {MAX_TOUCHED}"
        )));
    }
    Ok(Plan::Incremental(Incremental {
        layer: Layer::Silver,
        since: built.versions,
        offsets: built.offsets,
        orders,
        orders_of_members: false,
        days: None,
        scoped: None,
    }))
}

/// Gold's plan: incremental when the last gold was built from the silver this run's started
/// from.
pub(crate) async fn plan_gold(
    ctx: &SessionContext,
    lake: &Lake,
    mode: Mode,
    silver: SilverInRun,
) -> Result<Plan> {
    if mode == Mode::Full {
        return Ok(Plan::Whole("asked (--full)".into()));
    }
    let built = match usable(lake, Layer::Gold).await? {
        Ok(built) => built,
        Err(why) => return Ok(Plan::Whole(why)),
    };
    match silver {
        SilverInRun::Whole => return Ok(Plan::Whole("silver was rebuilt whole".into())),
        // Built by this run from the silver the last gold read: the orders it touched.
        SilverInRun::Incremental(since) if since == built.silver => {}
        // Built by an earlier run (the Airflow DAG builds a layer a task), or by this one from
        // a silver the last gold did not read: the orders whose silver rows changed since.
        SilverInRun::Incremental(_) | SilverInRun::Published => {
            forget_written(ctx, Layer::Silver)?;
            if let Err(why) = touched_in_silver_since(ctx, lake, &built.silver).await? {
                return Ok(Plan::Whole(why));
            }
        }
    }
    register_previous(ctx, lake, Layer::Gold).await?;
    Ok(Plan::Incremental(Incremental {
        layer: Layer::Gold,
        since: built.versions,
        offsets: Vec::new(),
        orders: 0,
        orders_of_members: false,
        days: None,
        scoped: None,
    }))
}

/// Records what the silver just published (by `plan`) was built from: its versions and the
/// offsets of the bronze events `ctx` read (incremental: those recorded and the new events').
pub(crate) async fn record_silver(
    ctx: &SessionContext,
    lake: &Lake,
    versions: &BTreeMap<String, i64>,
    plan: &Plan,
) -> Result<()> {
    let earlier: &[ReadOffset] = match plan {
        Plan::Incremental(i) => &i.offsets,
        Plan::Whole(_) => &[],
    };
    let mut offsets: Vec<ReadOffset> = earlier.to_vec();
    for name in EVENT_TABLES {
        let new = match plan {
            Plan::Incremental(_) => landed_after(earlier, name),
            Plan::Whole(_) => "true".to_string(),
        };
        let q = format!(
            "SELECT kafka_topic, CAST(kafka_partition AS BIGINT) AS p, MAX(kafka_offset) AS o \
             FROM {name} WHERE {new} GROUP BY kafka_topic, kafka_partition"
        );
        for b in sql(ctx, name, &q)
            .await?
            .collect()
            .await
            .map_err(|e| BatchError::lake(name, e))?
        {
            let topics = column::<String>(&b, name, "kafka_topic")?;
            let partitions = column::<i64>(&b, name, "p")?;
            let read = column::<i64>(&b, name, "o")?;
            for ((topic, partition), offset) in topics.into_iter().zip(partitions).zip(read) {
                let (Some(topic), Some(partition), Some(offset)) = (topic, partition, offset)
                else {
                    continue;
                };
                let same = |o: &&mut ReadOffset| {
                    o.table == name && o.topic == topic && o.partition == partition
                };
                match offsets.iter_mut().find(same) {
                    Some(read) => read.offset = read.offset.max(offset),
                    None => offsets.push(ReadOffset {
                        table: name.to_string(),
                        topic,
                        partition,
                        offset,
                    }),
                }
            }
        }
    }
    let built = Built {
        sql: fingerprint(Layer::Silver.steps()),
        versions: Layer::Silver.versions_in(versions),
        offsets,
        silver: BTreeMap::new(),
    };
    write(lake, Layer::Silver, &built).await
}

/// Records what the gold just published was built from: its versions and silver's.
pub(crate) async fn record_gold(lake: &Lake, versions: &BTreeMap<String, i64>) -> Result<()> {
    let built = Built {
        sql: fingerprint(Layer::Gold.steps()),
        versions: Layer::Gold.versions_in(versions),
        offsets: Vec::new(),
        silver: Layer::Silver.versions_in(versions),
    };
    write(lake, Layer::Gold, &built).await
}

fn state_file(layer: Layer) -> String {
    format!("_batch/{}.json", layer.name())
}

async fn write(lake: &Lake, layer: Layer, built: &Built) -> Result<()> {
    let path = state_file(layer);
    let bytes = serde_json::to_vec_pretty(built).map_err(|e| BatchError::lake(&path, e))?;
    lake.put_file(&path, bytes).await
}

/// The layer's record when an incremental build may start from it, else why not.
async fn usable(lake: &Lake, layer: Layer) -> Result<std::result::Result<Built, String>> {
    let path = state_file(layer);
    let Some(bytes) = lake.get_file(&path).await? else {
        return Ok(Err(format!("no earlier {} recorded", layer.name())));
    };
    let built: Built = match serde_json::from_slice(&bytes) {
        Ok(built) => built,
        Err(e) => return Ok(Err(format!("{path} unreadable ({e})"))),
    };
    let steps = layer.steps();
    if built.sql != fingerprint(steps) {
        return Ok(Err(format!("the {} SQL changed", layer.name())));
    }
    if let Some(why) = changed_since(lake, &built.versions, layer).await? {
        return Ok(Err(why));
    }
    Ok(Ok(built))
}

/// Why the data of a table of `layer` is not that of its version in `versions`, if it is not.
async fn changed_since(
    lake: &Lake,
    versions: &BTreeMap<String, i64>,
    layer: Layer,
) -> Result<Option<String>> {
    for (table, _) in layer.tables() {
        let Some(&version) = versions.get(table) else {
            return Ok(Some(format!("{table} was not recorded")));
        };
        if lake.data_changed_since(table, version).await? {
            return Ok(Some(format!("{table} changed since version {version}")));
        }
    }
    Ok(None)
}

/// Registers the published version of every table of `layer` as `previous_` + its name.
async fn register_previous(ctx: &SessionContext, lake: &Lake, layer: Layer) -> Result<()> {
    for (table, name) in layer.tables() {
        if lake
            .register(ctx, table, &format!("{PREVIOUS}{name}"))
            .await?
            .is_none()
        {
            return Err(BatchError::Empty(table.to_string()));
        }
    }
    Ok(())
}

/// A predicate over a bronze event table, true for the events landed after those `read` of
/// it: literal bounds, so that the files and row groups whose offsets were all read are
/// skipped by their statistics. A partition or topic not read is new.
fn landed_after(read: &[ReadOffset], table: &str) -> String {
    let mut topics: BTreeMap<&str, BTreeMap<i64, i64>> = BTreeMap::new();
    for r in read.iter().filter(|r| r.table == table) {
        topics
            .entry(r.topic.as_str())
            .or_default()
            .insert(r.partition, r.offset);
    }
    if topics.is_empty() {
        return "true".to_string();
    }
    let quote = |t: &str| format!("'{}'", t.replace('\'', "''"));
    let known: Vec<String> = topics.keys().map(|t| quote(t)).collect();
    let mut terms = vec![format!("kafka_topic NOT IN ({})", known.join(", "))];
    for (topic, partitions) in &topics {
        let topic = quote(topic);
        let last = partitions.keys().max().copied().unwrap_or(-1);
        terms.push(format!(
            "(kafka_topic = {topic} AND kafka_partition > {last})"
        ));
        for p in 0..=last {
            let offset = partitions.get(&p).copied().unwrap_or(-1);
            terms.push(format!(
                "(kafka_topic = {topic} AND kafka_partition = {p} AND kafka_offset > {offset})"
            ));
        }
    }
    terms.join(" OR ")
}

/// Runs `query` in `ctx`, holds its rows in memory as `name` (replacing what had that name),
/// and says how many.
async fn remember(ctx: &SessionContext, name: &str, query: &str) -> Result<u64> {
    let fail = |e: &dyn std::fmt::Display| BatchError::lake(name, e.to_string());
    let df = sql(ctx, name, query).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(|e| fail(&e))?;
    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    let table = MemTable::try_new(schema, vec![batches]).map_err(|e| fail(&e))?;
    ctx.deregister_table(name).map_err(|e| fail(&e))?;
    ctx.register_table(name, Arc::new(table))
        .map_err(|e| fail(&e))?;
    Ok(rows)
}

/// Which rows of a session's tables another session sees.
pub(crate) struct Restriction<'a> {
    /// The column restricted: tables without it are seen whole.
    pub key: &'a str,
    /// The condition on it.
    pub filter: String,
    /// Tables held in memory (when no more than [`HELD_ROWS`] rows), for the steps or gates
    /// that read them again.
    pub held: &'a [String],
    /// By order, a table is read from the files this run wrote of it (`written_` + its name),
    /// which hold every row of the orders touched.
    pub written: bool,
}

impl<'a> Restriction<'a> {
    /// The rows whose `key` is in table `keys` (the orders or days touched).
    fn touched(key: &'a str, keys: &str, held: &'a [String]) -> Restriction<'a> {
        Restriction {
            key,
            filter: format!("{key} IN (SELECT {key} FROM {keys})"),
            held,
            written: keys == TOUCHED_ORDERS,
        }
    }
}

/// A session over the same memory as `ctx`, and its tables (see [`restrict_new`]).
pub(crate) async fn restricted(
    ctx: &SessionContext,
    restriction: &Restriction<'_>,
) -> Result<SessionContext> {
    let scoped = crate::compute::sibling(ctx);
    restrict_new(ctx, &scoped, restriction).await?;
    Ok(scoped)
}

/// Registers in `scoped` each table of `ctx` it does not have yet: those with the
/// restriction's column read only for the rows it lets through, the others as they are.
async fn restrict_new(
    ctx: &SessionContext,
    scoped: &SessionContext,
    restriction: &Restriction<'_>,
) -> Result<()> {
    let Restriction {
        key,
        filter,
        held,
        written,
    } = restriction;
    let fail = |e: &dyn std::fmt::Display| BatchError::lake(key, e.to_string());
    let catalog = ctx
        .catalog("datafusion")
        .and_then(|c| c.schema("public"))
        .ok_or_else(|| fail(&"the session has no default schema"))?;
    for name in catalog.table_names() {
        if name.starts_with(PREVIOUS)
            || name.starts_with(WRITTEN)
            || name == TOUCHED_ORDERS
            || name == TOUCHED_DAYS
            || scoped.table_exist(name.as_str()).map_err(|e| fail(&e))?
        {
            continue;
        }
        let provider = ctx
            .table_provider(name.as_str())
            .await
            .map_err(|e| fail(&e))?;
        let provider: Arc<dyn TableProvider> = if provider.schema().field_with_name(key).is_ok() {
            let of_run = format!("{WRITTEN}{name}");
            let from = if *written && ctx.table_exist(of_run.as_str()).map_err(|e| fail(&e))? {
                of_run
            } else {
                name.clone()
            };
            let rows = sql(ctx, &name, &format!("SELECT * FROM {from} WHERE {filter}")).await?;
            let in_memory = if held.contains(&name) {
                hold(&name, rows.clone()).await?
            } else {
                None
            };
            in_memory.unwrap_or_else(|| rows.into_view())
        } else {
            provider
        };
        scoped
            .register_table(name.as_str(), provider)
            .map_err(|e| fail(&e))?;
    }
    Ok(())
}

/// `rows` in memory, when they are no more than [`HELD_ROWS`].
async fn hold(name: &str, rows: DataFrame) -> Result<Option<Arc<dyn TableProvider>>> {
    let fail = |e: &dyn std::fmt::Display| BatchError::lake(name, e.to_string());
    let schema = Arc::new(rows.schema().as_arrow().clone());
    let batches = rows
        .limit(0, Some(HELD_ROWS + 1))
        .map_err(|e| fail(&e))?
        .collect()
        .await
        .map_err(|e| fail(&e))?;
    if batches.iter().map(|b| b.num_rows()).sum::<usize>() > HELD_ROWS {
        return Ok(None);
    }
    let table = MemTable::try_new(schema, vec![batches]).map_err(|e| fail(&e))?;
    Ok(Some(Arc::new(table)))
}

pub(crate) async fn sql(ctx: &SessionContext, table: &str, query: &str) -> Result<DataFrame> {
    ctx.sql(query).await.map_err(|e| BatchError::lake(table, e))
}

/// A fingerprint of the steps' tables and SQL that stays the same across builds (FNV-1a).
fn fingerprint(steps: &[SqlStep]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for step in steps {
        for byte in step.table.bytes().chain(step.sql.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::GOLD;

    #[test]
    fn the_fingerprint_changes_with_the_sql_and_only_with_it() {
        assert_eq!(fingerprint(&SILVER), fingerprint(&SILVER));
        assert_ne!(fingerprint(&SILVER), fingerprint(&GOLD));
        assert_ne!(fingerprint(&SILVER[..1]), fingerprint(&SILVER[..2]));
        // A value from an earlier build, so a change of the hash itself is seen.
        assert_eq!(fingerprint(&[]), "cbf29ce484222325");
    }

    #[test]
    fn events_after_those_read_are_each_partition_past_its_offset_and_any_new_one() {
        let read = |table: &str, topic: &str, partition, offset| ReadOffset {
            table: table.into(),
            topic: topic.into(),
            partition,
            offset,
        };
        let offsets = vec![
            read("bronze_orders", "o'rders", 0, 41),
            read("bronze_orders", "o'rders", 2, 7),
            read("bronze_order_lines", "lines", 0, 99),
        ];
        assert_eq!(
            landed_after(&offsets, "bronze_orders"),
            "kafka_topic NOT IN ('o''rders') \
             OR (kafka_topic = 'o''rders' AND kafka_partition > 2) \
             OR (kafka_topic = 'o''rders' AND kafka_partition = 0 AND kafka_offset > 41) \
             OR (kafka_topic = 'o''rders' AND kafka_partition = 1 AND kafka_offset > -1) \
             OR (kafka_topic = 'o''rders' AND kafka_partition = 2 AND kafka_offset > 7)"
        );
        assert_eq!(landed_after(&offsets, "bronze_suggestions"), "true");
    }

    #[test]
    fn steps_by_order_and_by_day_are_those_keyed_so() {
        for step in SILVER.iter().chain(&GOLD) {
            match step.scope {
                Scope::Orders => assert!(
                    step.table.starts_with("silver/") || step.table.starts_with("gold/fact_"),
                    "{}",
                    step.table
                ),
                Scope::Days => assert!(
                    step.table.starts_with("mart/") && step.sql.contains("order_date"),
                    "{}",
                    step.table
                ),
                Scope::Whole => {}
            }
        }
    }
}
