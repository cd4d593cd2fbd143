//! One SQLite connection shared by async callers: each call runs on tokio's blocking pool.

use std::path::Path;
use std::sync::{Arc, Mutex};

use brewline_ports::{PortError, Result};
use rusqlite::Connection;

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
        schema: &str,
        setup: impl FnOnce(&Connection) -> rusqlite::Result<()>,
    ) -> Result<Db> {
        let conn = open_connection(path, engine)?;
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
/// and a busy timeout for writers of other processes.
pub(crate) fn open_connection(path: &Path, engine: &'static str) -> Result<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| PortError::fatal(engine, format!("cannot open {}: {e}", path.display())))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 10000;
         PRAGMA foreign_keys = ON;",
    )
    .map_err(|e| sql_error(engine, e))?;
    Ok(conn)
}
