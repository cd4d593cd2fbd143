//! brewline's embedded engines: durable, single-machine implementations of every port, on
//! SQLite (bundled). They give the guarantees the real engines give — committed offsets,
//! atomic per-order completion, atomic lookup refresh, a change feed that resumes from a
//! position — so the whole pipeline runs, and is tested, with no server at all.
//!
//! A data directory holds `source.sqlite` (the shop's `coffee_shop` database and its
//! changelog), `log.sqlite` (topics, consumer-group offsets, checkpoints), `state.sqlite`
//! (lookups, counters) and `state.journal/` (the journal of per-order state).

mod sqlite;

pub mod log;
pub mod source;
pub mod state;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use log::EmbeddedLog;
pub use source::EmbeddedSource;
pub use state::EmbeddedState;

/// The three embedded databases of one data directory.
pub struct DataDir {
    pub root: PathBuf,
    pub source: EmbeddedSource,
    pub log: EmbeddedLog,
    pub state: EmbeddedState,
}

impl DataDir {
    /// Opens (creating when needed) the databases under `root`; order state lives for `ttl`
    /// after its last change.
    pub fn open(root: &Path, ttl: Duration) -> brewline_ports::Result<DataDir> {
        std::fs::create_dir_all(root).map_err(|e| {
            brewline_ports::PortError::fatal(
                "embedded",
                format!("cannot create data dir {}: {e}", root.display()),
            )
        })?;
        Ok(DataDir {
            root: root.to_path_buf(),
            source: EmbeddedSource::open(&root.join("source.sqlite"))?,
            log: EmbeddedLog::open(&root.join("log.sqlite"))?,
            state: EmbeddedState::open(&root.join("state.sqlite"), ttl)?,
        })
    }
}

pub(crate) use brewline_ports::{now_ms, now_us};
