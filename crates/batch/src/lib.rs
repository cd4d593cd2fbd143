//! brewline's batch layer: a medallion lake of Delta Lake tables (readable by Spark, Trino,
//! DuckDB and Polars), built with DataFusion SQL.
//!
//! - [`bronze`]: every CDC event landed once (offsets committed with the data), dimensions as
//!   extracted;
//! - silver: current state of orders and lines, dimensions deduplicated and cleaned;
//! - gold: the SCD type 2 dimensions, the facts and the marts, including product affinity
//!   ([`affinity`] turns it into the speed layer's lookup);
//! - [`gates`] after each layer; a failure publishes nothing further ([`job`]).

pub mod affinity;
pub mod bench;
pub mod bronze;
pub mod charts;
pub mod export;
pub mod gates;
pub mod history;
pub mod housekeeping;
pub mod job;
pub mod lake;
pub mod lock;
pub mod report;
pub mod serving;
mod sources;

pub use affinity::AffinityRule;
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
            message: e.to_string(),
        }
    }

    pub(crate) fn gate(gate: &str, e: impl std::fmt::Display) -> BatchError {
        BatchError::Gate {
            gate: gate.to_string(),
            message: e.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, BatchError>;
