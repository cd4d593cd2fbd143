//! The initial snapshot: every row of the captured tables as of one instant, and the binlog
//! position of that instant, so that streaming goes on from exactly there.
//!
//! MariaDB reports the position of a consistent-snapshot transaction itself
//! (`binlog_snapshot_file` / `binlog_snapshot_position`), so no lock is taken. MySQL does not:
//! there the snapshot is opened under a brief `FLUSH TABLES WITH READ LOCK`, as Debezium does.
//! Rows are read in primary-key order, one page per call, inside that one transaction.
//!
//! The last row of each page carries the snapshot's progress as its position, so that a
//! capture killed in the middle goes on from there in a new snapshot ([`super::resume`]).

use std::collections::VecDeque;

use brewline_core::debezium::{Op, Source};
use brewline_ports::{PortError, Result, RowChange};
use mysql_async::prelude::{Query, Queryable};
use mysql_async::{Conn, Value};

use super::resume::{Part, Progress, RowKey};
use super::{binlog_end, columns, Described, MysqlCapture, Position};
use crate::{port_error, ENGINE};

pub(crate) struct Snapshot {
    conn: Conn,
    /// Tables still to read, with their description.
    tables: VecDeque<(String, Described)>,
    /// Primary key of the last row read of the first table.
    after: Option<Vec<Value>>,
    /// The parts of the snapshot: those read before (by earlier snapshots cut short), then
    /// this one's, whose `through` is the last row handed out.
    parts: Vec<Part>,
    /// The binlog position this snapshot stands at.
    position: Position,
    pub read: u64,
    pub total: u64,
    /// The last row read, held back until it is known whether it is the last of its table or
    /// of the snapshot; whether it is the first of its table; and its key.
    held: Option<(RowChange, bool, RowKey)>,
    /// Whether a row was handed out yet.
    started: bool,
    /// Going on with a snapshot cut short: the table it was cut in, whose next row is not its
    /// first.
    cut_in: Option<String>,
    batch: usize,
    database: String,
}

fn e(context: &'static str) -> impl Fn(mysql_async::Error) -> PortError {
    move |err| port_error(context, err)
}

impl Snapshot {
    /// Opens the snapshot transaction and counts the rows to read: all of them, or, going on
    /// with a snapshot cut short (`earlier`), those after the last row it handed out.
    pub async fn begin(capture: &MysqlCapture, earlier: Option<Progress>) -> Result<Snapshot> {
        let (conn, position) = open(capture).await?;
        let (mut parts, cursor) = match earlier {
            None => (Vec::new(), None),
            Some(progress) => {
                let cursor = progress.parts.last().and_then(|p| p.through.clone());
                let Some(cursor) = cursor.filter(|_| !progress.done) else {
                    return Err(PortError::fatal(
                        ENGINE,
                        "stored snapshot progress says no row was read: take a new snapshot with `brewline cdc --resnapshot`",
                    ));
                };
                (progress.parts, Some(cursor))
            }
        };
        parts.push(Part {
            at: position.to_string(),
            through: None,
        });
        let mut snapshot = Snapshot {
            conn,
            tables: VecDeque::new(),
            after: None,
            parts,
            position: position.clone(),
            read: 0,
            total: 0,
            held: None,
            started: cursor.is_some(),
            cut_in: cursor.as_ref().map(|c| c.table.clone()),
            batch: capture.config.snapshot_batch.max(1),
            database: capture.database.clone(),
        };
        let skip = match &cursor {
            None => 0,
            Some(c) => capture
                .config
                .tables
                .iter()
                .position(|t| *t == c.table)
                .ok_or_else(|| {
                    PortError::fatal(
                        ENGINE,
                        format!("the snapshot cut short was reading table {}, which cdc.tables no longer names: take a new snapshot with `brewline cdc --resnapshot`", c.table),
                    )
                })?,
        };
        snapshot.after = cursor.map(|c| c.key);
        for table in capture.config.tables.iter().skip(skip) {
            snapshot.add_table(capture, table).await?;
        }
        if snapshot.parts.len() > 1 {
            tracing::info!(%position, rows = snapshot.total, parts = snapshot.parts.len(), "snapshot cut short goes on after its last row committed");
        } else {
            tracing::info!(%position, rows = snapshot.total, "snapshot started");
        }
        Ok(snapshot)
    }

    /// Describes a table to read and counts its rows.
    async fn add_table(&mut self, capture: &MysqlCapture, table: &str) -> Result<()> {
        let d = capture.describe(&mut self.conn, table).await?;
        if d.primary_key.is_empty() {
            return Err(PortError::fatal(
                ENGINE,
                format!("table {table} has no primary key, which the snapshot reads it by"),
            ));
        }
        let n: Option<u64> = format!("SELECT COUNT(*) FROM `{}`", table.replace('`', ""))
            .first(&mut self.conn)
            .await
            .map_err(e("counting rows for the snapshot"))?;
        self.total += n.unwrap_or(0);
        self.tables.push_back((table.to_string(), d));
        Ok(())
    }

    /// Where the binlog is followed from once every row is read: the first part's position.
    pub fn follow_from(&self) -> Result<Position> {
        match self.parts.first() {
            Some(part) => Position::parse(&part.at),
            None => Err(PortError::fatal(ENGINE, "a snapshot with no part")),
        }
    }

    /// The parts read, when the snapshot was read in more than one.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Whether every table has been read.
    pub fn done(&self) -> bool {
        self.tables.is_empty()
    }

    /// Up to `max` rows, in order; empty when the snapshot is complete (its transaction is
    /// then closed). The last row handed out carries the snapshot's progress as
    /// `resume_after`; the very last, where the binlog is followed from.
    pub async fn next(&mut self, max: usize) -> Result<Vec<RowChange>> {
        let mut out = Vec::new();
        let mut last_key = None;
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
            for (row, key) in rows {
                let first_in_table = match &self.held {
                    Some((h, _, _)) => h.table != row.table,
                    None => self.cut_in.take().is_none_or(|t| t != row.table),
                };
                if let Some((previous, first, key)) = self.held.replace((row, first_in_table, key))
                {
                    out.push(self.mark(previous, first, first_in_table));
                    last_key = Some(key);
                }
            }
        }
        if self.tables.is_empty() {
            if let Some((mut last, _, _)) = self.held.take() {
                last.source.snapshot = Some("last".into());
                last.resume_after = Some(self.read_whole());
                out.push(last);
            }
            "COMMIT"
                .ignore(&mut self.conn)
                .await
                .map_err(e("ending the snapshot"))?;
        } else if let (Some(last), Some(key)) = (out.last_mut(), last_key) {
            last.resume_after = Some(self.cut_after(key));
        }
        Ok(out)
    }

    /// The progress stored when the snapshot is cut short after the row `through`.
    fn cut_after(&mut self, through: RowKey) -> String {
        if let Some(part) = self.parts.last_mut() {
            part.through = Some(through);
        }
        self.progress(false)
    }

    /// The position stored once every row is read: the snapshot's own when it was read in
    /// one part, else the parts', the binlog to be followed from the first.
    fn read_whole(&mut self) -> String {
        if let Some(part) = self.parts.last_mut() {
            part.through = None;
        }
        if self.parts.len() == 1 {
            return self.position.to_string();
        }
        self.progress(true)
    }

    /// The progress as stored: the parts, the binlog to be followed from the first.
    fn progress(&self, done: bool) -> String {
        Progress {
            from: self
                .parts
                .first()
                .map_or_else(String::new, |p| p.at.clone()),
            parts: self.parts.clone(),
            done,
        }
        .to_text()
    }

    /// Marks a row handed out as Debezium marks snapshot records (`source.snapshot`): the
    /// snapshot's first `first`, a table's last `last_in_data_collection` and a later table's
    /// first `first_in_data_collection`, the others `true` (the very last, `last`, is marked
    /// when the snapshot ends). `table_ended`: the row after it is of another table.
    fn mark(&mut self, mut row: RowChange, first_in_table: bool, table_ended: bool) -> RowChange {
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

    /// The next rows of `table` after the last primary key read, each with its key.
    async fn page(
        &mut self,
        table: &str,
        d: &Described,
        limit: usize,
    ) -> Result<Vec<(RowChange, RowKey)>> {
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
            let key: Vec<Value> = pk_index
                .iter()
                .filter_map(|i| values.get(*i).cloned())
                .collect();
            self.after = Some(key.clone());
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
            let row = RowChange {
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
            };
            let key = RowKey {
                table: table.to_string(),
                key,
            };
            out.push((row, key));
        }
        Ok(out)
    }
}

/// Opens a consistent-snapshot transaction and says the binlog position it stands at.
async fn open(capture: &MysqlCapture) -> Result<(Conn, Position)> {
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
    Ok((conn, position))
}
