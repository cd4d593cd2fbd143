//! Where a capture resumes: a binlog position, or a snapshot under way.
//!
//! A snapshot is read in primary-key order, table after table, and the position is stored with
//! every page handed out, so a capture killed in the middle of one goes on after the last row
//! it committed instead of reading every row again:
//!
//! 1. The rest is read in a new consistent snapshot, at a later binlog position. The rows are
//!    now in *parts*, each read at its own position: the first part up to the row where the
//!    first snapshot was cut, the next from there, and so on (one more part per kill).
//! 2. Once every row is read, the binlog is followed from the first part's position. A change
//!    is handed out only when it is later than the part its row is in: a row read at the
//!    second position has its earlier changes in its read already. Once the binlog passes the
//!    last part's position, every change is handed out again.
//!
//! So every row comes once, as it was at the read of its part, then every change after that
//! read, in order: no row twice, no change lost. Which part a row is in is decided as the
//! server orders its keys (a string key by its column's collation), by asking the server.
//!
//! Stored as JSON (a binlog position is `file:pos`, which never begins with `{`):
//! `{"from": "binlog.000003:4711", "parts": [{"at": "binlog.000003:1200", "through":
//! {"table": "orders", "key": [{"b": "6f2d31"}]}}, {"at": "binlog.000003:4711"}], "done": true}`.

use std::cmp::Ordering;
use std::collections::HashMap;

use brewline_ports::{PortError, Result};
use mysql_async::prelude::{Query, WithParams};
use mysql_async::{Conn, Value};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use super::Position;
use crate::{port_error, ENGINE};

/// Where a stored position says to go on from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resume {
    /// After this position of the binlog.
    Binlog(Position),
    /// A snapshot read in parts: its rows still to read, or the binlog to follow while the
    /// changes of rows read at a later position are passed over.
    Parts(Progress),
}

impl Resume {
    pub fn parse(text: &str) -> Result<Resume> {
        if !text.starts_with('{') {
            return Position::parse(text).map(Resume::Binlog);
        }
        let progress: Progress = serde_json::from_str(text).map_err(|e| {
            PortError::fatal(
                ENGINE,
                format!("stored snapshot progress is unreadable ({e}): take a new snapshot with `brewline cdc --resnapshot`"),
            )
        })?;
        if progress.parts.is_empty() {
            return Err(PortError::fatal(
                ENGINE,
                "stored snapshot progress has no part: take a new snapshot with `brewline cdc --resnapshot`",
            ));
        }
        Ok(Resume::Parts(progress))
    }

    /// The binlog position reading goes on from (for a snapshot under way, the one its binlog
    /// will be followed from when it is read).
    pub fn binlog(&self) -> Result<Position> {
        match self {
            Resume::Binlog(p) => Ok(p.clone()),
            Resume::Parts(progress) => Position::parse(&progress.from),
        }
    }
}

/// A snapshot read in parts, and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Progress {
    /// Where the binlog is followed from: the first part's position until every row is read,
    /// then the end of the last transaction handed out.
    pub from: String,
    /// The parts in key order (tables in the order they are captured, each by primary key).
    pub parts: Vec<Part>,
    /// Whether every row has been read.
    pub done: bool,
}

/// Rows read in one consistent snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Part {
    /// The binlog position the snapshot was read at.
    pub at: String,
    /// The last row of the part; none for the last part of a snapshot read whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<RowKey>,
}

/// A row by its table and primary key, as the server gave the key's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RowKey {
    pub table: String,
    #[serde(with = "key_values")]
    pub key: Vec<Value>,
}

impl Progress {
    /// The text stored for this progress.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The binlog followed from the first part of a snapshot read in parts: a change is handed out
/// only when it is later than the part its row is in.
pub(crate) struct CatchUp {
    parts: Vec<Part>,
    /// Each part's position; the last one's is where every change is handed out again.
    read_at: Vec<Position>,
    /// The captured tables, in the order the snapshot reads them.
    tables: Vec<String>,
    order: KeyOrder,
}

/// How the server orders the primary keys of the captured tables.
struct KeyOrder {
    database: String,
    /// Per table, the SQL of each key column's parameter, compared as the column is.
    sql: HashMap<String, Vec<String>>,
}

impl CatchUp {
    /// The catch-up after `parts`; none when the snapshot was read in one part.
    pub fn after(parts: &[Part], tables: &[String], database: &str) -> Result<Option<CatchUp>> {
        if parts.len() < 2 {
            return Ok(None);
        }
        let read_at = parts
            .iter()
            .map(|p| Position::parse(&p.at))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(CatchUp {
            parts: parts.to_vec(),
            read_at,
            tables: tables.to_vec(),
            order: KeyOrder {
                database: database.to_string(),
                sql: HashMap::new(),
            },
        }))
    }

    /// Whether a change at binlog position `at` is past the last part: from there on every
    /// change is handed out, and the catch-up is over.
    pub fn passed(&self, at: &Position) -> bool {
        self.read_at
            .last()
            .is_none_or(|until| compare(at, until) != Ordering::Less)
    }

    /// The position stored after a transaction that ends at `end` while catching up.
    pub fn position_after(&self, end: &Position) -> String {
        Progress {
            from: end.to_string(),
            parts: self.parts.clone(),
            done: true,
        }
        .to_text()
    }

    /// Whether the change at `at` of a row of `table` (by its keys before and after the change)
    /// is handed out: it is later than the part one of its keys is in.
    pub async fn keeps(
        &mut self,
        conn: &mut Conn,
        table: &str,
        at: &Position,
        keys: &[&[Value]],
    ) -> Result<bool> {
        for key in keys {
            let part = self.part_of(conn, table, key).await?;
            if self
                .read_at
                .get(part)
                .is_none_or(|read_at| compare(at, read_at) != Ordering::Less)
            {
                return Ok(true);
            }
        }
        Ok(keys.is_empty())
    }

    /// The part a row is in: the first whose last row is not before it.
    async fn part_of(&mut self, conn: &mut Conn, table: &str, key: &[Value]) -> Result<usize> {
        let tables = &self.tables;
        let index = |t: &str| tables.iter().position(|x| x == t);
        for (i, part) in self.parts.iter().enumerate() {
            let Some(through) = &part.through else {
                return Ok(i);
            };
            match index(table).cmp(&index(&through.table)) {
                Ordering::Less => return Ok(i),
                Ordering::Greater => continue,
                Ordering::Equal if self.order.not_after(conn, table, key, &through.key).await? => {
                    return Ok(i)
                }
                Ordering::Equal => continue,
            }
        }
        Ok(self.parts.len().saturating_sub(1))
    }
}

impl KeyOrder {
    /// Whether primary key `key` of `table` comes at or before `through` in the server's order
    /// (each string column by its collation, as the snapshot's `ORDER BY` read them).
    async fn not_after(
        &mut self,
        conn: &mut Conn,
        table: &str,
        key: &[Value],
        through: &[Value],
    ) -> Result<bool> {
        if key.len() != through.len() {
            return Ok(false);
        }
        if !self.sql.contains_key(table) {
            let sql = key_sql(conn, &self.database, table).await?;
            self.sql.insert(table.to_string(), sql);
        }
        let columns = self.sql.get(table).map(Vec::as_slice).unwrap_or_default();
        if columns.len() != key.len() {
            return Ok(false);
        }
        let side = columns.join(", ");
        let params: Vec<Value> = key.iter().chain(through).cloned().collect();
        let answer: Option<Option<i64>> = format!("SELECT ({side}) <= ({side})")
            .with(params)
            .first(&mut *conn)
            .await
            .map_err(|e| {
                port_error(
                    &format!("comparing a key of {table} with the snapshot's"),
                    e,
                )
            })?;
        Ok(answer.flatten() == Some(1))
    }
}

/// For each primary key column of `table`, the SQL of a parameter compared as the column is:
/// a string by its character set and collation, anything else as it comes.
async fn key_sql(conn: &mut Conn, database: &str, table: &str) -> Result<Vec<String>> {
    let rows: Vec<(Option<String>, Option<String>)> =
        "SELECT c.CHARACTER_SET_NAME, c.COLLATION_NAME
         FROM information_schema.KEY_COLUMN_USAGE k JOIN information_schema.COLUMNS c
           ON c.TABLE_SCHEMA = k.TABLE_SCHEMA AND c.TABLE_NAME = k.TABLE_NAME
          AND c.COLUMN_NAME = k.COLUMN_NAME
         WHERE k.TABLE_SCHEMA = ? AND k.TABLE_NAME = ? AND k.CONSTRAINT_NAME = 'PRIMARY'
         ORDER BY k.ORDINAL_POSITION"
            .with((database, table))
            .fetch(&mut *conn)
            .await
            .map_err(|e| port_error(&format!("reading the collations of {table}'s key"), e))?;
    let name = |n: &str| -> String {
        n.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    Ok(rows
        .into_iter()
        .map(|(charset, collation)| match (charset, collation) {
            (Some(cs), Some(co)) => format!(
                "CONVERT(CAST(? AS BINARY) USING {}) COLLATE {}",
                name(&cs),
                name(&co)
            ),
            _ => "?".to_string(),
        })
        .collect())
}

/// How two binlog positions of one server compare: by the file's number (its name's last
/// dotted part), then the offset in it.
pub(crate) fn compare(a: &Position, b: &Position) -> Ordering {
    let number = |p: &Position| {
        p.file
            .rsplit_once('.')
            .and_then(|(_, n)| n.parse::<u64>().ok())
    };
    match (number(a), number(b)) {
        (Some(x), Some(y)) if x != y => x.cmp(&y),
        _ => a.file.cmp(&b.file).then(a.pos.cmp(&b.pos)),
    }
}

/// A key's values in JSON: `null`, `{"i": -1}`, `{"u": 1}`, `{"f": 1.5}`, `{"b": "hex"}`,
/// `{"date": [y, m, d, h, min, s, µs]}`, `{"time": [negative, d, h, min, s, µs]}`.
mod key_values {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        values: &[Value],
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        values.iter().map(to_json).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<Value>, D::Error> {
        let values = Vec::<Json>::deserialize(d)?;
        values
            .iter()
            .map(|v| {
                from_json(v)
                    .ok_or_else(|| serde::de::Error::custom(format!("unreadable key value {v}")))
            })
            .collect()
    }

    fn to_json(value: &Value) -> Json {
        match value {
            Value::NULL => Json::Null,
            Value::Bytes(b) => {
                json!({ "b": b.iter().map(|x| format!("{x:02x}")).collect::<String>() })
            }
            Value::Int(i) => json!({ "i": i }),
            Value::UInt(u) => json!({ "u": u }),
            Value::Float(f) => json!({ "f": f }),
            Value::Double(f) => json!({ "f": f }),
            Value::Date(y, m, d, h, mi, s, us) => json!({ "date": [y, m, d, h, mi, s, us] }),
            Value::Time(neg, d, h, mi, s, us) => json!({ "time": [neg, d, h, mi, s, us] }),
        }
    }

    fn from_json(v: &Json) -> Option<Value> {
        if v.is_null() {
            return Some(Value::NULL);
        }
        let (tag, inner) = v.as_object()?.iter().next()?;
        let n = |i: usize| inner.get(i).and_then(Json::as_u64);
        Some(match tag.as_str() {
            "b" => {
                let hex = inner.as_str()?;
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        hex.get(i..i + 2)
                            .and_then(|b| u8::from_str_radix(b, 16).ok())
                    })
                    .collect::<Option<Vec<u8>>>()?;
                Value::Bytes(bytes)
            }
            "i" => Value::Int(inner.as_i64()?),
            "u" => Value::UInt(inner.as_u64()?),
            "f" => Value::Double(inner.as_f64()?),
            "date" => Value::Date(
                u16::try_from(n(0)?).ok()?,
                u8::try_from(n(1)?).ok()?,
                u8::try_from(n(2)?).ok()?,
                u8::try_from(n(3)?).ok()?,
                u8::try_from(n(4)?).ok()?,
                u8::try_from(n(5)?).ok()?,
                u32::try_from(n(6)?).ok()?,
            ),
            "time" => Value::Time(
                inner.get(0)?.as_bool()?,
                u32::try_from(n(1)?).ok()?,
                u8::try_from(n(2)?).ok()?,
                u8::try_from(n(3)?).ok()?,
                u8::try_from(n(4)?).ok()?,
                u32::try_from(n(5)?).ok()?,
            ),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(file: &str, pos: u64) -> Position {
        Position {
            file: file.into(),
            pos,
        }
    }

    #[test]
    fn progress_round_trips_with_every_kind_of_key_value() {
        let progress = Progress {
            from: "binlog.000003:1200".into(),
            parts: vec![
                Part {
                    at: "binlog.000003:1200".into(),
                    through: Some(RowKey {
                        table: "order_details".into(),
                        key: vec![
                            Value::Bytes(b"o-\x00\xff'\"".to_vec()),
                            Value::Int(-7),
                            Value::UInt(u64::MAX),
                            Value::Double(1.5),
                            Value::Date(2026, 12, 2, 17, 43, 4, 123_000),
                            Value::Time(true, 1, 2, 3, 4, 5),
                            Value::NULL,
                        ],
                    }),
                },
                Part {
                    at: "binlog.000004:4".into(),
                    through: None,
                },
            ],
            done: true,
        };
        let text = progress.to_text();
        assert!(text.starts_with('{'), "{text}");
        assert_eq!(
            Resume::parse(&text).unwrap(),
            Resume::Parts(progress.clone())
        );
        assert_eq!(
            Resume::parse(&text).unwrap().binlog().unwrap(),
            at("binlog.000003", 1200)
        );
    }

    #[test]
    fn a_plain_position_stays_a_position_and_bad_progress_says_what_to_do() {
        assert_eq!(
            Resume::parse("binlog.000001:4").unwrap(),
            Resume::Binlog(at("binlog.000001", 4))
        );
        for bad in [
            "{",
            r#"{"from": "binlog.000001:4", "parts": [], "done": false}"#,
            r#"{"from": "binlog.000001:4", "parts": [{"at": "b.1:4", "through": {"table": "t", "key": [{"b": "zz"}]}}], "done": false}"#,
            r#"{"from": "binlog.000001:4", "parts": [{"at": "b.1:4"}], "done": false, "extra": 1}"#,
        ] {
            let err = Resume::parse(bad).unwrap_err().to_string();
            assert!(err.contains("--resnapshot"), "{bad}: {err}");
        }
    }

    #[test]
    fn positions_compare_by_file_number_then_offset() {
        assert_eq!(
            compare(&at("binlog.000009", 900), &at("binlog.000010", 4)),
            Ordering::Less
        );
        assert_eq!(
            compare(&at("binlog.000010", 4), &at("binlog.000010", 4)),
            Ordering::Equal
        );
        assert_eq!(
            compare(&at("binlog.000010", 5), &at("binlog.000010", 4)),
            Ordering::Greater
        );
        assert_eq!(
            compare(&at("binlog.999999", 5), &at("binlog.1000000", 4)),
            Ordering::Less,
            "past six digits the name is longer, the number larger"
        );
    }
}
