//! Housekeeping of the lake's tables (`brewline batch optimize`, `brewline batch vacuum`):
//! small files compacted into larger ones, and files no recent version reads deleted. Both
//! hold the lake's run lock ([`RunLock`]), so they never race a run; a vacuum keeps every file
//! of the versions the serving manifest names, whatever the retention, so `brewline serve`
//! goes on reading the batch view it was given.

use std::time::Duration;

use crate::job::Layer;
use crate::lake::Lake;
use crate::lock::RunLock;
use crate::{serving, BatchError, Result};

/// What housekeeping did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tidied {
    pub table: String,
    /// Files replaced by compaction, or deleted by a vacuum.
    pub files_removed: u64,
    /// Files written by compaction (none by a vacuum).
    pub files_added: u64,
}

/// Every table of the lake, bronze to the marts.
fn tables() -> Vec<&'static str> {
    Layer::ALL
        .into_iter()
        .flat_map(|layer| layer.tables())
        .map(|(table, _)| table)
        .collect()
}

/// Runs `each` on every table written so far, under the run lock.
async fn under_lock<F, Fut>(lake: &Lake, what: &str, mut each: F) -> Result<Vec<Tidied>>
where
    F: FnMut(&'static str) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Tidied>>>,
{
    let id = format!("{what}-{}", brewline_ports::now_ms());
    let lock = RunLock::acquire(lake, &id).await?;
    let done = async {
        let mut all = Vec::new();
        for table in tables() {
            lock.ensure_held()?;
            all.extend(each(table).await?);
        }
        Ok::<_, BatchError>(all)
    }
    .await;
    lock.release().await;
    done
}

/// Compacts the small files of every table (one commit per table that had any).
pub async fn optimize(lake: &Lake) -> Result<Vec<Tidied>> {
    under_lock(lake, "optimize", |table| async move {
        Ok(lake
            .optimize(table)
            .await?
            .map(|(files_removed, files_added)| Tidied {
                table: table.to_string(),
                files_removed,
                files_added,
            }))
    })
    .await
}

/// Deletes, in every table, the files removed by commits older than `retain`, except those of
/// the version the serving manifest names. The manifest is read before the lock is taken: a run
/// that publishes meanwhile names versions at least as new, whose files no vacuum deletes.
pub async fn vacuum(lake: &Lake, retain: Duration) -> Result<Vec<Tidied>> {
    let served = serving::watermark(lake).await?;
    let served = &served;
    under_lock(lake, "vacuum", |table| async move {
        let keep: Vec<i64> = served
            .as_ref()
            .and_then(|w| w.versions.get(table).copied())
            .into_iter()
            .collect();
        Ok(lake
            .vacuum(table, retain, &keep)
            .await?
            .map(|deleted| Tidied {
                table: table.to_string(),
                files_removed: deleted as u64,
                files_added: 0,
            }))
    })
    .await
}
