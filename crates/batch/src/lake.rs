//! The lake: Delta Lake tables under one root, a local folder or `s3://bucket/prefix` (AWS S3,
//! MinIO or any S3-compatible server), named `{layer}/{table}`. Every write is one Delta
//! commit: a failed or killed run leaves the previous versions as they were.
//!
//! S3 goes through `object_store`'s own S3 client, registered with delta-rs for `s3://`; a
//! commit is a conditional put (`If-None-Match`), which S3, MinIO and s3s serve.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Once};

use deltalake::logstore::{
    default_logstore, logstore_factories, object_store_factories, LogStore, LogStoreFactory,
    ObjectStoreFactory, ObjectStoreRef, StorageConfig,
};
use deltalake::{DeltaResult, Path};
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use url::Url;

use deltalake::arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;

use crate::compute::Compute;
use crate::{BatchError, Result};

/// How to reach an S3 lake. Credentials left out come from the environment's usual AWS
/// sources only where `object_store` finds them (instance metadata, web identity).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// The endpoint of an S3-compatible server, e.g. `http://minio:9000` (unset: AWS).
    pub endpoint: Option<String>,
    /// The region [default: us-east-1].
    pub region: Option<String>,
    /// The access key's id (set it from the environment:
    /// `BREWLINE_BATCH__S3__ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// The secret access key (from the environment: `BREWLINE_BATCH__S3__SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints (MinIO in a private network, tests).
    pub allow_http: bool,
}

impl S3Settings {
    /// As delta-rs storage options.
    fn options(&self) -> HashMap<String, String> {
        let mut o = HashMap::new();
        let mut set = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                o.insert(k.to_string(), v.clone());
            }
        };
        set("aws_endpoint", &self.endpoint);
        set("aws_region", &self.region);
        set("aws_access_key_id", &self.access_key_id);
        set("aws_secret_access_key", &self.secret_access_key);
        o.insert("aws_allow_http".into(), self.allow_http.to_string());
        o
    }
}

/// `s3://` stores for delta-rs: `object_store`'s S3 client from the storage options.
struct S3Stores;

impl ObjectStoreFactory for S3Stores {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let store = s3_bucket(url, config.raw())?;
        let path = Path::parse(url.path())?;
        Ok((store, path))
    }
}

/// The S3 bucket of `url`, reached with the storage `options` (those S3 does not know are
/// ignored).
fn s3_bucket<'a>(
    url: &Url,
    options: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> object_store::Result<ObjectStoreRef> {
    let mut builder = AmazonS3Builder::new()
        .with_url(url.as_str())
        .with_conditional_put(S3ConditionalPut::ETagMatch);
    for (key, value) in options {
        if let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(key, value);
        }
    }
    Ok(Arc::new(builder.build()?))
}

/// `s3://` log stores: delta-rs's default one, committing by conditional put.
struct S3Logs;

impl LogStoreFactory for S3Logs {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Registers the `s3://` handlers with delta-rs (once per process).
fn register_s3() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(scheme) = Url::parse("s3://") {
            object_store_factories().insert(scheme.clone(), Arc::new(S3Stores));
            logstore_factories().insert(scheme, Arc::new(S3Logs));
        }
    });
}

/// The lake's root and the tables in it.
#[derive(Debug, Clone)]
pub struct Lake {
    root: String,
    options: HashMap<String, String>,
    compute: Compute,
}

impl Lake {
    /// A lake at a local path (created when missing), or at `s3://bucket/prefix` with the
    /// default S3 settings.
    pub fn at(root: impl Into<String>) -> Lake {
        Lake::with_s3(root, &S3Settings::default())
    }

    /// A lake at `root`; an `s3://` root is reached with `s3`.
    pub fn with_s3(root: impl Into<String>, s3: &S3Settings) -> Lake {
        let root = root.into();
        let options = if root.starts_with("s3://") {
            register_s3();
            s3.options()
        } else {
            HashMap::new()
        };
        Lake {
            root,
            options,
            compute: Compute::default(),
        }
    }

    /// The lake, its runs computed within `compute`'s memory.
    pub fn with_compute(self, compute: Compute) -> Lake {
        Lake { compute, ..self }
    }

    /// A session for a run's queries, bounded by the lake's [`Compute`].
    pub fn session(&self) -> Result<SessionContext> {
        self.compute.session()
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// The storage options of the lake's store (S3 settings).
    pub(crate) fn options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The URL of `table`'s folder (ending in `/`), and the store a query session must know
    /// to read files by their URLs under it (`None`: a local folder, which every session
    /// reads).
    pub(crate) fn table_url(&self, table: &str) -> Result<(Url, Option<(Url, ObjectStoreRef)>)> {
        let mut url = deltalake::ensure_table_uri(self.location(table))
            .map_err(|e| BatchError::lake(table, e))?;
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        if url.scheme() != "s3" {
            return Ok((url, None));
        }
        let bucket = Url::parse(&format!("s3://{}", url.host_str().unwrap_or_default()))
            .map_err(|e| BatchError::lake(table, e))?;
        let store = s3_bucket(&bucket, &self.options).map_err(|e| BatchError::lake(table, e))?;
        Ok((url, Some((bucket, store))))
    }

    pub(crate) fn location(&self, table: &str) -> String {
        format!("{}/{table}", self.root.trim_end_matches('/'))
    }

    /// The table, or an empty handle when it was never written.
    pub async fn open(&self, table: &str) -> Result<DeltaTable> {
        self.open_at(table, None).await
    }

    /// The table as of `version` (`None`: the current one).
    pub async fn open_at(&self, table: &str, version: Option<i64>) -> Result<DeltaTable> {
        let url = deltalake::ensure_table_uri(self.location(table))
            .map_err(|e| BatchError::lake(table, e))?;
        let mut t = DeltaTable::try_from_url_with_storage_options(url, self.options.clone())
            .await
            .map_err(|e| BatchError::lake(table, e))?;
        if let Some(v) = version {
            let v = u64::try_from(v).map_err(|e| BatchError::lake(table, e))?;
            t.load_version(v)
                .await
                .map_err(|e| BatchError::lake(table, e))?;
        }
        Ok(t)
    }

    /// The bytes of a file under the lake's root (`None`: there is none).
    pub async fn get_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let store = self.root_store(path)?;
        let location = Path::parse(path).map_err(|e| BatchError::lake(path, e))?;
        match store.get(&location).await {
            Ok(got) => Ok(Some(
                got.bytes()
                    .await
                    .map_err(|e| BatchError::lake(path, e))?
                    .to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(BatchError::lake(path, e)),
        }
    }

    /// The object store at the lake's root.
    pub(crate) fn store(&self) -> Result<deltalake::logstore::ObjectStoreRef> {
        self.root_store(&self.root)
    }

    fn root_store(&self, path: &str) -> Result<deltalake::logstore::ObjectStoreRef> {
        let url = deltalake::ensure_table_uri(&self.root).map_err(|e| BatchError::lake(path, e))?;
        deltalake::logstore::store_for(&url, self.options.clone())
            .map_err(|e| BatchError::lake(path, e))
    }

    /// Writes a file (a run report) at `path` under the lake's root.
    pub async fn put_file(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let store = self.root_store(path)?;
        let location = Path::parse(path).map_err(|e| BatchError::lake(path, e))?;
        store
            .put(&location, PutPayload::from(bytes))
            .await
            .map_err(|e| BatchError::lake(path, e))?;
        Ok(())
    }

    /// Compacts the table's small files into larger ones in one commit (the files replaced
    /// stay for readers of earlier versions until a vacuum): (files removed, files added), or
    /// `None` when the table was never written.
    pub async fn optimize(&self, table: &str) -> Result<Option<(u64, u64)>> {
        let t = self.open(table).await?;
        if t.version().is_none() {
            return Ok(None);
        }
        let (_, metrics) = t.optimize().await.map_err(|e| BatchError::lake(table, e))?;
        Ok(Some((metrics.num_files_removed, metrics.num_files_added)))
    }

    /// Deletes the files that commits older than `retain` removed from the table, and those no
    /// commit ever named (a run killed before publishing) written before `retain`, except those
    /// `keep` (versions still read) need: the files deleted, or `None` when the table was never
    /// written.
    pub async fn vacuum(
        &self,
        table: &str,
        retain: std::time::Duration,
        keep: &[i64],
    ) -> Result<Option<usize>> {
        let t = self.open(table).await?;
        if t.version().is_none() {
            return Ok(None);
        }
        let retain = chrono::Duration::from_std(retain).map_err(|e| BatchError::lake(table, e))?;
        let keep: Vec<deltalake::kernel::Version> =
            keep.iter().filter_map(|v| (*v).try_into().ok()).collect();
        let (_, metrics) = t
            .vacuum()
            .with_retention_period(retain)
            // The retention is the caller's: shorter than the table's default of 7 days is
            // allowed (the kept versions are protected by `keep`).
            .with_enforce_retention_duration(false)
            .with_keep_versions(&keep)
            .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
            .await
            .map_err(|e| BatchError::lake(table, e))?;
        Ok(Some(metrics.files_deleted.len()))
    }

    /// The table's current version (`None`: never written).
    pub async fn version(&self, table: &str) -> Result<Option<i64>> {
        Ok(self.open(table).await?.version().map(|v| v as i64))
    }

    /// Whether `table`'s rows may differ from those of its `version`: a commit since then
    /// other than compaction or vacuum (which move files, not rows), or no such version.
    pub async fn data_changed_since(&self, table: &str, version: i64) -> Result<bool> {
        let t = self.open(table).await?;
        let Some(current) = t.version() else {
            return Ok(true);
        };
        let since = current as i64 - version;
        if since < 0 {
            return Ok(true);
        }
        if since == 0 {
            return Ok(false);
        }
        let commits: Vec<_> = t
            .history(Some(since as usize))
            .try_collect()
            .await
            .map_err(|e| BatchError::lake(table, e))?;
        Ok(commits.len() < since as usize
            || commits.iter().any(|c| {
                !matches!(
                    c.operation.as_deref(),
                    Some("OPTIMIZE" | "VACUUM START" | "VACUUM END")
                )
            }))
    }

    /// Registers the table's current version in `ctx` under `name`: the version, or `None` when
    /// it was never written.
    pub async fn register(
        &self,
        ctx: &SessionContext,
        table: &str,
        name: &str,
    ) -> Result<Option<i64>> {
        self.register_at(ctx, table, name, None).await
    }

    /// Registers the table as of `version` (`None`: the current one) in `ctx` under `name`: the
    /// version registered, or `None` when it was never written.
    pub async fn register_at(
        &self,
        ctx: &SessionContext,
        table: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<i64>> {
        let t = self.open_at(table, version).await?;
        let Some(registered) = t.version() else {
            return Ok(None);
        };
        let provider = t
            .table_provider()
            .await
            .map_err(|e| BatchError::lake(table, e))?;
        ctx.register_table(name, provider)
            .map_err(|e| BatchError::lake(table, e))?;
        Ok(Some(registered as i64))
    }

    /// The versions application transactions of this table reached (the offsets landed), one
    /// per app id, from one read of the table's log.
    pub async fn transaction_versions(
        &self,
        table: &str,
        app_ids: &[String],
    ) -> Result<Vec<Option<i64>>> {
        self.transaction_versions_at(table, None, app_ids).await
    }

    /// [`Lake::transaction_versions`] as of the table's `version` (`None`: the current one).
    pub async fn transaction_versions_at(
        &self,
        table: &str,
        version: Option<i64>,
        app_ids: &[String],
    ) -> Result<Vec<Option<i64>>> {
        let t = self.open_at(table, version).await?;
        if t.version().is_none() {
            return Ok(vec![None; app_ids.len()]);
        }
        let snapshot = t.snapshot().map_err(|e| BatchError::lake(table, e))?;
        let mut out = Vec::with_capacity(app_ids.len());
        for app in app_ids {
            out.push(
                snapshot
                    .transaction_version(t.log_store().as_ref(), app)
                    .await
                    .map_err(|e| BatchError::lake(table, e))?,
            );
        }
        Ok(out)
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
        if self.register(&ctx, table, "t").await?.is_none() {
            return Ok(Vec::new());
        }
        let df = ctx
            .sql("SELECT * FROM t")
            .await
            .map_err(|e| BatchError::lake(table, e))?;
        df.collect().await.map_err(|e| BatchError::lake(table, e))
    }
}

/// The column `name` of `b` (a batch of `table`), cast to the Arrow type `T` reads.
pub(crate) fn column<T: FromArray>(
    b: &RecordBatch,
    table: &str,
    name: &str,
) -> Result<Vec<Option<T>>> {
    let col = b
        .column_by_name(name)
        .ok_or_else(|| BatchError::lake(table, format!("column {name} is missing")))?;
    let col = cast(col, &T::data_type()).map_err(|e| BatchError::lake(table, e))?;
    let values = T::values(col.as_ref());
    if values.len() != b.num_rows() {
        return Err(BatchError::lake(
            table,
            format!("column {name} did not read as {}", T::data_type()),
        ));
    }
    Ok(values)
}

/// A Rust type a column is read as, and the Arrow type it is cast to first.
pub(crate) trait FromArray: Sized {
    fn data_type() -> DataType;
    fn values(a: &dyn Array) -> Vec<Option<Self>>;
}

impl FromArray for String {
    fn data_type() -> DataType {
        DataType::Utf8
    }

    fn values(a: &dyn Array) -> Vec<Option<String>> {
        a.as_any()
            .downcast_ref::<StringArray>()
            .map(|s| s.iter().map(|v| v.map(str::to_string)).collect())
            .unwrap_or_default()
    }
}

impl FromArray for i64 {
    fn data_type() -> DataType {
        DataType::Int64
    }

    fn values(a: &dyn Array) -> Vec<Option<i64>> {
        a.as_any()
            .downcast_ref::<Int64Array>()
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    }
}

impl FromArray for f64 {
    fn data_type() -> DataType {
        DataType::Float64
    }

    fn values(a: &dyn Array) -> Vec<Option<f64>> {
        a.as_any()
            .downcast_ref::<Float64Array>()
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    }
}

impl FromArray for bool {
    fn data_type() -> DataType {
        DataType::Boolean
    }

    fn values(a: &dyn Array) -> Vec<Option<bool>> {
        a.as_any()
            .downcast_ref::<deltalake::arrow::array::BooleanArray>()
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    }
}

/// Rows in `batches`.
pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}
