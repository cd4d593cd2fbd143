//! One SQLite connection shared by async callers: each call runs on tokio's blocking pool.

use std::path::Path;
use std::sync::{Arc, Mutex};

use brewline_ports::{PortError, Result};
use rusqlite::Connection;

/// The page size a database is created with.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PageSize {
    /// Many small rows written a few at a time (the source's orders): small pages keep each
    /// commit small.
    SmallRows = 4096,
    /// Large rows written whole (record batches, journal entries): large pages mean fewer
    /// page writes and reads per row.
    LargeRows = 32768,
}

#[derive(Clone)]
pub(crate) struct Db {
    conn: Arc<Mutex<Connection>>,
    engine: &'static str,
}

/// Maps a SQLite error; a busy or locked database may succeed on a retry.
pub(crate) fn sql_error(engine: &'static str, e: rusqlite::Error) -> PortError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => PortError::retryable(engine, e),
        _ => PortError::fatal(engine, e),
    }
}

impl Db {
    /// Opens `path` in WAL mode and runs `schema` (idempotent DDL).
    pub(crate) fn open(
        path: &Path,
        engine: &'static str,
        page_size: PageSize,
        schema: &str,
        setup: impl FnOnce(&Connection) -> rusqlite::Result<()>,
    ) -> Result<Db> {
        let conn = open_connection(path, engine, page_size)?;
        setup(&conn).map_err(|e| sql_error(engine, e))?;
        conn.execute_batch(schema)
            .map_err(|e| PortError::fatal(engine, format!("{}: {e}", path.display())))?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            engine,
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        let engine = self.engine;
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| PortError::fatal(engine, "connection lock poisoned"))?;
            f(&mut guard).map_err(|e| sql_error(engine, e))
        })
        .await
        .map_err(|e| PortError::fatal(engine, format!("worker failed: {e}")))?
    }

    /// Runs `f` with the connection on this thread (for start-up work outside async).
    pub(crate) fn blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut guard = self
            .conn
            .lock()
            .map_err(|_| PortError::fatal(self.engine, "connection lock poisoned"))?;
        f(&mut guard).map_err(|e| sql_error(self.engine, e))
    }
}

/// A connection with brewline's settings: WAL (readers never block the writer), NORMAL
/// synchronous (durable across a process crash; a power loss may drop the last commits),
/// a busy timeout for writers of other processes, and memory-mapped reads (record batches and
/// journal entries span many pages: mapped, they are read without a system call per page).
pub(crate) fn open_connection(
    path: &Path,
    engine: &'static str,
    page_size: PageSize,
) -> Result<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| PortError::fatal(engine, format!("cannot open {}: {e}", path.display())))?;
    // Takes effect only when the file is created (before WAL mode is set).
    conn.execute_batch(&format!("PRAGMA page_size = {};", page_size as u32))
        .map_err(|e| sql_error(engine, e))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 10000;
         PRAGMA foreign_keys = ON;
         PRAGMA mmap_size = 1073741824;",
    )
    .map_err(|e| sql_error(engine, e))?;
    Ok(conn)
}
