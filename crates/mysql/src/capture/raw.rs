//! The limit of any binlog capture, for the benchmark: the row events of a stretch of the
//! binlog read through mysql_async's binlog stream and decoded into rows of values, nothing
//! converted or sent.

use std::time::Instant;

use futures_util::StreamExt;
use mysql_async::binlog::events::EventData;
use mysql_async::BinlogStreamRequest;

use super::{binlog_end, MysqlCapture, Position};
use crate::{port_error, ENGINE};
use brewline_ports::{PortError, Result};

/// What a raw read did: rows decoded, and in how many seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawRead {
    pub rows: u64,
    pub seconds: f64,
}

impl MysqlCapture {
    /// The server's binlog end now, `file:pos`.
    pub async fn binlog_position(&self) -> Result<String> {
        let mut conn = self.connect().await?;
        let end = binlog_end(&mut conn).await?;
        let _ = conn.disconnect().await;
        Ok(end.to_string())
    }

    /// Reads the binlog from `from` to the server's end as it is now, decoding the rows of
    /// the captured database's row events; timed from the request to the last event.
    pub async fn read_raw(&self, from: &str) -> Result<RawRead> {
        let from = Position::parse(from)?;
        let mut conn = self.connect().await?;
        let end = binlog_end(&mut conn).await?;
        let began = Instant::now();
        let request = BinlogStreamRequest::new(self.config.server_id)
            .with_filename(from.file.as_bytes())
            .with_pos(from.pos);
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| port_error("requesting the binlog", e))?;
        let mut file = from.file.clone();
        let mut rows = 0u64;
        while let Some(event) = stream.next().await {
            let event = event.map_err(|e| port_error("reading the binlog", e))?;
            let header = event.header();
            let at = u64::from(header.log_pos());
            match event
                .read_data()
                .map_err(|e| PortError::fatal(ENGINE, format!("unreadable binlog event: {e}")))?
            {
                Some(EventData::RotateEvent(r)) if header.timestamp() != 0 => {
                    file = r.name().into_owned();
                }
                Some(EventData::RowsEvent(data)) => {
                    let tme = stream.get_tme(data.table_id()).ok_or_else(|| {
                        PortError::fatal(ENGINE, "rows event without its table map")
                    })?;
                    if tme.database_name() == self.database {
                        for row in data.rows(tme) {
                            row.map_err(|e| {
                                PortError::fatal(ENGINE, format!("unreadable row: {e}"))
                            })?;
                            rows += 1;
                        }
                    }
                }
                _ => {}
            }
            if file == end.file && at >= end.pos {
                break;
            }
        }
        Ok(RawRead {
            rows,
            seconds: began.elapsed().as_secs_f64(),
        })
    }
}
