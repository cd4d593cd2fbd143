//! A computed table staged as the Parquet files of its next Delta version. A step's result is
//! streamed once, by the Delta writer, into the table's own folder (memory: a row group per
//! open file, whatever the table's size); the later steps and the gates read those files; the
//! table is published by one commit that names the same files, or they are deleted when a gate
//! fails. Files of a run killed before either stay unnamed by any version, and
//! `brewline batch vacuum` deletes them.

use std::sync::Arc;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::catalog::empty::EmptyTable;
use deltalake::datafusion::datasource::file_format::parquet::ParquetFormat;
use deltalake::datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use deltalake::datafusion::datasource::TableProvider;
use deltalake::datafusion::prelude::{DataFrame, SessionContext};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::{Action, Add, MetadataExt, StructType};
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::ObjectStore;
use futures_util::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use url::Url;

use crate::lake::Lake;
use crate::{BatchError, Result};

/// Rows per Parquet row group: what an open file holds in memory before writing it out.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// A file is closed and the next one begun at about this many bytes.
const TARGET_FILE_BYTES: u64 = 128 * 1024 * 1024;

/// A table's next version, written but not yet committed.
pub struct Staged {
    pub table: &'static str,
    /// Rows of the version: written and kept.
    pub rows: u64,
    schema: SchemaRef,
    adds: Vec<Add>,
    /// Files of the current version that stay in the next.
    keep: Vec<String>,
    /// The folder's URL, and the store a session reads it through (S3).
    url: Url,
    bucket: Option<(Url, Arc<dyn ObjectStore>)>,
}

/// Files of a table's current version that its next version keeps as they are (an incremental
/// run rewrites only the files holding rows it recomputes), and their rows.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    /// Paths relative to the table, as its log names them.
    pub paths: Vec<String>,
    pub rows: u64,
}

impl Lake {
    /// Streams `df` into Parquet files in `table`'s folder, staged for its next version: those
    /// files alone.
    pub async fn stage(&self, table: &'static str, df: DataFrame) -> Result<Staged> {
        self.stage_onto(table, vec![df], Kept::default()).await
    }

    /// Streams `parts`, one after another, into Parquet files in `table`'s folder, staged for
    /// its next version: those files and the current version's `kept`.
    pub async fn stage_onto(
        &self,
        table: &'static str,
        parts: Vec<DataFrame>,
        kept: Kept,
    ) -> Result<Staged> {
        let fail = |e: &dyn std::fmt::Display| BatchError::lake(table, e.to_string());
        let Some(first) = parts.first() else {
            return Err(fail(&"no rows to stage"));
        };
        let schema = Arc::new(first.schema().as_arrow().clone());
        let (url, bucket) = self.table_url(table)?;
        let mut writer =
            RecordBatchWriter::try_new(url.as_str(), schema, None, Some(self.options().clone()))
                .map_err(|e| fail(&e))?
                .with_writer_properties(
                    WriterProperties::builder()
                        .set_compression(Compression::SNAPPY)
                        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                        .build(),
                )
                .with_target_file_size(TARGET_FILE_BYTES);
        let mut rows = 0u64;
        for df in parts {
            let mut stream = df.execute_stream().await.map_err(|e| fail(&e))?;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| fail(&e))?;
                rows += batch.num_rows() as u64;
                if let Err(e) = writer.write(batch).await {
                    writer.reset();
                    return Err(fail(&e));
                }
            }
        }
        let adds = writer.flush().await.map_err(|e| fail(&e))?;
        Ok(Staged {
            table,
            rows: rows + kept.rows,
            schema: writer.arrow_schema(),
            adds,
            keep: kept.paths,
            url,
            bucket,
        })
    }

    /// Commits `staged` as the table's new version, replacing every file of the current one but
    /// those it keeps: the version.
    pub async fn publish_staged(
        &self,
        staged: Staged,
        properties: CommitProperties,
    ) -> Result<i64> {
        let table = staged.table;
        let fail = |e: &dyn std::fmt::Display| BatchError::lake(table, e.to_string());
        let t = self.open(table).await?;
        let schema: StructType = staged
            .schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| fail(&e))?;
        let adds = staged.adds.into_iter().map(Action::Add);
        let keep: std::collections::HashSet<&str> =
            staged.keep.iter().map(String::as_str).collect();
        let Ok(current) = t.snapshot() else {
            // Never written: created with these files in its first version.
            let created = t
                .create()
                .with_columns(schema.fields().cloned())
                .with_actions(adds)
                .with_commit_properties(properties)
                .await
                .map_err(|e| fail(&e))?;
            return Ok(created.version().map_or(0, |v| v as i64));
        };
        let mut actions: Vec<Action> = current
            .snapshot()
            .file_views(t.log_store().as_ref(), None)
            .try_filter(|f| std::future::ready(!keep.contains(f.path().as_ref())))
            .map_ok(|f| Action::Remove(f.remove_action(true)))
            .try_collect()
            .await
            .map_err(|e| fail(&e))?;
        if current.schema().as_ref() != &schema {
            let metadata = current
                .metadata()
                .clone()
                .with_schema(&schema)
                .map_err(|e| fail(&e))?;
            actions.push(Action::Metadata(metadata));
        }
        actions.extend(adds);
        let operation = DeltaOperation::Write {
            mode: SaveMode::Overwrite,
            partition_by: None,
            predicate: None,
        };
        let committed = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(
                Some(current as &dyn TableReference),
                t.log_store(),
                operation,
            )
            .await
            .map_err(|e| fail(&e))?;
        Ok(committed.version() as i64)
    }

    /// Deletes the files of a version that will not be published (its gates failed).
    pub async fn discard(&self, staged: Staged) -> Result<()> {
        let store = self.store()?;
        for add in &staged.adds {
            let path = deltalake::Path::parse(format!("{}/{}", staged.table, add.path))
                .map_err(|e| BatchError::lake(staged.table, e))?;
            store
                .delete(&path)
                .await
                .map_err(|e| BatchError::lake(staged.table, e))?;
        }
        Ok(())
    }
}

impl Staged {
    /// Registers the staged files in `ctx` under `name`, for the later steps and the gates.
    pub fn register(&self, ctx: &SessionContext, name: &str) -> Result<()> {
        let kept = self.keep.iter().map(String::as_str);
        self.register_files(
            ctx,
            name,
            self.adds.iter().map(|a| a.path.as_str()).chain(kept),
        )
    }

    /// Registers in `ctx` under `name` the files this run wrote, without those kept.
    pub fn register_written(&self, ctx: &SessionContext, name: &str) -> Result<()> {
        self.register_files(ctx, name, self.adds.iter().map(|a| a.path.as_str()))
    }

    fn register_files<'a>(
        &self,
        ctx: &SessionContext,
        name: &str,
        paths: impl Iterator<Item = &'a str>,
    ) -> Result<()> {
        let fail = |e: &dyn std::fmt::Display| BatchError::lake(self.table, e.to_string());
        let files = paths
            .map(|path| ListingTableUrl::parse(format!("{}{path}", self.url)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| fail(&e))?;
        let provider: Arc<dyn TableProvider> = if files.is_empty() {
            Arc::new(EmptyTable::new(self.schema.clone()))
        } else {
            if let Some((bucket, store)) = &self.bucket {
                ctx.register_object_store(bucket, store.clone());
            }
            // The session's Parquet settings (`DATAFUSION_EXECUTION_PARQUET_*`), as a Delta
            // table's scan takes them: a format of its own would read with the defaults.
            let parquet = ctx.state_ref().read().table_options().parquet.clone();
            let format = ParquetFormat::default().with_options(parquet);
            let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(files)
                .with_listing_options(options)
                .with_schema(self.schema.clone());
            Arc::new(ListingTable::try_new(config).map_err(|e| fail(&e))?)
        };
        ctx.deregister_table(name).map_err(|e| fail(&e))?;
        ctx.register_table(name, provider).map_err(|e| fail(&e))?;
        Ok(())
    }
}
