//! The run history in a SQLite file.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::{layers, RunHistory, RunSummary, RECENT, SCHEMA};
use crate::job::RunReport;
use crate::{BatchError, Result};

pub struct SqliteHistory {
    conn: Arc<Mutex<Connection>>,
}

fn error(e: impl std::fmt::Display) -> BatchError {
    BatchError::History(e.to_string())
}

impl SqliteHistory {
    /// Opens (creating) the history at `path`.
    pub fn open(path: &Path) -> Result<SqliteHistory> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(error)?;
        }
        let conn = Connection::open(path).map_err(error)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(error)?;
        for ddl in SCHEMA {
            conn.execute(ddl, []).map_err(error)?;
        }
        Ok(SqliteHistory {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().map_err(|_| error("history lock poisoned"))?;
            f(&mut c).map_err(error)
        })
        .await
        .map_err(error)?
    }
}

#[async_trait]
impl RunHistory for SqliteHistory {
    async fn record(&self, report: &RunReport) -> Result<()> {
        let r = report.clone();
        let json = serde_json::to_string(report).map_err(error)?;
        let layers = layers(report);
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO batch_runs (run_id, started_ms, finished_ms, lake, layers, passed, failed_layer, report)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (run_id) DO NOTHING",
                params![r.run_id, r.started_ms, r.finished_ms, r.lake, layers, r.passed(), r.failed_layer, json],
            )?;
            for t in &r.tables {
                tx.execute(
                    "INSERT INTO batch_run_tables (run_id, table_name, row_count, seconds, version)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                    params![r.run_id, t.table, t.rows as i64, t.seconds, t.version],
                )?;
            }
            for g in &r.gates {
                tx.execute(
                    "INSERT INTO batch_run_gates (run_id, layer, gate, violations)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    params![r.run_id, g.layer, g.name, g.violations as i64],
                )?;
            }
            tx.commit()
        })
        .await
    }

    async fn recent(&self, limit: usize) -> Result<Vec<RunSummary>> {
        let sql = format!("{RECENT}{limit}");
        self.with(move |c| {
            c.prepare(&sql)?
                .query_map([], |r| {
                    Ok(RunSummary {
                        run_id: r.get(0)?,
                        started_ms: r.get(1)?,
                        finished_ms: r.get(2)?,
                        lake: r.get(3)?,
                        layers: r.get(4)?,
                        passed: r.get(5)?,
                        failed_layer: r.get(6)?,
                        rows: r.get(7)?,
                        gates_failed: r.get(8)?,
                    })
                })?
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_are_recorded_once_and_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let h = SqliteHistory::open(&dir.path().join("history.sqlite")).unwrap();
        super::super::conformance(&h).await;
    }
}
