//! Run history: each batch run's start, end, layers, rows and version per table and gate
//! results, in SQLite (the default, a file next to the data) or PostgreSQL (shared by a
//! team's runs). `brewline batch history` reads it back.

mod postgres;
mod sqlite;

use async_trait::async_trait;
use serde::Serialize;

pub use self::postgres::PostgresHistory;
pub use self::sqlite::SqliteHistory;
use crate::job::RunReport;
use crate::Result;

/// A run as the history lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub lake: String,
    pub layers: String,
    pub passed: bool,
    pub failed_layer: Option<String>,
    /// Rows written, over every table of the run.
    pub rows: i64,
    pub gates_failed: i64,
}

/// Where run reports are kept.
#[async_trait]
pub trait RunHistory: Send + Sync {
    /// Records a run (a report recorded twice is kept once).
    async fn record(&self, report: &RunReport) -> Result<()>;

    /// The latest `limit` runs, newest first.
    async fn recent(&self, limit: usize) -> Result<Vec<RunSummary>>;
}

/// The tables, in SQL both SQLite and PostgreSQL take.
const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS batch_runs (
        run_id TEXT PRIMARY KEY,
        started_ms BIGINT NOT NULL,
        finished_ms BIGINT NOT NULL,
        lake TEXT NOT NULL,
        layers TEXT NOT NULL,
        passed BOOLEAN NOT NULL,
        failed_layer TEXT,
        report TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS batch_run_tables (
        run_id TEXT NOT NULL REFERENCES batch_runs (run_id),
        table_name TEXT NOT NULL,
        row_count BIGINT NOT NULL,
        seconds DOUBLE PRECISION NOT NULL,
        version BIGINT,
        PRIMARY KEY (run_id, table_name)
    )",
    "CREATE TABLE IF NOT EXISTS batch_run_gates (
        run_id TEXT NOT NULL REFERENCES batch_runs (run_id),
        layer TEXT NOT NULL,
        gate TEXT NOT NULL,
        violations BIGINT NOT NULL,
        PRIMARY KEY (run_id, layer, gate)
    )",
];

/// The latest runs with their row and failed-gate counts.
const RECENT: &str = "SELECT r.run_id, r.started_ms, r.finished_ms, r.lake, r.layers, r.passed, r.failed_layer,
        CAST(COALESCE((SELECT SUM(t.row_count) FROM batch_run_tables t WHERE t.run_id = r.run_id), 0) AS BIGINT),
        (SELECT COUNT(*) FROM batch_run_gates g WHERE g.run_id = r.run_id AND g.violations > 0)
    FROM batch_runs r ORDER BY r.started_ms DESC, r.run_id DESC LIMIT ";

fn layers(report: &RunReport) -> String {
    report
        .layers
        .iter()
        .map(|l| l.name())
        .collect::<Vec<_>>()
        .join(",")
}

/// The behaviour every history shows (called by each one's tests).
#[cfg(test)]
pub(crate) async fn conformance(history: &dyn RunHistory) {
    use crate::gates::GateResult;
    use crate::job::{Layer, TableReport};
    let report = |id: &str, started: i64, passed: bool| RunReport {
        run_id: id.into(),
        started_ms: started,
        finished_ms: started + 1500,
        lake: "/lake".into(),
        layers: vec![Layer::Bronze, Layer::Silver],
        tables: vec![
            TableReport {
                table: "bronze/orders_cdc".into(),
                rows: 10,
                seconds: 0.5,
                version: Some(3),
                slices: 1,
            },
            TableReport {
                table: "silver/orders".into(),
                rows: 7,
                seconds: 0.25,
                version: None,
                slices: 1,
            },
        ],
        gates: vec![GateResult {
            layer: "silver".into(),
            name: "orders: order_id is unique".into(),
            violations: u64::from(!passed),
        }],
        failed_layer: (!passed).then(|| "silver".into()),
        gates_seconds: 0.1,
        commits_seconds: 0.2,
        plan_seconds: 0.3,
        refresh: Default::default(),
    };
    history.record(&report("run-1", 1000, true)).await.unwrap();
    history.record(&report("run-2", 2000, false)).await.unwrap();
    history.record(&report("run-2", 2000, false)).await.unwrap();
    let recent = history.recent(10).await.unwrap();
    assert_eq!(recent.len(), 2, "{recent:?}");
    assert_eq!(
        recent[0],
        RunSummary {
            run_id: "run-2".into(),
            started_ms: 2000,
            finished_ms: 3500,
            lake: "/lake".into(),
            layers: "bronze,silver".into(),
            passed: false,
            failed_layer: Some("silver".into()),
            rows: 17,
            gates_failed: 1,
        }
    );
    assert!(recent[1].passed && recent[1].gates_failed == 0);
    assert_eq!(history.recent(1).await.unwrap().len(), 1);
}
