//! Named positions (of a change capture) in a table on the source server.
//!
//! Why a table and not a compacted Kafka topic as Kafka Connect uses: it is read back with one
//! query, without reading a topic to its end, and it lives with the database whose binlog it
//! points into, so
//! a restored or replaced server is not followed from a position of another. It needs a
//! database the capture's user may write (`cdc.offsets_database`), which the capture itself
//! does not capture.

use async_trait::async_trait;
use brewline_ports::{CheckpointStore, Result};
use mysql_async::prelude::{Query, WithParams};
use mysql_async::{Conn, OptsBuilder, Pool};

use crate::{port_error, MysqlConfig};

/// Positions in `{database}.brewline_offsets`.
#[derive(Clone)]
pub struct MysqlCheckpoints {
    pool: Pool,
}

impl MysqlCheckpoints {
    /// Creates the database and table when missing.
    pub async fn connect(mysql: &MysqlConfig, database: &str) -> Result<MysqlCheckpoints> {
        let server = mysql.server()?;
        let mut conn = Conn::new(server.clone())
            .await
            .map_err(|e| port_error("connecting for the capture's position", e))?;
        format!(
            "CREATE DATABASE IF NOT EXISTS `{}`",
            database.replace('`', "")
        )
        .ignore(&mut conn)
        .await
        .map_err(|e| port_error("creating the offsets database", e))?;
        let _ = conn.disconnect().await;
        let pool = Pool::new(OptsBuilder::from_opts(server).db_name(Some(database)));
        let mut conn = pool
            .get_conn()
            .await
            .map_err(|e| port_error("connecting for the capture's position", e))?;
        // TEXT: a snapshot's progress (`capture::resume`) grows with each time it was cut short.
        "CREATE TABLE IF NOT EXISTS brewline_offsets (
             name VARCHAR(255) PRIMARY KEY,
             position TEXT NOT NULL,
             updated_at DATETIME(3) NOT NULL
         )"
        .ignore(&mut conn)
        .await
        .map_err(|e| port_error("creating the offsets table", e))?;
        widen_position(&mut conn).await;
        Ok(MysqlCheckpoints { pool })
    }

    async fn conn(&self) -> Result<Conn> {
        self.pool
            .get_conn()
            .await
            .map_err(|e| port_error("connecting for the capture's position", e))
    }
}

/// Makes the position column of a table made by an earlier version (`VARCHAR(1024)`) as wide
/// as a snapshot's progress may need, or says how when the user may not alter it.
async fn widen_position(conn: &mut Conn) {
    let kind: Option<String> = "SELECT DATA_TYPE FROM information_schema.COLUMNS
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'brewline_offsets'
           AND COLUMN_NAME = 'position'"
        .first(&mut *conn)
        .await
        .unwrap_or(None);
    if !kind.is_some_and(|k| k.eq_ignore_ascii_case("varchar")) {
        return;
    }
    if let Err(e) = "ALTER TABLE brewline_offsets MODIFY position TEXT NOT NULL"
        .ignore(&mut *conn)
        .await
    {
        tracing::warn!(error = %e, "the offsets table's position column holds 1 024 bytes, which a snapshot cut short several times may outgrow: run `ALTER TABLE brewline_offsets MODIFY position TEXT NOT NULL` as a user allowed to");
    }
}

#[async_trait]
impl CheckpointStore for MysqlCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<String>> {
        let mut conn = self.conn().await?;
        "SELECT position FROM brewline_offsets WHERE name = ?"
            .with((name,))
            .first(&mut conn)
            .await
            .map_err(|e| port_error("reading the capture's position", e))
    }

    async fn save(&self, name: &str, value: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        "INSERT INTO brewline_offsets (name, position, updated_at) VALUES (?, ?, NOW(3))
         ON DUPLICATE KEY UPDATE position = VALUES(position), updated_at = NOW(3)"
            .with((name, value))
            .ignore(&mut conn)
            .await
            .map_err(|e| port_error("saving the capture's position", e))
    }
}
