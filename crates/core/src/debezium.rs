//! Debezium's MySQL change-event format, as Kafka Connect's JsonConverter writes it.
//!
//! Decoding accepts what real Debezium produces:
//! - with schemas enabled: `{"schema": {...}, "payload": {before, after, source, op, ts_ms}}`;
//! - with schemas disabled: the envelope itself, `{before, after, source, op, ts_ms}`
//!   (a `{"payload": ...}` wrapper without `schema` is accepted too);
//! - a tombstone: no value at all (or `{"schema": null, "payload": null}`).
//!
//! Rows decode straight into typed structs ([`OrderRow`], [`OrderLineRow`], in `rows.rs`);
//! fields the recommender does not need are skipped, so a column added to a table does not
//! break decoding. Encoding writes the same shapes, with a Kafka Connect schema built from a
//! [`TableSchema`] (`schema.rs`). What a change of a row means for its order is the assembly's
//! (`crate::assembly::changes`).

mod rows;
mod schema;

pub use rows::{Moment, OrderLineRow, OrderRow};
pub use schema::{Column, ColumnType, TableSchema};

use std::borrow::Cow;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `c`: inserted.
    Create,
    /// `u`: updated.
    Update,
    /// `d`: deleted.
    Delete,
    /// `r`: read by a snapshot.
    Read,
    /// `t`: the table was truncated (no row).
    Truncate,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }

    pub fn parse(code: &str) -> Option<Op> {
        match code {
            "c" => Some(Op::Create),
            "u" => Some(Op::Update),
            "d" => Some(Op::Delete),
            "r" => Some(Op::Read),
            "t" => Some(Op::Truncate),
            _ => None,
        }
    }
}

impl Serialize for Op {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// Where a change came from: Debezium's `source` block (MySQL and MariaDB connectors), its
/// fields in Debezium's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    #[serde(default)]
    pub version: String,
    /// `mysql` or `mariadb`, as Debezium names its connectors.
    #[serde(default)]
    pub connector: String,
    /// The logical server name (the topic prefix).
    #[serde(default)]
    pub name: String,
    /// When the change was made in the database, epoch milliseconds.
    #[serde(default)]
    pub ts_ms: i64,
    /// `true`, `first`, `first_in_data_collection`, `last_in_data_collection`, `last`, `false`
    /// or `incremental`; older Debezium wrote a boolean.
    #[serde(default, deserialize_with = "snapshot_flag")]
    pub snapshot: Option<String>,
    #[serde(default)]
    pub db: String,
    /// Debezium's `sequence` (used by its PostgreSQL connector; null here).
    #[serde(default)]
    pub sequence: Option<String>,
    /// `ts_ms` in microseconds, where known (Debezium 2.6+).
    #[serde(default)]
    pub ts_us: Option<i64>,
    /// `ts_ms` in nanoseconds, where known (Debezium 2.6+).
    #[serde(default)]
    pub ts_ns: Option<i64>,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub server_id: i64,
    /// The transaction's GTID: MariaDB's `domain-server-sequence`, MySQL's `uuid:number`.
    #[serde(default)]
    pub gtid: Option<String>,
    /// Binlog file of the change.
    #[serde(default)]
    pub file: String,
    /// Binlog position of the change's event.
    #[serde(default)]
    pub pos: i64,
    /// Index of the row within its binlog event.
    #[serde(default)]
    pub row: i32,
    #[serde(default)]
    pub thread: Option<i64>,
    #[serde(default)]
    pub query: Option<String>,
}

impl Source {
    /// Sets `ts_ms` with its microsecond and nanosecond forms.
    pub fn at_ms(mut self, ts_ms: i64) -> Source {
        self.ts_ms = ts_ms;
        self.ts_us = Some(ts_ms.saturating_mul(1000));
        self.ts_ns = Some(ts_ms.saturating_mul(1_000_000));
        self
    }
}

/// Only when a change was committed: what a reader that needs nothing else of `source` decodes,
/// without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct SourceTime {
    #[serde(default)]
    pub ts_ms: i64,
    #[serde(default)]
    pub ts_us: Option<i64>,
}

/// A `source` block that knows when its change was committed.
pub trait CommitTime {
    /// Microseconds since the epoch.
    fn committed_at_us(&self) -> i64;
}

impl CommitTime for Source {
    fn committed_at_us(&self) -> i64 {
        self.ts_us.unwrap_or(self.ts_ms.saturating_mul(1000))
    }
}

impl CommitTime for SourceTime {
    fn committed_at_us(&self) -> i64 {
        self.ts_us.unwrap_or(self.ts_ms.saturating_mul(1000))
    }
}

/// One change of one row; `S` is how much of the `source` block is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent<T, S = Source> {
    pub op: Op,
    pub before: Option<T>,
    pub after: Option<T>,
    pub source: S,
    /// When the connector handled the change, epoch milliseconds.
    pub ts_ms: Option<i64>,
    pub ts_us: Option<i64>,
}

impl<T, S: CommitTime> ChangeEvent<T, S> {
    /// The row as it is after the change (before it, for a delete).
    pub fn row(&self) -> Option<&T> {
        self.after.as_ref().or(self.before.as_ref())
    }

    /// When the change was committed in the database, in microseconds since the epoch.
    pub fn committed_at_us(&self) -> i64 {
        self.source.committed_at_us()
    }
}

/// A decoded record: a change, or a tombstone that follows a delete.
// Returned once per record and never stored in bulk: boxing would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<T, S = Source> {
    Change(ChangeEvent<T, S>),
    Tombstone,
}

/// Why a record is not a usable change event. The text is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a Debezium change event: {0}")]
    Malformed(String),
    #[error("no `payload` and no `op`: not a Debezium change event")]
    NoPayload,
    #[error("unknown op {0:?} (expected c, u, d, r or t)")]
    UnknownOp(String),
    #[error("op {op:?} needs a `{field}` row, found none")]
    MissingRow {
        op: &'static str,
        field: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A record as Kafka Connect writes it: `{schema, payload: envelope}` with schemas, the envelope
/// itself without. One struct reads both: `payload` is an envelope of the same shape. The rows
/// and `source` stay undecoded, so that `op` is checked before them.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, rename = "schema")]
    _schema: IgnoredAny,
    #[serde(default, borrow, deserialize_with = "present")]
    payload: Option<Option<Box<Envelope<'a>>>>,
    #[serde(default, borrow)]
    before: Option<&'a RawValue>,
    #[serde(default, borrow)]
    after: Option<&'a RawValue>,
    #[serde(default, borrow)]
    source: Option<&'a RawValue>,
    #[serde(default, borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(default)]
    ts_us: Option<i64>,
}

/// Distinguishes a missing field (`None`) from an explicit null (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Decodes a record value (`None` is a tombstone) into a change of rows of type `T`.
pub fn decode<T: DeserializeOwned>(value: Option<&[u8]>) -> Result<Decoded<T>, DecodeError> {
    decode_with::<T, Source>(value)
}

/// [`decode`], keeping of the `source` block only what `S` holds (e.g. [`SourceTime`]).
pub fn decode_with<T: DeserializeOwned, S: DeserializeOwned + Default>(
    value: Option<&[u8]>,
) -> Result<Decoded<T, S>, DecodeError> {
    let Some(bytes) = value else {
        return Ok(Decoded::Tombstone);
    };
    let outer: Envelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let env = match outer.payload {
        Some(Some(env)) => *env,
        Some(None) => return Ok(Decoded::Tombstone),
        None if outer.op.is_some() => outer,
        None => return Err(DecodeError::NoPayload),
    };
    let code = env
        .op
        .ok_or(DecodeError::Invalid("payload has no `op`".into()))?;
    let op = Op::parse(&code).ok_or_else(|| DecodeError::UnknownOp(code.to_string()))?;
    let needs = |row: Option<&RawValue>, field| match row {
        Some(_) => Ok(()),
        None => Err(DecodeError::MissingRow {
            op: op.code(),
            field,
        }),
    };
    match op {
        Op::Create | Op::Read | Op::Update => needs(env.after, "after")?,
        Op::Delete => needs(env.before, "before")?,
        Op::Truncate => {}
    }
    let row = |raw: Option<&RawValue>, field: &str| {
        raw.map(|r| {
            serde_json::from_str::<T>(r.get())
                .map_err(|e| DecodeError::Invalid(format!("`{field}` row: {e}")))
        })
        .transpose()
    };
    Ok(Decoded::Change(ChangeEvent {
        op,
        before: row(env.before, "before")?,
        after: row(env.after, "after")?,
        source: match env.source {
            Some(raw) => serde_json::from_str(raw.get())
                .map_err(|e| DecodeError::Invalid(format!("`source`: {e}")))?,
            None => S::default(),
        },
        ts_ms: env.ts_ms,
        ts_us: env.ts_us,
    }))
}

#[derive(Serialize)]
struct PayloadOut<'a, T, S> {
    before: &'a Option<T>,
    after: &'a Option<T>,
    source: &'a S,
    transaction: Option<()>,
    op: Op,
    ts_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts_us: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts_ns: Option<i64>,
}

/// Encodes a change as JsonConverter would: with `schema` (the envelope schema of the table,
/// see [`TableSchema::envelope_schema_json`]) or without it.
pub fn encode<T: Serialize, S: Serialize>(
    event: &ChangeEvent<T, S>,
    schema: Option<&str>,
) -> Vec<u8> {
    let payload = PayloadOut {
        before: &event.before,
        after: &event.after,
        source: &event.source,
        transaction: None,
        op: event.op,
        ts_ms: event.ts_ms,
        ts_us: event.ts_us,
        ts_ns: event.ts_us.map(|us| us.saturating_mul(1000)),
    };
    let mut out = Vec::with_capacity(schema.map_or(0, str::len) + 512);
    if let Some(schema) = schema {
        out.extend_from_slice(b"{\"schema\":");
        out.extend_from_slice(schema.as_bytes());
        out.extend_from_slice(b",\"payload\":");
    }
    // Writing plain data into a Vec cannot fail: every key is a string.
    let _ = serde_json::to_writer(&mut out, &payload);
    if schema.is_some() {
        out.push(b'}');
    }
    out
}

fn snapshot_flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
