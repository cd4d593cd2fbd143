//! The initial snapshot: every row of the captured tables as of one instant, and the binlog
//! position of that instant, so that streaming goes on from exactly there.
//!
//! MariaDB reports the position of a consistent-snapshot transaction itself
//! (`binlog_snapshot_file` / `binlog_snapshot_position`), so no lock is taken. MySQL does not:
//! there the snapshot is opened under a brief `FLUSH TABLES WITH READ LOCK`, as Debezium does.
//! Rows are read in primary-key order, one page per call, inside that one transaction.

use std::collections::VecDeque;

use brewline_core::debezium::{Op, Source};
use brewline_ports::{PortError, Result, RowChange};
use mysql_async::prelude::{Query, Queryable};
use mysql_async::{Conn, Value};

use super::{binlog_end, columns, Described, MysqlCapture, Position};
use crate::{port_error, ENGINE};

pub(crate) struct Snapshot {
    conn: Conn,
    /// Tables still to read, with their description.
    tables: VecDeque<(String, Described)>,
    /// Primary key of the last row read of the first table.
    after: Option<Vec<Value>>,
    /// The binlog position the snapshot stands at.
    pub position: Position,
    pub read: u64,
    pub total: u64,
    /// The last row read, held back until it is known whether it is the last of its table or
    /// of the snapshot; and whether it is the first of its table.
    held: Option<(RowChange, bool)>,
    /// Whether a row was handed out yet.
    started: bool,
    batch: usize,
    database: String,
}

fn e(context: &'static str) -> impl Fn(mysql_async::Error) -> PortError {
    move |err| port_error(context, err)
}

impl Snapshot {
    /// Opens the snapshot transaction and counts the rows to read.
    pub async fn begin(capture: &MysqlCapture) -> Result<Snapshot> {
        let mut conn = capture.connect().await?;
        for statement in [
            "SET SESSION time_zone = '+00:00'",
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        ] {
            statement
                .ignore(&mut conn)
                .await
                .map_err(e("preparing the snapshot session"))?;
        }
        let mariadb = conn.server_version().0 >= 10;
        let position = if mariadb {
            "START TRANSACTION WITH CONSISTENT SNAPSHOT"
                .ignore(&mut conn)
                .await
                .map_err(e("starting the snapshot"))?;
            let vars: Vec<(String, String)> = "SHOW STATUS LIKE 'binlog_snapshot_%'"
                .fetch(&mut conn)
                .await
                .map_err(e("reading the snapshot's binlog position"))?;
            let get = |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            match (get("Binlog_snapshot_file"), get("Binlog_snapshot_position")) {
                (Some(file), Some(pos)) if !file.is_empty() => Position {
                    file,
                    pos: pos.parse().map_err(|_| {
                        PortError::fatal(ENGINE, format!("binlog snapshot position {pos:?}"))
                    })?,
                },
                _ => {
                    return Err(PortError::fatal(
                        ENGINE,
                        "the server reports no binlog snapshot position: is --log-bin on?",
                    ))
                }
            }
        } else {
            "FLUSH TABLES WITH READ LOCK"
                .ignore(&mut conn)
                .await
                .map_err(e(
                    "locking tables for the snapshot (needs the RELOAD privilege)",
                ))?;
            "START TRANSACTION WITH CONSISTENT SNAPSHOT"
                .ignore(&mut conn)
                .await
                .map_err(e("starting the snapshot"))?;
            let position = binlog_end(&mut conn).await;
            "UNLOCK TABLES"
                .ignore(&mut conn)
                .await
                .map_err(e("unlocking tables"))?;
            position?
        };
        let mut tables = VecDeque::new();
        let mut total = 0;
        for table in &capture.config.tables {
            let d = capture.describe(&mut conn, table).await?;
            if d.primary_key.is_empty() {
                return Err(PortError::fatal(
                    ENGINE,
                    format!("table {table} has no primary key, which the snapshot reads it by"),
                ));
            }
            let n: Option<u64> = format!("SELECT COUNT(*) FROM `{}`", table.replace('`', ""))
                .first(&mut conn)
                .await
                .map_err(e("counting rows for the snapshot"))?;
            total += n.unwrap_or(0);
            tables.push_back((table.clone(), d));
        }
        tracing::info!(%position, rows = total, "snapshot started");
        Ok(Snapshot {
            conn,
            tables,
            after: None,
            position,
            read: 0,
            total,
            held: None,
            started: false,
            batch: capture.config.snapshot_batch.max(1),
            database: capture.database.clone(),
        })
    }

    /// Whether every table has been read.
    pub fn done(&self) -> bool {
        self.tables.is_empty()
    }

    /// Up to `max` rows, in order; empty when the snapshot is complete (its transaction is
    /// then closed). The very last row carries the snapshot's position as `resume_after`.
    pub async fn next(&mut self, max: usize) -> Result<Vec<RowChange>> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((table, described)) = self.tables.front() else {
                break;
            };
            let (table, described) = (table.clone(), described.clone());
            let rows = self.page(&table, &described, max - out.len()).await?;
            if rows.is_empty() {
                self.tables.pop_front();
                self.after = None;
                continue;
            }
            self.read += rows.len() as u64;
            for row in rows {
                let first_in_table = self.held.as_ref().is_none_or(|(h, _)| h.table != row.table);
                if let Some(previous) = self.held.replace((row, first_in_table)) {
                    out.push(self.mark(previous, first_in_table));
                }
            }
        }
        if self.tables.is_empty() {
            if let Some((mut last, _)) = self.held.take() {
                last.source.snapshot = Some("last".into());
                last.resume_after = Some(self.position.to_string());
                out.push(last);
            }
            "COMMIT"
                .ignore(&mut self.conn)
                .await
                .map_err(e("ending the snapshot"))?;
        }
        Ok(out)
    }

    /// Marks a row handed out as Debezium marks snapshot records (`source.snapshot`): the
    /// snapshot's first `first`, a table's last `last_in_data_collection` and a later table's
    /// first `first_in_data_collection`, the others `true` (the very last, `last`, is marked
    /// when the snapshot ends). `table_ended`: the row after it is of another table.
    fn mark(
        &mut self,
        (mut row, first_in_table): (RowChange, bool),
        table_ended: bool,
    ) -> RowChange {
        let marker = if !self.started {
            "first"
        } else if table_ended {
            "last_in_data_collection"
        } else if first_in_table {
            "first_in_data_collection"
        } else {
            "true"
        };
        self.started = true;
        row.source.snapshot = Some(marker.into());
        row
    }

    /// The next rows of `table` after the last primary key read.
    async fn page(&mut self, table: &str, d: &Described, limit: usize) -> Result<Vec<RowChange>> {
        let quote = |c: &str| format!("`{}`", c.replace('`', ""));
        let cols: Vec<String> = d.schema.columns.iter().map(|c| quote(&c.name)).collect();
        let pk: Vec<String> = d.primary_key.iter().map(|c| quote(c)).collect();
        let filter = match &self.after {
            Some(_) => format!(
                "WHERE ({}) > ({})",
                pk.join(", "),
                vec!["?"; pk.len()].join(", ")
            ),
            None => String::new(),
        };
        let sql = format!(
            "SELECT {} FROM {} {filter} ORDER BY {} LIMIT {}",
            cols.join(", "),
            quote(table),
            pk.join(", "),
            limit.min(self.batch)
        );
        let params = self.after.clone().unwrap_or_default();
        let rows: Vec<mysql_async::Row> = self
            .conn
            .exec(sql, params)
            .await
            .map_err(e("reading rows for the snapshot"))?;
        let pk_index: Vec<usize> = d
            .primary_key
            .iter()
            .filter_map(|k| d.schema.columns.iter().position(|c| &c.name == k))
            .collect();
        let now_ms = brewline_ports::now_ms();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let values = row.unwrap();
            self.after = Some(
                pk_index
                    .iter()
                    .filter_map(|i| values.get(*i).cloned())
                    .collect(),
            );
            let mut image = serde_json::Map::with_capacity(values.len());
            for (c, v) in d.schema.columns.iter().zip(values) {
                let json = columns::to_json(c.kind, v).map_err(|reason| {
                    PortError::fatal(
                        ENGINE,
                        format!("snapshot of {table}, column {}: {reason}", c.name),
                    )
                })?;
                image.insert(c.name.clone(), json);
            }
            out.push(RowChange {
                table: table.to_string(),
                op: Op::Read,
                before: None,
                after: Some(image),
                source: Source {
                    snapshot: Some("true".into()),
                    db: self.database.clone(),
                    table: Some(table.to_string()),
                    file: self.position.file.clone(),
                    pos: self.position.pos as i64,
                    ..Source::default()
                }
                .at_ms(now_ms),
                resume_after: None,
                schema: Some(d.schema.clone()),
            });
        }
        Ok(out)
    }
}
