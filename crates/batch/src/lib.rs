//! brewline's batch layer: a medallion lake of Delta Lake tables (readable by Spark, Trino,
//! DuckDB and Polars), built with DataFusion SQL.
//!
//! - [`bronze`]: every CDC event landed once (offsets committed with the data), dimensions as
//!   extracted;
//! - silver: current state of orders and lines, dimensions deduplicated and cleaned;
//! - gold: the SCD type 2 dimensions, the facts and the marts, including product affinity
//!   ([`affinity`] turns it into the speed layer's lookup);
//! - [`gates`] after each layer; a failure publishes nothing further ([`job`]);
//! - silver and gold recompute only what the newly landed events touch ([`incremental`]).

pub mod affinity;
pub mod bench;
pub mod bronze;
pub mod charts;
pub mod compute;
pub mod export;
pub mod gates;
pub mod history;
pub mod housekeeping;
pub mod incremental;
pub mod job;
pub mod lake;
pub mod lock;
mod max_by;
pub mod report;
pub mod serving;
mod slices;
mod sources;
pub mod staged;

pub use affinity::AffinityRule;
pub use compute::{ByteSize, Compute};
pub use incremental::Mode;
pub use job::{check, run, run_built_layers, run_layers, Layer, RunReport};
pub use lake::{Lake, S3Settings};
pub use sources::Sources;

/// What can go wrong in a batch run.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("lake table {table}: {message}")]
    Lake { table: String, message: String },
    #[error("gate {gate}: {message}")]
    Gate { gate: String, message: String },
    #[error("bronze table {0} is empty: nothing was ever landed (run the capture first)")]
    Empty(String),
    #[error("run history: {0}")]
    History(String),
    #[error("the lake is locked: {0}")]
    Locked(String),
    #[error(transparent)]
    Port(#[from] brewline_ports::PortError),
}

impl BatchError {
    pub(crate) fn lake(table: &str, e: impl std::fmt::Display) -> BatchError {
        BatchError::Lake {
            table: table.to_string(),
            message: with_memory_hint(e),
        }
    }

    pub(crate) fn gate(gate: &str, e: impl std::fmt::Display) -> BatchError {
        BatchError::Gate {
            gate: gate.to_string(),
            message: with_memory_hint(e),
        }
    }
}

/// The error's message; when a query ran out of its memory, DataFusion names its own settings,
/// and this adds the one to change.
fn with_memory_hint(e: impl std::fmt::Display) -> String {
    let mut message = e.to_string();
    if message.contains("Resources exhausted") {
        message.push_str(
            "\n(a query of the run filled its share of batch.memory_limit with what cannot \
             spill, a join's table: raise the limit, e.g. BREWLINE_BATCH__MEMORY_LIMIT=4GiB, \
             or slice the joins finer, e.g. BREWLINE_BATCH__SLICE_ROWS=1000000)",
        );
    }
    message
}

pub type Result<T> = std::result::Result<T, BatchError>;
