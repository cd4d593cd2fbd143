//! A step whose joins hold one side's rows in memory (a hash join's table does not spill) is
//! computed in slices of its key when that side would not fit in the memory limit: each slice
//! runs the step's own SQL over its inputs restricted to a range of keys (the orders, or the
//! days), and the slices are written one after another into the same staged files. A step's
//! rows of one order (or one day) come from that order's (day's) rows alone — the property an
//! incremental run already relies on ([`crate::incremental::Scope`]) — so the slices together
//! are the step's rows, whatever their number. The ranges are cut at quantiles of a sample of
//! the keys, so each slice holds about as many rows.

use std::collections::BTreeSet;

use deltalake::arrow::array::{Array, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::prelude::{DataFrame, SessionContext};

use crate::compute::SliceRows;
use crate::incremental::{count, restricted, sql, Restriction, Scope};
use crate::job::SqlStep;
use crate::{BatchError, Result};

/// Keys sampled per slice to cut the ranges.
const SAMPLE_PER_SLICE: usize = 2_000;

/// The step's rows, as one frame or as slices to run one after another.
pub(crate) async fn frames(ctx: &SessionContext, step: &SqlStep) -> Result<Vec<DataFrame>> {
    let whole = || async { sql(ctx, step.table, step.sql).await.map(|df| vec![df]) };
    let Some(key) = step.scope.key().filter(|_| step.sliced) else {
        return whole().await;
    };
    let slice_rows = ctx.state_ref().read().config().get_extension::<SliceRows>();
    let Some(SliceRows(most)) = slice_rows.as_deref().copied() else {
        return whole().await;
    };
    let Some((largest, rows)) = largest_input(ctx, step, key).await? else {
        return whole().await;
    };
    let slices = rows.div_ceil(most.max(1)) as usize;
    if slices <= 1 {
        return whole().await;
    }
    let bounds = bounds(ctx, step.table, &largest, key, rows, slices).await?;
    let mut out = Vec::new();
    for filter in filters(key, &bounds) {
        let slice = restricted(
            ctx,
            &Restriction {
                key,
                filter,
                held: &[],
                written: false,
            },
        )
        .await?;
        out.push(sql(&slice, step.table, step.sql).await?);
    }
    tracing::info!(
        table = step.table,
        slices = out.len(),
        rows,
        "computed in slices"
    );
    Ok(out)
}

/// Of the tables the step's SQL names that have the key column, the one with the most rows.
async fn largest_input(
    ctx: &SessionContext,
    step: &SqlStep,
    key: &str,
) -> Result<Option<(String, u64)>> {
    let mut largest: Option<(String, u64)> = None;
    for name in names_in(step.sql) {
        if !ctx.table_exist(name).map_err(|e| fail(step.table, e))? {
            continue;
        }
        let provider = ctx
            .table_provider(name)
            .await
            .map_err(|e| fail(step.table, e))?;
        if provider.schema().field_with_name(key).is_err() {
            continue;
        }
        let rows = count(ctx, name).await?;
        if largest.as_ref().is_none_or(|(_, most)| rows > *most) {
            largest = Some((name.to_string(), rows));
        }
    }
    Ok(largest)
}

/// The words of `sql` that could name a table.
pub(crate) fn names_in(sql: &str) -> BTreeSet<&str> {
    sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect()
}

/// `slices - 1` keys cutting `table`'s keys into ranges of about as many rows, from a sample.
async fn bounds(
    ctx: &SessionContext,
    step: &str,
    table: &str,
    key: &str,
    rows: u64,
    slices: usize,
) -> Result<Vec<String>> {
    let wanted = (slices * SAMPLE_PER_SLICE) as f64;
    let rate = (wanted / rows.max(1) as f64).min(1.0);
    let batches = sql(
        ctx,
        step,
        &format!("SELECT {key} FROM {table} WHERE {key} IS NOT NULL AND random() < {rate}"),
    )
    .await?
    .collect()
    .await
    .map_err(|e| fail(step, e))?;
    let mut sample = Vec::new();
    for batch in batches {
        let column = cast(batch.column(0), &DataType::Utf8).map_err(|e| fail(step, e))?;
        let Some(strings) = column.as_any().downcast_ref::<StringArray>() else {
            return Err(fail(step, format!("{key} is not text")));
        };
        sample.extend(strings.iter().flatten().map(str::to_string));
    }
    Ok(cut(sample, slices))
}

/// The keys at the quantiles `1/slices, 2/slices, ...` of `sample`, each once, in order.
fn cut(mut sample: Vec<String>, slices: usize) -> Vec<String> {
    sample.sort_unstable();
    let mut bounds: Vec<String> = (1..slices)
        .filter_map(|i| sample.get(i * sample.len() / slices).cloned())
        .collect();
    bounds.dedup();
    bounds
}

/// The filters of the ranges between `bounds`: together every row once (a missing key in the
/// first).
fn filters(key: &str, bounds: &[String]) -> Vec<String> {
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut out = Vec::new();
    for i in 0..=bounds.len() {
        let lower = i
            .checked_sub(1)
            .map(|j| format!("{key} >= {}", literal(&bounds[j])));
        let upper = bounds.get(i).map(|b| format!("{key} < {}", literal(b)));
        out.push(match (lower, upper) {
            (None, Some(upper)) => format!("({upper} OR {key} IS NULL)"),
            (Some(lower), Some(upper)) => format!("{lower} AND {upper}"),
            (Some(lower), None) => lower,
            (None, None) => "true".to_string(),
        });
    }
    out
}

fn fail(table: &str, e: impl std::fmt::Display) -> BatchError {
    BatchError::lake(table, e)
}

impl Scope {
    /// The column a step of this scope is recomputed (and sliced) by.
    pub(crate) fn key(self) -> Option<&'static str> {
        match self {
            Scope::Whole => None,
            Scope::Orders => Some("order_id"),
            Scope::Days => Some("order_date"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cuts_are_the_sample_quantiles_each_once() {
        let sample: Vec<String> = (0..100).rev().map(|i| format!("{i:03}")).collect();
        assert_eq!(cut(sample, 4), vec!["025", "050", "075"]);
        let same = vec!["a".to_string(); 10];
        assert_eq!(cut(same, 4), vec!["a"]);
        assert!(cut(Vec::new(), 4).is_empty());
    }

    #[test]
    fn the_ranges_take_every_key_once_and_missing_keys_first() {
        let bounds = vec!["b".to_string(), "it's".to_string()];
        assert_eq!(
            filters("k", &bounds),
            vec![
                "(k < 'b' OR k IS NULL)".to_string(),
                "k >= 'b' AND k < 'it''s'".to_string(),
                "k >= 'it''s'".to_string(),
            ]
        );
        assert_eq!(filters("k", &[]), vec!["true".to_string()]);
    }
}
