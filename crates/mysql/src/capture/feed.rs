//! The change feed of a MySQL/MariaDB database: the snapshot when there is no position, then
//! the row binlog, one transaction at a time.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use brewline_core::debezium::{ColumnType, Op, Source};
use brewline_ports::{ChangeFeed, PortError, Result, RowChange};
use futures_util::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::prelude::Query;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use serde_json::{Map, Value as Json};
use tokio::time::Instant;

use super::resume::{CatchUp, Resume};
use super::snapshot::Snapshot;
use super::{binlog_end, columns, Described, MysqlCapture, Position};
use crate::{port_error, ENGINE};

/// MariaDB's compressed event types (`log_bin_compress`), which cannot be read.
const MARIADB_COMPRESSED: std::ops::RangeInclusive<u8> = 165..=171;
/// MariaDB's GTID event, which begins each transaction (mysql_async does not decode it).
const MARIADB_GTID: u8 = 162;
/// How often an idle server sends a heartbeat, and how long a silence means a dead connection.
const HEARTBEAT: Duration = Duration::from_secs(1);
const HEARTBEAT_SILENCE: Duration = Duration::from_secs(10);

pub(crate) struct MysqlFeed {
    capture: MysqlCapture,
    /// For descriptions and the server's binlog end.
    meta: Conn,
    described: HashMap<String, Described>,
    snapshot: Option<Snapshot>,
    /// After a snapshot read in parts (it was cut short), until the binlog passes the last
    /// part's position: which changes the parts' reads already hold.
    catch_up: Option<CatchUp>,
    /// Rows of the last snapshot, for its progress once it is done.
    snapshot_progress: Option<(u64, u64)>,
    stream: Option<BinlogStream>,
    /// Where the binlog is read from next (the end of the last event read).
    position: Position,
    /// The end of the last transaction read: where reading starts again after a failure.
    committed: Position,
    /// Changes of the transaction being read, its thread (MySQL) and its GTID.
    pending: Vec<RowChange>,
    thread: Option<i64>,
    gtid: Option<String>,
    /// MariaDB (which Debezium's MariaDB connector reads: no thread in `source`), or MySQL.
    mariadb: bool,
    ready: Vec<RowChange>,
    /// When the server last sent anything (an event or a heartbeat).
    last_heard: Instant,
    /// Whether the stream has sent nothing yet since it was requested: its first event is a
    /// rotate that repeats the file asked for.
    fresh: bool,
}

impl MysqlFeed {
    pub async fn open(capture: MysqlCapture, position: Option<String>) -> Result<MysqlFeed> {
        let mut meta = capture.connect().await?;
        let resume = position.as_deref().map(Resume::parse).transpose()?;
        let (snapshot, position, catch_up) = match resume {
            Some(Resume::Binlog(p)) => (None, p, None),
            Some(Resume::Parts(progress)) if progress.done => {
                let tables = &capture.config.tables;
                let catch_up = CatchUp::after(&progress.parts, tables, &capture.database)?;
                (None, Position::parse(&progress.from)?, catch_up)
            }
            Some(Resume::Parts(progress)) => {
                let s = Snapshot::begin(&capture, Some(progress)).await?;
                let p = s.follow_from()?;
                (Some(s), p, None)
            }
            None => {
                let s = Snapshot::begin(&capture, None).await?;
                let p = s.follow_from()?;
                (Some(s), p, None)
            }
        };
        let mut described = HashMap::new();
        for table in &capture.config.tables {
            described.insert(table.clone(), capture.describe(&mut meta, table).await?);
        }
        tracing::info!(%position, snapshot = snapshot.is_some(), "change capture starts");
        let mariadb = meta.server_version().0 >= 10;
        Ok(MysqlFeed {
            capture,
            meta,
            described,
            snapshot_progress: snapshot.as_ref().map(|s| (s.read, s.total)),
            snapshot,
            catch_up,
            stream: None,
            committed: position.clone(),
            position,
            pending: Vec::new(),
            thread: None,
            gtid: None,
            mariadb,
            ready: Vec::new(),
            last_heard: Instant::now(),
            fresh: true,
        })
    }

    async fn start_stream(&mut self) -> Result<BinlogStream> {
        let mut conn = self.capture.connect().await?;
        // The server sends a heartbeat when it has had nothing to send for this long, so a
        // connection that died silently is noticed (HEARTBEAT_SILENCE) and made again.
        format!("SET @master_heartbeat_period = {}", HEARTBEAT.as_nanos())
            .ignore(&mut conn)
            .await
            .map_err(|e| port_error("asking for binlog heartbeats", e))?;
        if self.mariadb {
            // A replica that knows MariaDB's GTIDs (capability 4): the server sends each
            // transaction's GTID event instead of a `BEGIN` made up for older replicas.
            "SET @mariadb_slave_capability = 4"
                .ignore(&mut conn)
                .await
                .map_err(|e| port_error("declaring the replica's capabilities", e))?;
        }
        self.last_heard = Instant::now();
        self.fresh = true;
        let request = BinlogStreamRequest::new(self.capture.config.server_id)
            .with_filename(self.position.file.as_bytes())
            .with_pos(self.position.pos);
        tracing::info!(position = %self.position, "reading the binlog");
        conn.get_binlog_stream(request)
            .await
            .map_err(|e| port_error(&format!("requesting the binlog from {}", self.position), e))
    }

    /// Reads binlog events until `max` changes are ready or `deadline` passes. A transaction's
    /// changes become ready at its commit, or in pieces of `max` when it is larger (only its
    /// last change carries the position after it).
    async fn read_binlog(&mut self, max: usize, deadline: Instant) -> Result<()> {
        let mut stream = match self.stream.take() {
            Some(s) => s,
            None => self.start_stream().await?,
        };
        let result = self.read_events(&mut stream, max, deadline).await;
        // After a failure the stream is dropped: the next call reads again from the position
        // of the last complete transaction.
        if result.is_ok() {
            self.stream = Some(stream);
        } else {
            self.pending.clear();
            self.position = self.committed.clone();
        }
        result
    }

    async fn read_events(
        &mut self,
        stream: &mut BinlogStream,
        max: usize,
        deadline: Instant,
    ) -> Result<()> {
        while self.ready.len() < max {
            // Once something is ready, only what has already arrived is read on: a change is
            // handed on as soon as the server stops sending, not when the wait is over.
            let until = if self.ready.is_empty() {
                deadline
            } else {
                Instant::now()
            };
            let event = match tokio::time::timeout_at(until, stream.next()).await {
                Err(_) if self.last_heard.elapsed() > HEARTBEAT_SILENCE => {
                    return Err(PortError::retryable(
                        ENGINE,
                        format!(
                            "no binlog event nor heartbeat for {} s: connecting again",
                            HEARTBEAT_SILENCE.as_secs()
                        ),
                    ))
                }
                Err(_) => return Ok(()),
                Ok(None) => {
                    return Err(PortError::retryable(
                        ENGINE,
                        "the server ended the binlog stream",
                    ))
                }
                Ok(Some(Err(e))) => return Err(port_error("reading the binlog", e)),
                Ok(Some(Ok(event))) => event,
            };
            self.last_heard = Instant::now();
            let header = event.header();
            let at = self.position.clone();
            if MARIADB_COMPRESSED.contains(&header.event_type_raw()) {
                return Err(PortError::fatal(
                    ENGINE,
                    format!("compressed binlog event at {at}: set log_bin_compress=OFF"),
                ));
            }
            if header.event_type_raw() == MARIADB_GTID {
                // A transaction begins (or a DDL statement, standalone).
                self.pending.clear();
                self.gtid = mariadb_gtid(event.data(), header.server_id());
            }
            let data = event.read_data().map_err(|e| {
                PortError::fatal(ENGINE, format!("unreadable binlog event at {at}: {e}"))
            })?;
            let end = u64::from(header.log_pos());
            let first = std::mem::replace(&mut self.fresh, false);
            match data {
                Some(EventData::RotateEvent(r)) => {
                    // The rotate the server sends first repeats the requested file (and its
                    // name may be garbled by MariaDB: it comes before the format description
                    // that says how long checksums are). Any later one moves to the next file:
                    // one written in the binlog (FLUSH LOGS, a full file) or one the server
                    // makes up as it goes on to the next file (after a restart, the old file
                    // ends with no rotate in it).
                    if !first || self.position.file.is_empty() {
                        self.position = Position {
                            file: r.name().into_owned(),
                            pos: r.position(),
                        };
                    }
                    continue;
                }
                Some(EventData::QueryEvent(q)) => {
                    let sql = q.query();
                    let statement = sql.trim();
                    if statement.eq_ignore_ascii_case("BEGIN") {
                        self.pending.clear();
                        self.thread = (!self.mariadb).then(|| i64::from(q.thread_id()));
                    } else if statement.eq_ignore_ascii_case("COMMIT") {
                        self.commit(end);
                    } else if !statement.starts_with('#') {
                        // DDL: descriptions are read again when rows need them.
                        tracing::info!(statement = %statement.chars().take(200).collect::<String>(), "schema statement in the binlog");
                        self.described.clear();
                    }
                }
                Some(EventData::XidEvent(_)) => self.commit(end),
                Some(EventData::GtidEvent(g)) => self.gtid = Some(mysql_gtid(&g.sid(), g.gno())),
                // Says where the server's binlog ends, not where this reader is.
                Some(EventData::HeartbeatEvent) => continue,
                Some(EventData::RowsEvent(rows)) => {
                    let tme = stream.get_tme(rows.table_id()).cloned().ok_or_else(|| {
                        PortError::fatal(
                            ENGINE,
                            format!("rows event at {at} without its table map"),
                        )
                    })?;
                    let event_start = end.saturating_sub(u64::from(header.event_size()));
                    let source = Source {
                        snapshot: Some("false".into()),
                        server_id: i64::from(header.server_id()),
                        gtid: self.gtid.clone(),
                        file: self.position.file.clone(),
                        pos: event_start as i64,
                        thread: self.thread,
                        ..Source::default()
                    }
                    .at_ms(i64::from(header.timestamp()) * 1000);
                    self.rows(&rows, &tme, source).await?;
                    if self.pending.len() >= max {
                        // Handed out before the transaction ends, all but the last: that one
                        // carries the position after it when it does ([`Self::commit`]).
                        let last = self.pending.pop();
                        self.ready.append(&mut self.pending);
                        self.pending.extend(last);
                    }
                }
                _ => {}
            }
            if end > 0 {
                self.position.pos = end;
            }
        }
        Ok(())
    }

    /// The end of a transaction at binlog offset `end`: its changes are ready, the last one
    /// carrying the position after it.
    fn commit(&mut self, end: u64) {
        let end_at = Position {
            file: self.position.file.clone(),
            pos: end,
        };
        if let Some(last) = self.pending.last_mut() {
            last.resume_after = Some(match &self.catch_up {
                Some(catch_up) => catch_up.position_after(&end_at),
                None => end_at.to_string(),
            });
        }
        self.ready.append(&mut self.pending);
        self.thread = None;
        self.gtid = None;
        self.committed = Position {
            file: self.position.file.clone(),
            pos: end,
        };
    }

    /// The row changes of one rows event of a captured table.
    async fn rows(
        &mut self,
        event: &RowsEventData<'_>,
        tme: &TableMapEvent<'static>,
        source: Source,
    ) -> Result<()> {
        if tme.database_name() != self.capture.database {
            return Ok(());
        }
        let table = tme.table_name().into_owned();
        if !self.capture.config.tables.contains(&table) {
            return Ok(());
        }
        let op = match event {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => Op::Create,
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => Op::Delete,
            _ => Op::Update,
        };
        for (index, pair) in event.rows(tme).enumerate() {
            let (before_row, after) = pair.map_err(|e| {
                PortError::fatal(
                    ENGINE,
                    format!(
                        "unreadable row of {table} at {}:{}: {e}",
                        source.file, source.pos
                    ),
                )
            })?;
            if !self.keeps(&table, &source, [&before_row, &after]).await? {
                continue;
            }
            let before = match before_row {
                Some(row) => Some(self.image(&table, row).await?),
                None => None,
            };
            let after = match after {
                Some(row) => Some(self.image(&table, row).await?),
                None => None,
            };
            let schema = self.described.get(&table).map(|d| d.schema.clone());
            self.pending.push(RowChange {
                table: table.clone(),
                op,
                before,
                after,
                source: Source {
                    table: Some(table.clone()),
                    db: self.capture.database.clone(),
                    row: index as i32,
                    ..source.clone()
                },
                resume_after: None,
                schema,
            });
        }
        Ok(())
    }

    /// Whether a change of a row of `table` at `source`'s position is handed out: always, but
    /// while catching up after a snapshot read in parts, where it is handed out only when it is
    /// later than the read of its row's part.
    async fn keeps(
        &mut self,
        table: &str,
        source: &Source,
        rows: [&Option<BinlogRow>; 2],
    ) -> Result<bool> {
        let at = Position {
            file: source.file.clone(),
            pos: u64::try_from(source.pos).unwrap_or_default(),
        };
        let Some(catch_up) = self.catch_up.as_mut() else {
            return Ok(true);
        };
        if catch_up.passed(&at) {
            tracing::info!(position = %at, "the binlog is past the snapshot's last part: every change is handed out");
            self.catch_up = None;
            return Ok(true);
        }
        if !self.described.contains_key(table) {
            let d = self.capture.describe(&mut self.meta, table).await?;
            self.described.insert(table.to_string(), d);
        }
        let primary_key = self
            .described
            .get(table)
            .map(|d| d.primary_key.clone())
            .unwrap_or_default();
        let keys: Vec<Vec<mysql_async::Value>> = rows
            .into_iter()
            .flatten()
            .map(|row| raw_key(row, &primary_key))
            .collect();
        let keys: Vec<&[mysql_async::Value]> = keys.iter().map(Vec::as_slice).collect();
        let Some(catch_up) = self.catch_up.as_mut() else {
            return Ok(true);
        };
        catch_up.keeps(&mut self.meta, table, &at, &keys).await
    }

    /// A binlog row as Debezium's JSON row, by the column names the binlog gives.
    async fn image(&mut self, table: &str, mut row: BinlogRow) -> Result<Map<String, Json>> {
        let names: Vec<String> = row
            .columns_ref()
            .iter()
            .map(|c| c.name_str().into_owned())
            .collect();
        // The types the row was written with, by the binlog's table map.
        let decimals = self.capture.config.decimal_handling;
        let written: Vec<Option<ColumnType>> = row
            .columns_ref()
            .iter()
            .map(|c| columns::binlog_type(c.column_type(), decimals))
            .collect();
        if names.iter().any(|n| n.starts_with('@')) {
            return Err(PortError::fatal(
                ENGINE,
                "the binlog does not name its columns: set binlog_row_metadata=FULL on the server (its events written before that cannot be captured)",
            ));
        }
        let known = |d: &Described| names.iter().all(|n| d.types.contains_key(n));
        if !self.described.get(table).is_some_and(known) {
            let d = self.capture.describe(&mut self.meta, table).await?;
            self.described.insert(table.to_string(), d);
        }
        let described = self.described.get(table);
        let mut image = Map::with_capacity(names.len());
        for (i, name) in names.into_iter().enumerate() {
            let value = match row.take(i) {
                Some(BinlogValue::Value(v)) => {
                    let kind = match described.and_then(|d| d.types.get(&name).copied()) {
                        Some(now) => columns::written_as(now, written[i]),
                        None => columns::guessed_type(&v),
                    };
                    columns::to_json(kind, v).map_err(|reason| {
                        PortError::fatal(ENGINE, format!("{table}.{name}: {reason}"))
                    })?
                }
                Some(BinlogValue::Jsonb(j)) => match Json::try_from(j) {
                    Ok(json) => Json::String(json.to_string()),
                    Err(e) => {
                        return Err(PortError::fatal(
                            ENGINE,
                            format!("{table}.{name}: unreadable JSON value: {e}"),
                        ))
                    }
                },
                Some(BinlogValue::JsonDiff(_)) => {
                    return Err(PortError::fatal(
                        ENGINE,
                        format!("{table}.{name}: partial JSON update in the binlog: set binlog_row_value_options='' on the server"),
                    ))
                }
                None => Json::Null,
            };
            image.insert(name, value);
        }
        Ok(image)
    }
}

/// The values of a binlog row's primary key columns, as the binlog gives them.
fn raw_key(row: &BinlogRow, primary_key: &[String]) -> Vec<mysql_async::Value> {
    let columns = row.columns_ref();
    primary_key
        .iter()
        .filter_map(|name| {
            let i = columns.iter().position(|c| c.name_str() == name.as_str())?;
            match row.as_ref(i)? {
                BinlogValue::Value(v) => Some(v.clone()),
                _ => None,
            }
        })
        .collect()
}

/// A MariaDB GTID event's `domain-server-sequence`: its data begins with the sequence number
/// (8 bytes) and the domain (4 bytes), little-endian.
fn mariadb_gtid(data: &[u8], server_id: u32) -> Option<String> {
    let sequence = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    Some(format!("{domain}-{server_id}-{sequence}"))
}

/// A MySQL GTID, `uuid:number`.
fn mysql_gtid(sid: &[u8; 16], number: u64) -> String {
    let hex: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}:{number}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[async_trait]
impl ChangeFeed for MysqlFeed {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<RowChange>> {
        let max = max.max(1);
        if let Some(snapshot) = self.snapshot.as_mut() {
            let rows = snapshot.next(max).await?;
            self.snapshot_progress = Some((snapshot.read, snapshot.total));
            if rows.is_empty() || snapshot.done() {
                tracing::info!(rows = snapshot.read, "snapshot done; streaming the binlog");
                let tables = &self.capture.config.tables;
                self.catch_up = CatchUp::after(snapshot.parts(), tables, &self.capture.database)?;
                self.snapshot = None;
            }
            if !rows.is_empty() {
                return Ok(rows);
            }
        }
        let deadline = Instant::now() + wait;
        self.read_binlog(max, deadline).await?;
        Ok(std::mem::take(&mut self.ready))
    }

    async fn behind(&mut self) -> Result<u64> {
        if let Some(s) = &self.snapshot {
            return Ok(s.total.saturating_sub(s.read).max(1));
        }
        let end = binlog_end(&mut self.meta).await?;
        Ok(if end.file == self.position.file {
            end.pos.saturating_sub(self.position.pos)
        } else {
            u64::from(u32::MAX)
        })
    }

    fn snapshot_progress(&self) -> Option<(u64, u64)> {
        self.snapshot_progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtids_read_as_the_servers_write_them() {
        let mut data = 1962u64.to_le_bytes().to_vec();
        data.extend(0u32.to_le_bytes());
        data.push(0); // flags
        assert_eq!(mariadb_gtid(&data, 1).as_deref(), Some("0-1-1962"));
        assert_eq!(mariadb_gtid(&data[..5], 1), None, "too short: no GTID");
        let sid = [
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ];
        assert_eq!(
            mysql_gtid(&sid, 23),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"
        );
    }
}
