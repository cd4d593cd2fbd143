//! Change capture from the MySQL/MariaDB row binlog, as Debezium's MySQL connector does it,
//! without Kafka Connect: an initial consistent snapshot when no position is stored, then the
//! binlog from the position the snapshot was taken at.
//!
//! - **Positions** are `file:pos` of the event after a transaction's commit (MariaDB has no
//!   MySQL-style GTID streaming, and a file and position work on both servers). A
//!   [`RowChange`] carries one only on the last change of its transaction, so a capture never
//!   stores a position inside a transaction. While a snapshot is read, and while the binlog
//!   catches up after a snapshot read in parts, the position is its progress ([`resume`]).
//! - **Columns** are named by the binlog itself (`binlog_row_metadata=FULL`), so a row is read
//!   with the columns it was written with, also after `ALTER TABLE`; their Debezium types come
//!   from `information_schema` (which alone knows `TINYINT(1)` from `TINYINT`), read again
//!   when a row names a column it does not describe.
//! - **Values** are converted as [`columns`] describes.

pub mod columns;
mod feed;
mod raw;
mod resume;
mod snapshot;

pub use raw::RawRead;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use brewline_core::debezium::{Column, ColumnType, TableSchema};
use brewline_ports::{Capturable, ChangeFeed, PortError, Result};
use mysql_async::prelude::{Query, WithParams};
use mysql_async::{Conn, Opts, OptsBuilder};
use serde::{Deserialize, Serialize};

use crate::{port_error, MysqlConfig, ENGINE};
use columns::{ColumnInfo, DecimalHandling};

/// `brewline cdc`: how the binlog is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CdcConfig {
    /// The id this reader registers with as a replica: unique among the server's replicas
    /// (a second reader with the same id makes the server drop the first).
    pub server_id: u32,
    /// Tables of the shop's database to capture.
    pub tables: Vec<String>,
    /// How DECIMAL columns are written: "string", "precise" (Kafka Connect `Decimal`) or
    /// "double".
    pub decimal_handling: DecimalHandling,
    /// Database (on the same server) of the table that keeps the capture's position.
    pub offsets_database: String,
    /// Rows per query while snapshotting.
    pub snapshot_batch: usize,
    /// What to do when the stored position is no longer on the server (its binlog was purged
    /// while the capture was stopped or behind): "fail" (exit, saying so) or "snapshot" (take
    /// a new snapshot of the tables: every row again as a read event, which downstream turns
    /// into identical repeats). `brewline cdc --resnapshot` takes one on demand.
    pub on_lost_position: OnLostPosition,
}

/// What a capture does when its stored position was purged from the server.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OnLostPosition {
    /// Exit with a message that says what was lost and how to go on.
    #[default]
    Fail,
    /// Take a new snapshot and follow the binlog from there.
    Snapshot,
}

impl Default for CdcConfig {
    fn default() -> Self {
        CdcConfig {
            server_id: 5401,
            tables: vec!["orders".into(), "order_details".into()],
            decimal_handling: DecimalHandling::default(),
            offsets_database: "brewline".into(),
            snapshot_batch: 10_000,
            on_lost_position: OnLostPosition::default(),
        }
    }
}

/// A captured table as `information_schema` describes it.
#[derive(Debug, Clone)]
pub(crate) struct Described {
    pub schema: Arc<TableSchema>,
    pub types: HashMap<String, ColumnType>,
    pub primary_key: Vec<String>,
}

/// The binlog of one database, as a [`Capturable`] source.
#[derive(Clone)]
pub struct MysqlCapture {
    server: Opts,
    database: String,
    /// Logical server name (the topic prefix), for the tables' schema names.
    server_name: String,
    config: CdcConfig,
}

impl MysqlCapture {
    /// The capture of `mysql.database`; `server_name` is the events' `source.name`.
    pub fn new(mysql: &MysqlConfig, cdc: &CdcConfig, server_name: &str) -> Result<MysqlCapture> {
        let server = mysql.server()?;
        if cdc.server_id == 0 {
            return Err(PortError::fatal(
                ENGINE,
                "cdc.server_id must not be 0 (a replica needs an id of its own)",
            ));
        }
        if cdc.tables.is_empty() {
            return Err(PortError::fatal(ENGINE, "cdc.tables names no table"));
        }
        Ok(MysqlCapture {
            server,
            database: mysql.database.clone(),
            server_name: server_name.to_string(),
            config: cdc.clone(),
        })
    }

    pub(crate) async fn connect(&self) -> Result<Conn> {
        let opts = OptsBuilder::from_opts(self.server.clone()).db_name(Some(self.database.clone()));
        Conn::new(opts)
            .await
            .map_err(|e| port_error("connecting for change capture", e))
    }

    /// The name Debezium gives the connector for this server: `mariadb` or `mysql`.
    pub async fn connector(&self) -> Result<&'static str> {
        let conn = self.connect().await?;
        let mariadb = conn.server_version().0 >= 10;
        let _ = conn.disconnect().await;
        Ok(if mariadb { "mariadb" } else { "mysql" })
    }

    /// Checks that the server writes a binlog this capture can read, and says what to change
    /// when it does not.
    pub async fn check_server(&self) -> Result<()> {
        let mut conn = self.connect().await?;
        let vars: Vec<(String, String)> = "SHOW GLOBAL VARIABLES WHERE Variable_name IN
             ('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata',
              'log_bin_compress')"
            .fetch(&mut conn)
            .await
            .map_err(|e| port_error("reading the server's binlog settings", e))?;
        let _ = conn.disconnect().await;
        let get = |name: &str| {
            vars.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_uppercase())
        };
        let mut wrong = Vec::new();
        if get("log_bin").as_deref() != Some("ON") {
            wrong.push("log_bin is off: start the server with --log-bin".to_string());
        }
        let want = [
            ("binlog_format", "ROW"),
            ("binlog_row_image", "FULL"),
            ("binlog_row_metadata", "FULL"),
        ];
        for (name, value) in want {
            match get(name) {
                Some(v) if v == value => {}
                Some(v) => wrong.push(format!("{name} is {v}: set it to {value}")),
                None => wrong.push(format!(
                    "{name} is not known to this server (MySQL 8.0.1+ or MariaDB 10.5+ is needed)"
                )),
            }
        }
        if get("log_bin_compress").as_deref() == Some("ON") {
            wrong.push(
                "log_bin_compress is ON: compressed binlog events cannot be read; set it OFF"
                    .into(),
            );
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(PortError::fatal(
                ENGINE,
                format!(
                    "the server's binlog cannot be captured: {} (e.g. `SET GLOBAL binlog_row_metadata = FULL`, or in my.cnf)",
                    wrong.join("; ")
                ),
            ))
        }
    }

    /// Why `position` (a stored `file:pos`) can no longer be followed, if it cannot: its
    /// binlog file is not among the server's binlogs any more (purged by
    /// `binlog_expire_logs_seconds`/`expire_logs_days` or `PURGE BINARY LOGS`, or a server
    /// rebuilt), so the changes since it are lost to the binlog.
    pub async fn lost(&self, position: &str) -> Result<Option<String>> {
        let position = resume::Resume::parse(position)?.binlog()?;
        let mut conn = self.connect().await?;
        let rows: Vec<mysql_async::Row> = "SHOW BINARY LOGS"
            .fetch(&mut conn)
            .await
            .map_err(|e| port_error("listing the server's binlogs", e))?;
        let _ = conn.disconnect().await;
        let files: Vec<String> = rows
            .iter()
            .filter_map(|r| r.get_opt::<String, _>(0).and_then(|f| f.ok()))
            .collect();
        Ok(lost_reason(&position, &files))
    }

    /// The server's binlog end now, as a position to follow from (what is written after it).
    pub async fn end(&self) -> Result<String> {
        let mut conn = self.connect().await?;
        let end = binlog_end(&mut conn).await?;
        let _ = conn.disconnect().await;
        Ok(end.to_string())
    }

    /// The captured tables, each with the column that keys its events (the first column of
    /// its primary key: `orders.id`, `order_details.order_id`).
    pub async fn tables(&self) -> Result<Vec<(TableSchema, String)>> {
        let mut conn = self.connect().await?;
        let mut out = Vec::new();
        for table in &self.config.tables {
            let d = self.describe(&mut conn, table).await?;
            let key = d.primary_key.first().cloned().ok_or_else(|| {
                PortError::fatal(
                    ENGINE,
                    format!("table {table} has no primary key: its events could not be keyed"),
                )
            })?;
            out.push(((*d.schema).clone(), key));
        }
        let _ = conn.disconnect().await;
        Ok(out)
    }

    /// Reads a table's columns and primary key.
    pub(crate) async fn describe(&self, conn: &mut Conn, table: &str) -> Result<Described> {
        type Row = (
            String,
            String,
            String,
            String,
            Option<u32>,
            Option<u32>,
            Option<u32>,
            Option<String>,
        );
        let rows: Vec<Row> = "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE,
                    NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, COLUMN_DEFAULT
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?
             ORDER BY ORDINAL_POSITION"
            .with((&self.database, table))
            .fetch(&mut *conn)
            .await
            .map_err(|e| port_error(&format!("describing table {table}"), e))?;
        if rows.is_empty() {
            return Err(PortError::fatal(
                ENGINE,
                format!(
                    "table {}.{table} does not exist (check cdc.tables and mysql.database)",
                    self.database
                ),
            ));
        }
        let primary_key: Vec<String> = "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY'
             ORDER BY ORDINAL_POSITION"
            .with((&self.database, table))
            .fetch(&mut *conn)
            .await
            .map_err(|e| port_error(&format!("reading the primary key of {table}"), e))?;
        let mut types = HashMap::new();
        let mut cols = Vec::new();
        for (name, data_type, column_type, nullable, precision, scale, fraction_digits, default) in
            rows
        {
            let info = ColumnInfo {
                name: name.clone(),
                data_type,
                column_type,
                nullable: nullable.eq_ignore_ascii_case("YES"),
                precision,
                scale,
                fraction_digits,
            };
            let kind = columns::column_type(&info, self.config.decimal_handling);
            types.insert(name.clone(), kind);
            cols.push(Column {
                name,
                kind,
                optional: info.nullable,
                default: default.and_then(|d| columns::default_value(kind, &d)),
            });
        }
        Ok(Described {
            schema: Arc::new(TableSchema {
                server: self.server_name.clone(),
                db: self.database.clone(),
                table: table.to_string(),
                columns: cols,
            }),
            types,
            primary_key,
        })
    }
}

#[async_trait]
impl Capturable for MysqlCapture {
    async fn follow(&self, position: Option<String>) -> Result<Box<dyn ChangeFeed>> {
        Ok(Box::new(
            feed::MysqlFeed::open(self.clone(), position).await?,
        ))
    }
}

/// A binlog position, `file:pos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub file: String,
    pub pos: u64,
}

impl Position {
    pub fn parse(text: &str) -> Result<Position> {
        text.rsplit_once(':')
            .and_then(|(file, pos)| {
                Some(Position {
                    file: file.to_string(),
                    pos: pos.parse().ok()?,
                })
            })
            .filter(|p| !p.file.is_empty())
            .ok_or_else(|| {
                PortError::fatal(
                    ENGINE,
                    format!("stored position {text:?} is not a binlog file:position"),
                )
            })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// How two stored positions compare in the binlog (the file's number, then the offset; a
/// snapshot under way by where its binlog is followed from); `None` when either is not a
/// position or their files are of two binlogs (another base name).
pub fn compare_positions(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    let at = |text: &str| {
        let p = resume::Resume::parse(text).ok()?.binlog().ok()?;
        let (base, number) = p.file.rsplit_once('.')?;
        Some((base.to_string(), number.parse::<u64>().ok()?, p.pos))
    };
    let (a, b) = (at(a)?, at(b)?);
    (a.0 == b.0).then(|| (a.1, a.2).cmp(&(b.1, b.2)))
}

/// Why `position` cannot be followed on a server whose binlogs are `files`, if it cannot.
fn lost_reason(position: &Position, files: &[String]) -> Option<String> {
    if files.contains(&position.file) {
        return None;
    }
    let now = match (files.first(), files.last()) {
        (Some(first), Some(last)) => format!("its binlogs are now {first} to {last}"),
        _ => "it lists no binlogs".to_string(),
    };
    Some(format!(
        "the stored position {position} is no longer on the server ({now}: purged, or the server was rebuilt), so the changes after it cannot be read from the binlog"
    ))
}

/// The server's current binlog end: `SHOW BINARY LOG STATUS` (MySQL 8.2+), else
/// `SHOW MASTER STATUS` (MySQL 8.0, MariaDB).
pub(crate) async fn binlog_end(conn: &mut Conn) -> Result<Position> {
    // As rows: the statements return more columns than the two read here.
    let row: Option<mysql_async::Row> = match "SHOW BINARY LOG STATUS".first(&mut *conn).await {
        Ok(row) => row,
        Err(_) => "SHOW MASTER STATUS"
            .first(&mut *conn)
            .await
            .map_err(|e| port_error("reading the binlog position", e))?,
    };
    let no_binlog = || {
        PortError::fatal(
            ENGINE,
            "the server writes no binlog: start it with --log-bin",
        )
    };
    let row = row.ok_or_else(no_binlog)?;
    let file = row.get_opt::<String, _>("File").and_then(|r| r.ok());
    let pos = row.get_opt::<u64, _>("Position").and_then(|r| r.ok());
    match (file, pos) {
        (Some(file), Some(pos)) => Ok(Position { file, pos }),
        _ => Err(no_binlog()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_compare_by_file_number_then_offset_within_one_binlog() {
        use std::cmp::Ordering::*;
        assert_eq!(
            compare_positions("binlog.000002:4", "binlog.000001:900"),
            Some(Greater)
        );
        assert_eq!(
            compare_positions("binlog.000001:90", "binlog.000001:900"),
            Some(Less)
        );
        assert_eq!(
            compare_positions("binlog.000010:4", "binlog.000009:4"),
            Some(Greater)
        );
        assert_eq!(
            compare_positions("binlog.000001:4", "binlog.000001:4"),
            Some(Equal)
        );
        assert_eq!(
            compare_positions("mysql-bin.000009:4", "binlog.000001:4"),
            None
        );
        assert_eq!(compare_positions("nonsense", "binlog.000001:4"), None);
    }

    #[test]
    fn a_position_whose_file_was_purged_is_lost_and_says_which_files_remain() {
        let files = [
            "mysql-bin.000007".to_string(),
            "mysql-bin.000008".to_string(),
        ];
        let here = Position::parse("mysql-bin.000008:400").unwrap();
        assert_eq!(lost_reason(&here, &files), None);
        let gone = Position::parse("mysql-bin.000003:4711").unwrap();
        let why = lost_reason(&gone, &files).unwrap();
        assert!(why.contains("mysql-bin.000003:4711"), "{why}");
        assert!(
            why.contains("mysql-bin.000007 to mysql-bin.000008"),
            "{why}"
        );
        assert!(lost_reason(&gone, &[]).unwrap().contains("no binlogs"));
    }

    #[test]
    fn positions_round_trip_and_bad_ones_say_so() {
        let p = Position::parse("binlog.000012:4711").unwrap();
        assert_eq!(p.file, "binlog.000012");
        assert_eq!(p.pos, 4711);
        assert_eq!(p.to_string(), "binlog.000012:4711");
        for bad in ["", "binlog", ":4", "binlog.1:x"] {
            let e = Position::parse(bad).unwrap_err();
            assert!(e.message.contains("file:position"), "{bad}: {e}");
        }
    }
}
