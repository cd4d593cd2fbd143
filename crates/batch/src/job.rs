//! One batch run: bronze → gates → silver → gates → gold and marts → gates, each layer
//! computed in memory, checked, and only then published (one Delta commit per table). A gate
//! that fails stops the run before the next layer is written: the lake keeps the previous run's
//! tables.
//!
//! The silver, gold and mart transformations are the SQL files of `crates/batch/sql/`, written
//! in the dialect DataFusion and Spark SQL share, so they run unchanged on Spark.

use std::collections::BTreeMap;
use std::time::Instant;

use brewline_core::DimensionExtract;
use brewline_ports::EventLog;
use deltalake::arrow::array::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use serde::Serialize;

use crate::gates::{self, GateResult};
use crate::lake::{self, Lake};
use crate::{bronze, BatchError, Result};

/// A step: the lake table it publishes, the name SQL refers to it by, and its SQL.
pub struct Step {
    pub table: &'static str,
    pub name: &'static str,
    pub sql: &'static str,
}

/// `step!("mart", "revenue_daily")`: table `mart/revenue_daily`, name `revenue_daily`, SQL
/// `sql/mart_revenue_daily.sql`; `step!("silver", "orders", "silver_orders")` names it.
macro_rules! step {
    ($layer:literal, $table:literal) => {
        step!($layer, $table, $table)
    };
    ($layer:literal, $table:literal, $name:literal) => {
        Step {
            table: concat!($layer, "/", $table),
            name: $name,
            sql: include_str!(concat!("../sql/", $layer, "_", $table, ".sql")),
        }
    };
}

/// Silver: current state of orders and lines; every version of each dimension, and its latest,
/// deduplicated and cleaned.
pub const SILVER: [Step; 9] = [
    step!("silver", "orders", "silver_orders"),
    step!("silver", "order_lines", "silver_order_lines"),
    step!("silver", "stores_versions", "silver_stores_versions"),
    step!("silver", "stores", "silver_stores"),
    step!(
        "silver",
        "payment_method_versions",
        "silver_payment_method_versions"
    ),
    step!("silver", "payment_method", "silver_payment_method"),
    step!("silver", "product_category", "silver_product_category"),
    step!("silver", "products_versions", "silver_products_versions"),
    step!("silver", "products", "silver_products"),
];

/// Gold: the SCD type 2 dimensions, the facts joined to the versions valid at order time, then
/// the marts over them.
pub const GOLD: [Step; 14] = [
    step!("gold", "dim_stores"),
    step!("gold", "dim_payment_method"),
    step!("gold", "dim_products"),
    step!("gold", "fact_orders"),
    step!("gold", "fact_order_lines"),
    step!("mart", "revenue_daily"),
    step!("mart", "revenue_store_daily"),
    step!("mart", "revenue_city_daily"),
    step!("mart", "revenue_category_daily"),
    step!("mart", "revenue_product_daily"),
    step!("mart", "hourly_sales"),
    step!("mart", "basket_size"),
    step!("mart", "payment_mix"),
    step!("mart", "product_affinity"),
];

/// What a table got in this run.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub table: String,
    pub rows: u64,
    pub seconds: f64,
    /// The Delta version written (`None`: not published).
    pub version: Option<i64>,
}

/// What a run did; written as JSON and summarised for people.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub lake: String,
    pub tables: Vec<TableReport>,
    pub gates: Vec<GateResult>,
    /// The layer whose gates failed (nothing after it was published).
    pub failed_layer: Option<String>,
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
        for t in &self.tables {
            out.push_str(&format!(
                "  {:<32} {:>10} rows  {:>7.2} s  {}\n",
                t.table,
                t.rows,
                t.seconds,
                t.version
                    .map_or_else(|| "not published".to_string(), |v| format!("version {v}"))
            ));
        }
        let failed: Vec<&GateResult> = self.gates.iter().filter(|g| !g.passed()).collect();
        out.push_str(&format!(
            "  gates: {} checked, {} failed\n",
            self.gates.len(),
            failed.len()
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

/// Where a run reads from and writes to.
pub struct Sources<'a> {
    pub log: &'a dyn EventLog,
    pub orders_topic: &'a str,
    pub order_details_topic: &'a str,
    pub dimensions: &'a DimensionExtract,
}

/// Computes `steps` in `ctx` (each registered under its name as it is made, so later steps
/// read earlier ones), in memory.
async fn compute(
    ctx: &SessionContext,
    steps: &[Step],
    tables: &mut Vec<TableReport>,
) -> Result<Vec<(&'static str, Vec<RecordBatch>)>> {
    let mut out = Vec::new();
    for step in steps {
        let began = Instant::now();
        let df = ctx
            .sql(step.sql)
            .await
            .map_err(|e| BatchError::lake(step.table, e))?;
        let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
        let mut batches = df
            .collect()
            .await
            .map_err(|e| BatchError::lake(step.table, e))?;
        if batches.is_empty() {
            // An empty result is still a table, with its columns.
            batches.push(RecordBatch::new_empty(schema.clone()));
        }
        ctx.register_table(step.name, lake::in_memory(batches.clone(), schema)?)
            .map_err(|e| BatchError::lake(step.table, e))?;
        tables.push(TableReport {
            table: step.table.to_string(),
            rows: lake::rows(&batches) as u64,
            seconds: began.elapsed().as_secs_f64(),
            version: None,
        });
        out.push((step.table, batches));
    }
    Ok(out)
}

/// Publishes computed tables (each replaced in one commit).
async fn publish(
    lake: &Lake,
    computed: Vec<(&'static str, Vec<RecordBatch>)>,
    tables: &mut [TableReport],
    run_id: &str,
) -> Result<()> {
    for (table, batches) in computed {
        let metadata =
            serde_json::Map::from_iter([("brewline.run".to_string(), serde_json::json!(run_id))]);
        let version = lake
            .write(
                table,
                batches,
                SaveMode::Overwrite,
                &BTreeMap::new(),
                metadata,
            )
            .await?;
        if let Some(t) = tables.iter_mut().rev().find(|t| t.table == table) {
            t.version = Some(version);
        }
    }
    Ok(())
}

/// One run of the batch layer.
pub async fn run(sources: &Sources<'_>, lake: &Lake) -> Result<RunReport> {
    let started_ms = brewline_ports::now_ms();
    let run_id = format!("run-{started_ms}");
    let mut report = RunReport {
        run_id: run_id.clone(),
        started_ms,
        finished_ms: 0,
        lake: lake.root().to_string(),
        tables: Vec::new(),
        gates: Vec::new(),
        failed_layer: None,
    };

    // Bronze: landed as it is read (its commits carry the offsets).
    let began = Instant::now();
    let landed = bronze::land(
        sources.log,
        sources.orders_topic,
        sources.order_details_topic,
        sources.dimensions,
        lake,
        &run_id,
    )
    .await?;
    let seconds = began.elapsed().as_secs_f64();
    for (table, rows) in landed.events.iter().chain(&landed.dimensions) {
        report.tables.push(TableReport {
            table: table.clone(),
            rows: *rows,
            seconds,
            version: lake.version(table).await?,
        });
    }
    let ctx = SessionContext::new();
    for (table, name) in [
        (bronze::ORDERS, "bronze_orders"),
        (bronze::ORDER_LINES, "bronze_order_lines"),
        (bronze::STORES, "bronze_stores"),
        (bronze::PAYMENT_METHODS, "bronze_payment_method"),
        (bronze::CATEGORIES, "bronze_product_category"),
        (bronze::PRODUCTS, "bronze_products"),
    ] {
        if !lake.register(&ctx, table, name).await? {
            return Err(BatchError::Empty(table.to_string()));
        }
    }
    let gate = gates::check(&ctx, "bronze", gates::BRONZE).await?;
    let failed = gate.iter().any(|g| !g.passed());
    report.gates.extend(gate);
    if failed {
        report.failed_layer = Some("bronze".into());
        report.finished_ms = brewline_ports::now_ms();
        return Ok(report);
    }

    for (layer, steps, checks) in [
        ("silver", &SILVER[..], gates::SILVER),
        ("gold", &GOLD[..], gates::GOLD),
    ] {
        let computed = compute(&ctx, steps, &mut report.tables).await?;
        let gate = gates::check(&ctx, layer, checks).await?;
        let failed = gate.iter().any(|g| !g.passed());
        report.gates.extend(gate);
        if failed {
            report.failed_layer = Some(layer.into());
            break;
        }
        publish(lake, computed, &mut report.tables, &run_id).await?;
    }
    report.finished_ms = brewline_ports::now_ms();
    Ok(report)
}
