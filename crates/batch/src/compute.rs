//! How much memory a batch run's queries may hold, and where they spill the rest: DataFusion
//! sessions with a memory pool that every operator shares; sorts and aggregations spill to a
//! folder when it is full.

use std::path::PathBuf;
use std::sync::Arc;

use deltalake::datafusion::execution::memory_pool::FairSpillPool;
use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use serde::{Deserialize, Serialize};

use crate::{BatchError, Result};

/// A size in bytes, written as a number of bytes or with a unit: `2GiB`, `512MiB`, `64KiB`
/// (or GB, MB, KB: powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SizeText", into = "String")]
pub struct ByteSize(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Bytes(u64),
    Text(String),
}

impl TryFrom<SizeText> for ByteSize {
    type Error = String;

    fn try_from(t: SizeText) -> std::result::Result<ByteSize, String> {
        match t {
            SizeText::Bytes(n) => Ok(ByteSize(n)),
            SizeText::Text(s) => s.parse(),
        }
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<ByteSize, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("expected a size like 2GiB or 512MiB, got {s:?}"))?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return Err(format!("unknown unit in {s:?}: use B, KiB, MiB or GiB")),
        };
        n.checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= scale && n.is_multiple_of(scale) {
                return write!(f, "{}{unit}", n / scale);
            }
        }
        write!(f, "{n}")
    }
}

impl From<ByteSize> for String {
    fn from(b: ByteSize) -> String {
        b.to_string()
    }
}

/// The memory and spill folder of a run's queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compute {
    /// What the whole run may hold. The queries' pool gets [`Compute::POOL_SHARE`] of it; the
    /// rest is for what the pool does not count (the Delta writer's open row groups, the
    /// tables' logs, the allocator's slack).
    pub memory_limit: ByteSize,
    /// Where queries spill [default: the system's temporary folder].
    pub spill_dir: Option<PathBuf>,
    /// The most rows of a key a step's join holds at once: a step whose joins would hold more
    /// runs in slices of the key, one after another ([`crate::slices`]) [default: what fits
    /// in half the queries' pool, about 2.5 million rows at 2 GiB].
    pub slice_rows: Option<u64>,
}

/// The rows of a key a step's join may hold at once, as a session's setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceRows(pub u64);

impl Default for Compute {
    fn default() -> Compute {
        Compute {
            memory_limit: Compute::DEFAULT_MEMORY_LIMIT,
            spill_dir: None,
            slice_rows: None,
        }
    }
}

impl Compute {
    pub const DEFAULT_MEMORY_LIMIT: ByteSize = ByteSize(2 << 30);
    /// The share of the memory limit the queries' pool gets.
    pub const POOL_SHARE: f64 = 0.6;
    /// What a hash join holds per row of its table, with the table's hash index (measured on
    /// the steps that slice: 170–220 bytes per row at 10 M lines, BENCHMARKS.md), with margin.
    const JOIN_BYTES_PER_ROW: u64 = 256;

    /// [`Compute::slice_rows`], or the rows whose join tables fill half the queries' pool (the
    /// other half: the aggregations and sorts around them).
    pub fn slice_rows(&self) -> u64 {
        let pool = (self.memory_limit.0 as f64 * Compute::POOL_SHARE) as u64;
        self.slice_rows
            .unwrap_or(pool / 2 / Compute::JOIN_BYTES_PER_ROW)
            .max(1)
    }

    /// A session whose operators share a pool of the memory limit's [`Compute::POOL_SHARE`]
    /// and spill to the spill folder. Sorts and aggregations spill; a hash join's table (the
    /// smaller side) must fit in the pool whole. Sort-merge joins, which spill, were measured
    /// slower and still ran out: the sorts before them are handed slices of an aggregation's
    /// output that count the whole output's buffers (BENCHMARKS.md, 2026-12-03).
    pub fn session(&self) -> Result<SessionContext> {
        let pool = (self.memory_limit.0 as f64 * Compute::POOL_SHARE) as usize;
        let mut runtime =
            RuntimeEnvBuilder::new().with_memory_pool(Arc::new(FairSpillPool::new(pool)));
        if let Some(dir) = &self.spill_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                BatchError::lake("spill", format!("creating {}: {e}", dir.display()))
            })?;
            runtime = runtime.with_temp_file_path(dir);
        }
        let runtime = runtime
            .build_arc()
            .map_err(|e| BatchError::lake("spill", e))?;
        // DataFusion's own settings from the environment (`DATAFUSION_EXECUTION_BATCH_SIZE`,
        // `DATAFUSION_OPTIMIZER_PREFER_HASH_JOIN`, ...), for tuning without a rebuild.
        let config = SessionConfig::from_env()
            .map_err(|e| BatchError::lake("datafusion", e))?
            .with_extension(Arc::new(SliceRows(self.slice_rows())));
        Ok(with_functions(SessionContext::new_with_config_rt(
            config, runtime,
        )))
    }
}

/// A session over the same memory, settings and functions as `ctx`, without its tables.
pub(crate) fn sibling(ctx: &SessionContext) -> SessionContext {
    with_functions(SessionContext::new_with_config_rt(
        ctx.copied_config(),
        ctx.runtime_env(),
    ))
}

/// The functions the steps' SQL uses beyond DataFusion's own: those Spark SQL and DuckDB have.
fn with_functions(ctx: SessionContext) -> SessionContext {
    ctx.register_udaf(crate::max_by::udaf());
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_holds_what_fits_in_half_the_pool_unless_set() {
        let at = |limit: u64, rows: Option<u64>| Compute {
            memory_limit: ByteSize(limit),
            spill_dir: None,
            slice_rows: rows,
        };
        assert_eq!(at(2 << 30, None).slice_rows(), 2_516_582);
        assert_eq!(at(8 << 30, None).slice_rows(), 10_066_329);
        assert_eq!(at(2 << 30, Some(50)).slice_rows(), 50);
        assert_eq!(at(2 << 30, Some(0)).slice_rows(), 1);
    }

    #[test]
    fn sizes_read_with_their_units_and_wrong_ones_say_what_to_write() {
        assert_eq!("2GiB".parse(), Ok(ByteSize(2 << 30)));
        assert_eq!("512MiB".parse(), Ok(ByteSize(512 << 20)));
        assert_eq!("1500MB".parse(), Ok(ByteSize(1_500_000_000)));
        assert_eq!("4096".parse(), Ok(ByteSize(4096)));
        let e = "2 gigs".parse::<ByteSize>().unwrap_err();
        assert!(e.contains("use B, KiB, MiB or GiB"), "{e}");
        let e = "lots".parse::<ByteSize>().unwrap_err();
        assert!(e.contains("like 2GiB"), "{e}");
        assert_eq!(ByteSize(2 << 30).to_string(), "2GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        let json: ByteSize = serde_json::from_str("\"768MiB\"").unwrap();
        assert_eq!(json, ByteSize(768 << 20));
        let json: ByteSize = serde_json::from_str("1024").unwrap();
        assert_eq!(json, ByteSize(1024));
    }
}
