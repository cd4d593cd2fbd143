//! The lake as plain Parquet files and a manifest of its steps, for engines without Delta
//! Lake (the Spark runner of `deploy/spark/`, the differential test): `{dir}/{layer}/{table}.parquet`
//! for every published table, and `{dir}/steps.json` listing the bronze inputs and each
//! silver/gold step (its table, the name SQL refers to it by, and the SQL) in build order.

use std::path::Path;

use deltalake::datafusion::dataframe::DataFrameWriteOptions;
use deltalake::datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::job::{Layer, GOLD, SILVER};
use crate::lake::Lake;
use crate::{BatchError, Result};

/// A table of the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestTable {
    pub layer: Layer,
    pub table: &'static str,
    pub name: &'static str,
    /// The SQL that builds it (none for bronze: landed, not computed).
    pub sql: Option<&'static str>,
}

/// Every table in build order.
pub fn manifest() -> Vec<ManifestTable> {
    let bronze = Layer::Bronze
        .tables()
        .into_iter()
        .map(|(table, name)| ManifestTable {
            layer: Layer::Bronze,
            table,
            name,
            sql: None,
        });
    let computed = [(Layer::Silver, &SILVER[..]), (Layer::Gold, &GOLD[..])]
        .into_iter()
        .flat_map(|(layer, steps)| {
            steps.iter().map(move |s| ManifestTable {
                layer,
                table: s.table,
                name: s.name,
                sql: Some(s.sql),
            })
        });
    bronze.chain(computed).collect()
}

/// Writes every published table of `lake` under `dir` as Parquet, and the manifest; returns
/// the tables written.
pub async fn export(lake: &Lake, dir: &Path) -> Result<usize> {
    let ctx = SessionContext::new();
    let tables = manifest();
    let mut written = 0;
    for t in &tables {
        if lake.register(&ctx, t.table, t.name).await?.is_none() {
            continue;
        }
        let path = dir.join(format!("{}.parquet", t.table));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| BatchError::lake(t.table, e))?;
        }
        ctx.table(t.name)
            .await
            .map_err(|e| BatchError::lake(t.table, e))?
            .write_parquet(
                &path.to_string_lossy(),
                DataFrameWriteOptions::new().with_single_file_output(true),
                None,
            )
            .await
            .map_err(|e| BatchError::lake(t.table, e))?;
        written += 1;
    }
    let json = serde_json::to_vec_pretty(&tables).map_err(|e| BatchError::lake("steps.json", e))?;
    std::fs::write(dir.join("steps.json"), json).map_err(|e| BatchError::lake("steps.json", e))?;
    Ok(written)
}
