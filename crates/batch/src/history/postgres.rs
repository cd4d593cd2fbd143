//! The run history in PostgreSQL (`batch.history = "postgres://..."`).

use async_trait::async_trait;
use tokio_postgres::{Client, NoTls};

use super::{layers, RunHistory, RunSummary, RECENT, SCHEMA};
use crate::job::RunReport;
use crate::{BatchError, Result};

pub struct PostgresHistory {
    client: Client,
}

fn error(e: impl std::fmt::Display) -> BatchError {
    BatchError::History(e.to_string())
}

impl PostgresHistory {
    /// Connects to `url` (`postgres://user:password@host:port/db`) and creates the tables.
    pub async fn connect(url: &str) -> Result<PostgresHistory> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| error(format!("connecting to PostgreSQL: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        for ddl in SCHEMA {
            client.batch_execute(ddl).await.map_err(error)?;
        }
        Ok(PostgresHistory { client })
    }
}

#[async_trait]
impl RunHistory for PostgresHistory {
    async fn record(&self, r: &RunReport) -> Result<()> {
        let json = serde_json::to_string(r).map_err(error)?;
        let layers = layers(r);
        // One statement per row, all in one transaction (the client is shared, so the
        // transaction is written out as SQL rather than borrowed mutably).
        self.client.batch_execute("BEGIN").await.map_err(error)?;
        let result = async {
            self.client
                .execute(
                    "INSERT INTO batch_runs (run_id, started_ms, finished_ms, lake, layers, passed, failed_layer, report)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (run_id) DO NOTHING",
                    &[&r.run_id, &r.started_ms, &r.finished_ms, &r.lake, &layers, &r.passed(), &r.failed_layer, &json],
                )
                .await?;
            for t in &r.tables {
                self.client
                    .execute(
                        "INSERT INTO batch_run_tables (run_id, table_name, row_count, seconds, version)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        &[&r.run_id, &t.table, &(t.rows as i64), &t.seconds, &t.version],
                    )
                    .await?;
            }
            for g in &r.gates {
                self.client
                    .execute(
                        "INSERT INTO batch_run_gates (run_id, layer, gate, violations)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[&r.run_id, &g.layer, &g.name, &(g.violations as i64)],
                    )
                    .await?;
            }
            Ok::<(), tokio_postgres::Error>(())
        }
        .await;
        match result {
            Ok(()) => self.client.batch_execute("COMMIT").await.map_err(error),
            Err(e) => {
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(error(e))
            }
        }
    }

    async fn recent(&self, limit: usize) -> Result<Vec<RunSummary>> {
        let rows = self
            .client
            .query(&format!("{RECENT}{limit}"), &[])
            .await
            .map_err(error)?;
        rows.iter()
            .map(|r| {
                Ok(RunSummary {
                    run_id: r.try_get(0).map_err(error)?,
                    started_ms: r.try_get(1).map_err(error)?,
                    finished_ms: r.try_get(2).map_err(error)?,
                    lake: r.try_get(3).map_err(error)?,
                    layers: r.try_get(4).map_err(error)?,
                    passed: r.try_get(5).map_err(error)?,
                    failed_layer: r.try_get(6).map_err(error)?,
                    rows: r.try_get::<_, i64>(7).map_err(error)?,
                    gates_failed: r.try_get(8).map_err(error)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs the PostgreSQL server scripts/test starts (TEST_BREWLINE_POSTGRES_URL).
    #[tokio::test]
    #[ignore = "needs PostgreSQL: run scripts/test"]
    async fn runs_are_recorded_once_and_listed_newest_first() {
        let url = std::env::var("TEST_BREWLINE_POSTGRES_URL")
            .expect("TEST_BREWLINE_POSTGRES_URL is set: run through scripts/test");
        let h = PostgresHistory::connect(&url).await.unwrap();
        h.client
            .batch_execute("DROP TABLE IF EXISTS batch_run_gates, batch_run_tables, batch_runs")
            .await
            .unwrap();
        let h = PostgresHistory::connect(&url).await.unwrap();
        super::super::conformance(&h).await;
    }
}
