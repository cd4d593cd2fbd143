//! One batch run: bronze → gates → silver → gates → gold and marts → gates, each layer
//! computed within the lake's memory limit into the Parquet files of its tables' next
//! versions ([`crate::staged`]), checked, and only then published (one Delta commit per table
//! naming those files). A gate
//! that fails stops the run before the next layer is written: the lake keeps the previous run's
//! tables.
//!
//! The silver, gold and mart transformations are the SQL files of `crates/batch/sql/`, written
//! in the dialect DataFusion and Spark SQL share, so they run unchanged on Spark.

use std::collections::BTreeMap;
use std::time::Instant;

use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use serde::Serialize;

use crate::gates::{self, GateResult};
use crate::incremental::{self, Mode, Plan, Scope, SilverInRun};
use crate::lake::Lake;
use crate::lock::RunLock;
use crate::sources::Sources;
use crate::staged::Staged;
use crate::{bronze, serving, BatchError, Result};

/// A step: the lake table it publishes, the name SQL refers to it by, its SQL, and what an
/// incremental run recomputes of it.
pub struct SqlStep {
    pub table: &'static str,
    pub name: &'static str,
    pub sql: &'static str,
    pub scope: Scope,
    /// Its joins hold a side's rows by the scope's key in memory: it is computed in slices of
    /// the key when they would not fit ([`crate::slices`]).
    pub sliced: bool,
}

/// `step!(Days, "mart", "revenue_daily")`: table `mart/revenue_daily`, name `revenue_daily`,
/// SQL `sql/mart_revenue_daily.sql`, recomputed by day; `step!(Orders, "silver", "orders",
/// "silver_orders")` names it.
/// `step!(Orders sliced, "gold", "fact_orders")` is computed in slices when its joins need to.
macro_rules! step {
    ($scope:ident $($sliced:ident)?, $layer:literal, $table:literal) => {
        step!($scope $($sliced)?, $layer, $table, $table)
    };
    ($scope:ident, $layer:literal, $table:literal, $name:literal) => {
        SqlStep {
            table: concat!($layer, "/", $table),
            name: $name,
            sql: include_str!(concat!("../sql/", $layer, "_", $table, ".sql")),
            scope: Scope::$scope,
            sliced: false,
        }
    };
    ($scope:ident sliced, $layer:literal, $table:literal, $name:literal) => {
        SqlStep {
            sliced: true,
            ..step!($scope, $layer, $table, $name)
        }
    };
}

/// Silver: current state of orders and lines; every version of each dimension, and its latest,
/// deduplicated and cleaned.
pub const SILVER: [SqlStep; 10] = [
    step!(Orders, "silver", "orders", "silver_orders"),
    step!(Orders, "silver", "order_lines", "silver_order_lines"),
    step!(Orders, "silver", "suggestions", "silver_suggestions"),
    step!(Whole, "silver", "stores_versions", "silver_stores_versions"),
    step!(Whole, "silver", "stores", "silver_stores"),
    step!(
        Whole,
        "silver",
        "payment_method_versions",
        "silver_payment_method_versions"
    ),
    step!(Whole, "silver", "payment_method", "silver_payment_method"),
    step!(
        Whole,
        "silver",
        "product_category",
        "silver_product_category"
    ),
    step!(
        Whole,
        "silver",
        "products_versions",
        "silver_products_versions"
    ),
    step!(Whole, "silver", "products", "silver_products"),
];

/// Gold: the SCD type 2 dimensions, the facts joined to the versions valid at order time, then
/// the marts over them: by day (an incremental run recomputes the days touched), and over all
/// days from those (hourly sales, basket sizes, the payment mix and product affinity add up
/// their days').
pub const GOLD: [SqlStep; 19] = [
    step!(Whole, "gold", "dim_stores"),
    step!(Whole, "gold", "dim_payment_method"),
    step!(Whole, "gold", "dim_products"),
    step!(Orders sliced, "gold", "fact_orders"),
    step!(Orders sliced, "gold", "fact_order_lines"),
    step!(Days, "mart", "revenue_hourly"),
    step!(Days, "mart", "revenue_daily"),
    step!(Days, "mart", "suggestions_daily"),
    step!(Days, "mart", "revenue_store_daily"),
    step!(Days, "mart", "revenue_city_daily"),
    step!(Days, "mart", "revenue_category_daily"),
    step!(Days, "mart", "revenue_product_daily"),
    step!(Whole, "mart", "hourly_sales"),
    step!(Days, "mart", "basket_size_daily"),
    step!(Whole, "mart", "basket_size"),
    step!(Days, "mart", "payment_mix_daily"),
    step!(Whole, "mart", "payment_mix"),
    step!(Days sliced, "mart", "basket_pairs_daily"),
    step!(Whole, "mart", "product_affinity"),
];

/// What a table got in this run.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub table: String,
    pub rows: u64,
    pub seconds: f64,
    /// The Delta version written (`None`: not published).
    pub version: Option<i64>,
    /// In how many slices it was computed ([`crate::slices`]).
    pub slices: usize,
}

/// What a run did; written as JSON and summarised for people.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub lake: String,
    /// The layers this run built (or checked).
    pub layers: Vec<Layer>,
    pub tables: Vec<TableReport>,
    pub gates: Vec<GateResult>,
    /// The layer whose gates failed (nothing after it was published).
    pub failed_layer: Option<String>,
    /// Seconds spent in the gates' queries, and in the commits publishing the tables (the
    /// tables' own seconds are their queries and the writing of their files).
    pub gates_seconds: f64,
    pub commits_seconds: f64,
    /// Seconds spent finding what to recompute (the orders the landed events touch) and
    /// recording what the layers were built from.
    pub plan_seconds: f64,
    /// How silver and gold were computed: incremental (and what was touched) or rebuilt
    /// whole (and why).
    pub refresh: BTreeMap<String, String>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.failed_layer.is_none()
    }

    /// A readable summary: rows per table, then the gates that failed.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "batch run {} on {}: {}\n",
            self.run_id,
            self.lake,
            match &self.failed_layer {
                None => "every gate passed".to_string(),
                Some(layer) => format!("FAILED at the {layer} gates; nothing after it published"),
            }
        );
        for (layer, how) in &self.refresh {
            out.push_str(&format!("  {layer}: {how}\n"));
        }
        for t in &self.tables {
            out.push_str(&format!(
                "  {:<32} {:>10} rows  {:>7.2} s  {}{}\n",
                t.table,
                t.rows,
                t.seconds,
                t.version
                    .map_or_else(|| "not published".to_string(), |v| format!("version {v}")),
                if t.slices > 1 {
                    format!(" ({} slices)", t.slices)
                } else {
                    String::new()
                }
            ));
        }
        let failed: Vec<&GateResult> = self.gates.iter().filter(|g| !g.passed()).collect();
        out.push_str(&format!(
            "  gates: {} checked, {} failed ({:.2} s); commits {:.2} s; planning {:.2} s\n",
            self.gates.len(),
            failed.len(),
            self.gates_seconds,
            self.commits_seconds,
            self.plan_seconds
        ));
        for g in failed {
            out.push_str(&format!(
                "    FAILED {} ({}): {} violating rows\n",
                g.name, g.layer, g.violations
            ));
        }
        out
    }
}

/// A layer of the lake, in the order they are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Bronze,
    Silver,
    Gold,
}

impl Layer {
    pub const ALL: [Layer; 3] = [Layer::Bronze, Layer::Silver, Layer::Gold];

    pub fn name(self) -> &'static str {
        match self {
            Layer::Bronze => "bronze",
            Layer::Silver => "silver",
            Layer::Gold => "gold",
        }
    }

    pub fn parse(s: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.name() == s)
    }

    /// Its gates.
    pub fn gates(self) -> &'static [gates::Gate] {
        match self {
            Layer::Bronze => gates::BRONZE,
            Layer::Silver => gates::SILVER,
            Layer::Gold => gates::GOLD,
        }
    }

    /// Its tables and the names SQL refers to them by.
    pub fn tables(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Layer::Bronze => bronze::TABLES.to_vec(),
            _ => self.steps().iter().map(|s| (s.table, s.name)).collect(),
        }
    }

    /// Of `versions` (table → Delta version), those of its tables.
    pub fn versions_in(self, versions: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
        let tables = self.tables();
        versions
            .iter()
            .filter(|(t, _)| tables.iter().any(|(table, _)| table == t))
            .map(|(t, v)| (t.clone(), *v))
            .collect()
    }

    /// Its SQL steps, in build order (none for bronze, which is landed).
    pub fn steps(self) -> &'static [SqlStep] {
        match self {
            Layer::Bronze => &[],
            Layer::Silver => &SILVER,
            Layer::Gold => &GOLD,
        }
    }
}

/// Computes `steps` in `ctx`, each staged as its table's next version and registered under
/// its name as it is made, so later steps and the gates read it.
async fn compute(
    ctx: &SessionContext,
    lake: &Lake,
    steps: &[SqlStep],
    plan: &mut Plan,
    tables: &mut Vec<TableReport>,
) -> Result<Vec<Staged>> {
    let mut out = Vec::new();
    for step in steps {
        let began = Instant::now();
        let mut slices = 1;
        let staged = match plan.frame(ctx, lake, step).await {
            Ok((parts, kept)) => {
                slices = parts.len();
                lake.stage_onto(step.table, parts, kept).await
            }
            Err(e) => Err(e),
        };
        let staged = match staged {
            Ok(staged) => staged,
            Err(e) => {
                discard(lake, out).await;
                return Err(e);
            }
        };
        staged.register(ctx, step.name)?;
        plan.staged(ctx, step, &staged)?;
        tables.push(TableReport {
            table: step.table.to_string(),
            rows: staged.rows,
            seconds: began.elapsed().as_secs_f64(),
            version: None,
            slices,
        });
        out.push(staged);
    }
    Ok(out)
}

/// Deletes the files of staged versions that will not be published; a failure to is logged
/// (the files stay unnamed by any version, for a vacuum).
async fn discard(lake: &Lake, staged: Vec<Staged>) {
    for s in staged {
        let table = s.table;
        if let Err(e) = lake.discard(s).await {
            tracing::warn!(table, error = %e, "the staged files stay for a vacuum");
        }
    }
}

/// Publishes staged tables (each replaced in one commit).
async fn publish(
    lake: &Lake,
    staged: Vec<Staged>,
    tables: &mut [TableReport],
    run_id: &str,
) -> Result<Vec<(String, i64)>> {
    let mut versions = Vec::new();
    for s in staged {
        let table = s.table;
        let metadata =
            serde_json::Map::from_iter([("brewline.run".to_string(), serde_json::json!(run_id))]);
        let version = lake
            .publish_staged(s, CommitProperties::default().with_metadata(metadata))
            .await?;
        if let Some(t) = tables.iter_mut().rev().find(|t| t.table == table) {
            t.version = Some(version);
        }
        versions.push((table.to_string(), version));
    }
    Ok(versions)
}

/// Registers the published tables of `layer` in `ctx`, and says which versions; an error names
/// the first one missing.
async fn register_published(
    ctx: &SessionContext,
    lake: &Lake,
    layer: Layer,
) -> Result<Vec<(String, i64)>> {
    let mut versions = Vec::new();
    for (table, name) in layer.tables() {
        match lake.register(ctx, table, name).await? {
            Some(version) => versions.push((table.to_string(), version)),
            None => return Err(BatchError::Empty(table.to_string())),
        }
    }
    Ok(versions)
}

/// Runs the gates of `layer` in `ctx` (those by order in `by_order`, when given) into `report`;
/// true when they pass.
async fn gate(
    ctx: &SessionContext,
    layer: Layer,
    report: &mut RunReport,
    by_order: Option<&SessionContext>,
) -> Result<bool> {
    let began = Instant::now();
    let results = gates::check(ctx, layer.name(), layer.gates(), by_order).await;
    report.gates_seconds += began.elapsed().as_secs_f64();
    let results = results?;
    let passed = results.iter().all(GateResult::passed);
    report.gates.extend(results);
    if !passed {
        report.failed_layer = Some(layer.name().into());
    }
    Ok(passed)
}

/// A bronze gate per gap in the landed events (events deleted before they were landed): failed,
/// with the way on, unless the gaps were accepted. True when nothing was lost unaccepted.
fn gap_gates(gaps: &[bronze::Gap], accepted: bool, report: &mut RunReport) -> bool {
    for g in gaps {
        report.gates.push(GateResult {
            layer: Layer::Bronze.name().into(),
            name: if accepted {
                format!("{} (accepted: landed from offset {})", g.describe(), g.earliest)
            } else {
                format!("{}: nothing of the topic landed; `brewline batch run --accept-lost-events` lands from the earliest event left", g.describe())
            },
            violations: if accepted { 0 } else { g.lost() },
        });
    }
    accepted || gaps.is_empty()
}

fn new_report(lake: &Lake) -> RunReport {
    let started_ms = brewline_ports::now_ms();
    RunReport {
        run_id: format!("run-{started_ms}"),
        started_ms,
        finished_ms: 0,
        lake: lake.root().to_string(),
        layers: Vec::new(),
        tables: Vec::new(),
        gates: Vec::new(),
        failed_layer: None,
        gates_seconds: 0.0,
        commits_seconds: 0.0,
        plan_seconds: 0.0,
        refresh: BTreeMap::new(),
    }
}

/// One run of the batch layer: all three layers, silver and gold incremental where they can be.
pub async fn run(sources: &Sources<'_>, lake: &Lake) -> Result<RunReport> {
    run_layers(sources, lake, &Layer::ALL, Mode::Incremental).await
}

/// Builds `layers` (a layer not listed that a later one reads is taken as published): bronze
/// lands the new events and the dimensions; silver and gold are computed ([`Mode`]) and
/// staged, checked by their gates and published only when those pass. A layer whose gates
/// fail ends the run.
pub async fn run_layers(
    sources: &Sources<'_>,
    lake: &Lake,
    layers: &[Layer],
    mode: Mode,
) -> Result<RunReport> {
    build(Some(sources), lake, layers, mode).await
}

/// Builds silver and/or gold from what bronze holds (no sources: bronze is not landed).
pub async fn run_built_layers(lake: &Lake, layers: &[Layer], mode: Mode) -> Result<RunReport> {
    build(None, lake, layers, mode).await
}

/// Builds under the lake's lock ([`RunLock`]), given back whatever happens.
async fn build(
    sources: Option<&Sources<'_>>,
    lake: &Lake,
    layers: &[Layer],
    mode: Mode,
) -> Result<RunReport> {
    let report = new_report(lake);
    let lock = RunLock::acquire(lake, &report.run_id).await?;
    let built = build_locked(sources, lake, layers, mode, report, &lock).await;
    lock.release().await;
    built
}

async fn build_locked(
    sources: Option<&Sources<'_>>,
    lake: &Lake,
    layers: &[Layer],
    mode: Mode,
    mut report: RunReport,
    lock: &RunLock,
) -> Result<RunReport> {
    let last = layers.iter().max().copied().unwrap_or(Layer::Bronze);
    let ctx = lake.session()?;
    // The version of every table the run read or wrote, for the serving layer's manifest.
    let mut versions = BTreeMap::new();
    let mut silver = SilverInRun::Published;
    for layer in Layer::ALL.into_iter().filter(|l| *l <= last) {
        if !layers.contains(&layer) {
            versions.extend(register_published(&ctx, lake, layer).await?);
            continue;
        }
        report.layers.push(layer);
        lock.ensure_held()?;
        let passed = match layer {
            Layer::Bronze => {
                // Landed as it is read (its commits carry the offsets), then checked.
                let began = Instant::now();
                let sources = sources.ok_or_else(|| {
                    BatchError::lake("bronze", "landing bronze needs the sources")
                })?;
                let landed = bronze::land(sources, lake, &report.run_id).await?;
                let seconds = began.elapsed().as_secs_f64();
                for (table, rows) in landed.events.iter().chain(&landed.dimensions) {
                    report.tables.push(TableReport {
                        table: table.clone(),
                        rows: *rows,
                        seconds,
                        version: lake.version(table).await?,
                        slices: 1,
                    });
                }
                let kept = gap_gates(&landed.gaps, sources.accept_lost_events, &mut report);
                versions.extend(register_published(&ctx, lake, layer).await?);
                let passed = gate(&ctx, layer, &mut report, None).await? && kept;
                if !passed {
                    report.failed_layer = Some(layer.name().into());
                }
                passed
            }
            Layer::Silver | Layer::Gold => {
                let began = Instant::now();
                let mut plan: Plan = if layer == Layer::Silver {
                    incremental::plan_silver(&ctx, lake, mode).await?
                } else {
                    let silver = std::mem::replace(&mut silver, SilverInRun::Published);
                    incremental::plan_gold(&ctx, lake, mode, silver).await?
                };
                let steps = layer.steps();
                report.plan_seconds += began.elapsed().as_secs_f64();
                let computed = compute(&ctx, lake, steps, &mut plan, &mut report.tables).await;
                report
                    .refresh
                    .insert(layer.name().to_string(), plan.describe());
                let computed = computed?;
                // Reading what the gates by order check counts as the gates' time.
                let began = Instant::now();
                let by_order = plan.by_order_session(&ctx, layer.gates()).await;
                report.gates_seconds += began.elapsed().as_secs_f64();
                let by_order = match by_order {
                    Ok(session) => session,
                    Err(e) => {
                        discard(lake, computed).await;
                        return Err(e);
                    }
                };
                let passed = match gate(&ctx, layer, &mut report, by_order.as_ref()).await {
                    Ok(passed) => passed,
                    Err(e) => {
                        discard(lake, computed).await;
                        return Err(e);
                    }
                };
                if !passed {
                    discard(lake, computed).await;
                } else {
                    lock.ensure_held()?;
                    let run_id = report.run_id.clone();
                    let began = Instant::now();
                    versions.extend(publish(lake, computed, &mut report.tables, &run_id).await?);
                    report.commits_seconds += began.elapsed().as_secs_f64();
                    match layer {
                        Layer::Silver => {
                            serving::record_silver_inputs(lake, &versions).await?;
                            let began = Instant::now();
                            incremental::record_silver(&ctx, lake, &versions, &plan).await?;
                            report.plan_seconds += began.elapsed().as_secs_f64();
                            silver = plan.silver_outcome();
                        }
                        Layer::Gold if layers.contains(&Layer::Silver) => {
                            incremental::record_gold(lake, &versions).await?;
                            serving::publish(lake, &ctx, &run_id, std::mem::take(&mut versions))
                                .await?;
                        }
                        _ => {
                            // Silver was built by an earlier run: the bronze it read is the
                            // watermark, whatever bronze landed since.
                            incremental::record_gold(lake, &versions).await?;
                            serving::bronze_of_silver(lake, &mut versions).await?;
                            serving::publish(lake, &ctx, &run_id, std::mem::take(&mut versions))
                                .await?;
                        }
                    }
                }
                passed
            }
        };
        if !passed {
            break;
        }
    }
    report.finished_ms = brewline_ports::now_ms();
    Ok(report)
}

/// Checks the published tables of `layer` (and those before it, which its gates reconcile
/// with) against its gates, as a task of its own (the Airflow DAG's gate tasks).
pub async fn check(lake: &Lake, layer: Layer) -> Result<RunReport> {
    let mut report = new_report(lake);
    let ctx = lake.session()?;
    for l in Layer::ALL.into_iter().filter(|l| *l <= layer) {
        register_published(&ctx, lake, l).await?;
    }
    report.layers.push(layer);
    gate(&ctx, layer, &mut report, None).await?;
    report.finished_ms = brewline_ports::now_ms();
    Ok(report)
}
