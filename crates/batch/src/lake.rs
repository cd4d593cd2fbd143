//! The lake: Delta Lake tables under one root (a local folder; S3 comes with its handlers),
//! named `{layer}/{table}`. Every write is one Delta commit: a failed or killed run leaves the
//! previous versions as they were.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;

use crate::{BatchError, Result};

/// The lake's root and the tables in it.
#[derive(Debug, Clone)]
pub struct Lake {
    root: String,
}

impl Lake {
    /// A lake at a local path (created when missing).
    pub fn at(root: impl Into<String>) -> Lake {
        Lake { root: root.into() }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    fn location(&self, table: &str) -> String {
        format!("{}/{table}", self.root.trim_end_matches('/'))
    }

    /// The table, or an empty handle when it was never written.
    pub async fn open(&self, table: &str) -> Result<DeltaTable> {
        let url = deltalake::ensure_table_uri(self.location(table))
            .map_err(|e| BatchError::lake(table, e))?;
        DeltaTable::try_from_url(url)
            .await
            .map_err(|e| BatchError::lake(table, e))
    }

    /// The table's current version (`None`: never written).
    pub async fn version(&self, table: &str) -> Result<Option<i64>> {
        Ok(self.open(table).await?.version().map(|v| v as i64))
    }

    /// Registers the table in `ctx` under `name`; false when it was never written.
    pub async fn register(&self, ctx: &SessionContext, table: &str, name: &str) -> Result<bool> {
        let t = self.open(table).await?;
        if t.version().is_none() {
            return Ok(false);
        }
        let provider = t
            .table_provider()
            .await
            .map_err(|e| BatchError::lake(table, e))?;
        ctx.register_table(name, provider)
            .map_err(|e| BatchError::lake(table, e))?;
        Ok(true)
    }

    /// The version an application transaction of this table reached (the offsets landed).
    pub async fn transaction_version(&self, table: &str, app_id: &str) -> Result<Option<i64>> {
        let t = self.open(table).await?;
        if t.version().is_none() {
            return Ok(None);
        }
        let snapshot = t.snapshot().map_err(|e| BatchError::lake(table, e))?;
        snapshot
            .transaction_version(t.log_store().as_ref(), app_id)
            .await
            .map_err(|e| BatchError::lake(table, e))
    }

    /// Writes `batches` to `table` in one commit (appending or replacing it), together with
    /// application transactions (app id → version) and commit metadata.
    pub async fn write(
        &self,
        table: &str,
        batches: Vec<RecordBatch>,
        mode: SaveMode,
        transactions: &BTreeMap<String, i64>,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Result<i64> {
        let t = self.open(table).await?;
        let mut properties = CommitProperties::default().with_metadata(metadata);
        for (app, version) in transactions {
            properties = properties.with_application_transaction(Transaction::new(app, *version));
        }
        let written = t
            .write(batches)
            .with_save_mode(mode)
            .with_commit_properties(properties)
            .await
            .map_err(|e| BatchError::lake(table, e))?;
        Ok(written.version().map_or(0, |v| v as i64))
    }

    /// Every row of a table (small tables: marts, reports, tests).
    pub async fn read(&self, table: &str) -> Result<Vec<RecordBatch>> {
        let ctx = SessionContext::new();
        if !self.register(&ctx, table, "t").await? {
            return Ok(Vec::new());
        }
        let df = ctx
            .sql("SELECT * FROM t")
            .await
            .map_err(|e| BatchError::lake(table, e))?;
        df.collect().await.map_err(|e| BatchError::lake(table, e))
    }
}

/// Rows in `batches`.
pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// A table provider of batches kept in memory (a layer not yet published).
pub fn in_memory(
    batches: Vec<RecordBatch>,
    schema: deltalake::arrow::datatypes::SchemaRef,
) -> Result<Arc<deltalake::datafusion::datasource::MemTable>> {
    deltalake::datafusion::datasource::MemTable::try_new(schema, vec![batches])
        .map(Arc::new)
        .map_err(|e| BatchError::lake("memory", e))
}
