//! Debezium's MySQL change-event format, as Kafka Connect's JsonConverter writes it.
//!
//! Decoding accepts what real Debezium produces:
//! - with schemas enabled: `{"schema": {...}, "payload": {before, after, source, op, ts_ms}}`;
//! - with schemas disabled: the envelope itself, `{before, after, source, op, ts_ms}`
//!   (a `{"payload": ...}` wrapper without `schema` is accepted too);
//! - a tombstone: no value at all (or `{"schema": null, "payload": null}`).
//!
//! Rows decode straight into typed structs ([`OrderRow`], [`OrderLineRow`]); fields the
//! recommender does not need are skipped, so a column added to a table does not break decoding.
//! Encoding writes the same shapes, with a Kafka Connect schema built from a [`TableSchema`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeOwned, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::assembly::{Changes, OrderChange};
use crate::order::OrderHeader;

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

/// A row of `coffee_shop.orders`, as far as brewline reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRow {
    pub id: String,
    /// DATETIME: epoch millis; TIMESTAMP: an ISO-8601 string.
    #[serde(default)]
    pub timestamp: Option<Moment>,
    #[serde(default)]
    pub customer_id: Option<i64>,
    pub store_id: i64,
    pub payment_method_id: i64,
    pub num_products: i64,
    #[serde(default)]
    pub status: Option<String>,
}

/// A row of `coffee_shop.order_details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLineRow {
    pub order_id: String,
    pub product_id: String,
    pub quantity: i64,
    #[serde(default)]
    pub discount_percent: i64,
    pub subtotal: i64,
    /// BOOLEAN, or TINYINT(1) as 0/1.
    #[serde(default, deserialize_with = "flag")]
    pub is_suggestion: bool,
}

/// A point in time as Debezium writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Moment {
    /// `io.debezium.time.Timestamp`: epoch milliseconds (DATETIME).
    Millis(i64),
    /// `io.debezium.time.ZonedTimestamp`: ISO-8601 text (TIMESTAMP).
    Text(String),
}

impl Moment {
    /// Epoch milliseconds (ISO-8601 text is read as UTC); `None` when the text is not a time.
    pub fn millis(&self) -> Option<i64> {
        match self {
            Moment::Millis(ms) => Some(*ms),
            Moment::Text(t) => crate::calendar::millis_of_iso(t),
        }
    }
}

impl<'de> Deserialize<'de> for Moment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Moment, D::Error> {
        struct MomentVisitor;
        impl Visitor<'_> for MomentVisitor {
            type Value = Moment;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("epoch milliseconds or an ISO-8601 string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Moment, E> {
                Ok(Moment::Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Moment, E> {
                i64::try_from(v)
                    .map(Moment::Millis)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Moment, E> {
                Ok(Moment::Text(v.to_string()))
            }
        }
        d.deserialize_any(MomentVisitor)
    }
}

fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct Flag;
    impl Visitor<'_> for Flag {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a boolean or 0/1")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
            match v {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
            self.visit_i64(v as i64)
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    d.deserialize_any(Flag)
}

fn snapshot_flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    })
}

impl<S> ChangeEvent<OrderRow, S> {
    /// What this change of an `orders` row means for the order's assembly.
    pub fn order_changes(&self) -> Result<Changes, DecodeError> {
        match (self.op, &self.after, &self.before) {
            (Op::Truncate, _, _) => Ok(Changes::none()),
            (Op::Delete, _, Some(before)) => Ok(Changes::one(OrderChange::Cancelled {
                order_id: before.id.clone(),
            })),
            (_, Some(row), _) => {
                if row.num_products < 1 {
                    return Err(DecodeError::Invalid(format!(
                        "order {} has num_products {}, expected at least 1",
                        row.id, row.num_products
                    )));
                }
                Ok(Changes::one(OrderChange::Placed(OrderHeader {
                    order_id: row.id.clone(),
                    customer_id: row.customer_id,
                    store_id: row.store_id,
                    payment_method_id: row.payment_method_id,
                    num_products: row.num_products,
                })))
            }
            _ => Err(DecodeError::Invalid("change has no row".into())),
        }
    }
}

impl OrderLineRow {
    /// The line leaving its order, unless it is a suggested line (never an item).
    fn removed(&self) -> Option<OrderChange> {
        (!self.is_suggestion).then(|| OrderChange::LineRemoved {
            order_id: self.order_id.clone(),
            product_id: self.product_id.clone(),
        })
    }

    /// The line as an item of its order, unless it is a suggested line.
    fn added(&self) -> Result<Option<OrderChange>, DecodeError> {
        if self.is_suggestion {
            return Ok(None);
        }
        if self.quantity < 1 || self.subtotal < 0 {
            return Err(DecodeError::Invalid(format!(
                "line {}/{} has quantity {} and subtotal {}",
                self.order_id, self.product_id, self.quantity, self.subtotal
            )));
        }
        Ok(Some(OrderChange::LineAdded {
            order_id: self.order_id.clone(),
            product_id: self.product_id.clone(),
        }))
    }
}

impl<S> ChangeEvent<OrderLineRow, S> {
    /// What this change of an `order_details` row means for the order's assembly. Suggested
    /// lines are never items of the order; a line whose product changed (binlog capture reports
    /// a key update as one update) or that became a suggested line is removed first.
    pub fn order_changes(&self) -> Result<Changes, DecodeError> {
        match (self.op, &self.before, &self.after) {
            (Op::Truncate, _, _) => Ok(Changes::none()),
            (Op::Delete, Some(before), _) => Ok(Changes::both(before.removed(), None)),
            (Op::Update, Some(before), Some(after)) => {
                let moved = before.product_id != after.product_id
                    || before.order_id != after.order_id
                    || after.is_suggestion;
                let removed = if moved { before.removed() } else { None };
                Ok(Changes::both(removed, after.added()?))
            }
            (_, _, Some(after)) => Ok(Changes::both(None, after.added()?)),
            _ => Err(DecodeError::Invalid("change has no row".into())),
        }
    }
}

/// Kafka Connect types of MySQL columns, as Debezium maps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// TINYINT (TINYINT(1) and BOOLEAN too: 0 or 1), SMALLINT.
    Int16,
    /// INT, MEDIUMINT.
    Int32,
    /// BIGINT.
    Int64,
    /// VARCHAR, CHAR, TEXT.
    String,
    /// BIT(1) (a BOOLEAN column is TINYINT(1), [`ColumnType::Int16`], to MySQL and Debezium).
    Boolean,
    /// DATETIME with up to 3 fractional digits: `io.debezium.time.Timestamp`, epoch millis.
    Timestamp,
    /// DATETIME(4) to DATETIME(6): `io.debezium.time.MicroTimestamp`, epoch micros.
    MicroTimestamp,
    /// TIME: `io.debezium.time.MicroTime`, microseconds since midnight (or of the duration).
    MicroTime,
    /// TIMESTAMP: `io.debezium.time.ZonedTimestamp`, ISO-8601 UTC text.
    ZonedTimestamp,
    /// DATE: `io.debezium.time.Date`, days since the epoch.
    Date,
    /// FLOAT, DOUBLE; DECIMAL with `decimal.handling.mode=double`.
    Float64,
    /// DECIMAL with `decimal.handling.mode=precise`: Kafka Connect's `Decimal`, the unscaled
    /// value's big-endian two's-complement bytes (base64 in JSON).
    Decimal { precision: u32, scale: u32 },
    /// BINARY, VARBINARY, BLOB: bytes (base64 in JSON).
    Bytes,
}

/// One column of a captured table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: ColumnType,
    pub optional: bool,
    /// The column's default value as a value of its Kafka Connect type (Debezium declares it
    /// in the schema); `None` when it has none, or an expression such as `CURRENT_TIMESTAMP`.
    pub default: Option<Value>,
}

/// A captured table: its name and columns, for schemas and row normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// Logical server name (topic prefix).
    pub server: String,
    pub db: String,
    pub table: String,
    pub columns: Vec<Column>,
}

fn col(name: &str, kind: ColumnType, optional: bool) -> Column {
    Column {
        name: name.into(),
        kind,
        optional,
        default: None,
    }
}

impl Column {
    fn with_default(mut self, default: Value) -> Column {
        self.default = Some(default);
        self
    }
}

impl TableSchema {
    /// `coffee_shop.orders`.
    pub fn orders(server: &str, db: &str) -> TableSchema {
        use ColumnType::*;
        TableSchema {
            server: server.into(),
            db: db.into(),
            table: "orders".into(),
            columns: vec![
                col("id", String, false),
                col("timestamp", Timestamp, false),
                col("customer_id", Int32, true),
                col("store_id", Int32, false),
                col("payment_method_id", Int32, false),
                col("num_products", Int32, false),
                col("status", String, true),
            ],
        }
    }

    /// `coffee_shop.order_details`.
    pub fn order_details(server: &str, db: &str) -> TableSchema {
        use ColumnType::*;
        TableSchema {
            server: server.into(),
            db: db.into(),
            table: "order_details".into(),
            columns: vec![
                col("order_id", String, false),
                col("product_id", String, false),
                col("quantity", Int32, false),
                col("discount_percent", Int32, false).with_default(json!(0)),
                col("subtotal", Int32, false),
                // BOOLEAN is TINYINT(1) to MySQL, which Debezium writes as 0 or 1.
                col("is_suggestion", Int16, false).with_default(json!(0)),
            ],
        }
    }

    /// Kafka Connect's name for the row struct: `{server}.{db}.{table}.Value`.
    fn value_name(&self) -> String {
        format!("{}.{}.{}.Value", self.server, self.db, self.table)
    }

    fn field_schema(c: &Column) -> Value {
        let (ty, name) = match c.kind {
            ColumnType::Int16 => ("int16", None),
            ColumnType::Int32 => ("int32", None),
            ColumnType::Int64 => ("int64", None),
            ColumnType::String => ("string", None),
            ColumnType::Boolean => ("boolean", None),
            ColumnType::Timestamp => ("int64", Some("io.debezium.time.Timestamp")),
            ColumnType::MicroTimestamp => ("int64", Some("io.debezium.time.MicroTimestamp")),
            ColumnType::MicroTime => ("int64", Some("io.debezium.time.MicroTime")),
            ColumnType::ZonedTimestamp => ("string", Some("io.debezium.time.ZonedTimestamp")),
            ColumnType::Date => ("int32", Some("io.debezium.time.Date")),
            ColumnType::Float64 => ("double", None),
            ColumnType::Bytes => ("bytes", None),
            ColumnType::Decimal { precision, scale } => {
                let mut f = json!({
                    "type": "bytes", "optional": c.optional,
                    "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
                    "parameters": {
                        "scale": scale.to_string(),
                        "connect.decimal.precision": precision.to_string(),
                    },
                    "field": c.name,
                });
                if let (Some(default), Some(obj)) = (&c.default, f.as_object_mut()) {
                    obj.insert("default".into(), default.clone());
                }
                return f;
            }
        };
        let mut f = json!({"type": ty, "optional": c.optional, "field": c.name});
        if let Some(obj) = f.as_object_mut() {
            if let Some(name) = name {
                obj.insert("name".into(), json!(name));
                obj.insert("version".into(), json!(1));
            }
            if let Some(default) = &c.default {
                obj.insert("default".into(), default.clone());
            }
        }
        f
    }

    /// The Kafka Connect schema of this table's change envelope, as Debezium's `connector`
    /// (`mysql` or `mariadb`) declares it.
    pub fn envelope_schema(&self, connector: &str) -> Value {
        let row = |field: &str| {
            json!({
                "type": "struct",
                "fields": self.columns.iter().map(Self::field_schema).collect::<Vec<_>>(),
                "optional": true,
                "name": self.value_name(),
                "field": field,
            })
        };
        let f = |ty: &str, optional: bool, field: &str| json!({"type": ty, "optional": optional, "field": field});
        json!({
            "type": "struct",
            "fields": [
                row("before"),
                row("after"),
                {
                    "type": "struct",
                    "fields": [
                        f("string", false, "version"),
                        f("string", false, "connector"),
                        f("string", false, "name"),
                        f("int64", false, "ts_ms"),
                        {
                            "type": "string", "optional": true,
                            "name": "io.debezium.data.Enum", "version": 1,
                            "parameters": {"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
                            "default": "false", "field": "snapshot"
                        },
                        f("string", false, "db"),
                        f("string", true, "sequence"),
                        f("int64", true, "ts_us"),
                        f("int64", true, "ts_ns"),
                        f("string", true, "table"),
                        f("int64", false, "server_id"),
                        f("string", true, "gtid"),
                        f("string", false, "file"),
                        f("int64", false, "pos"),
                        f("int32", false, "row"),
                        f("int64", true, "thread"),
                        f("string", true, "query"),
                    ],
                    "optional": false,
                    "name": format!("io.debezium.connector.{connector}.Source"),
                    "version": 1,
                    "field": "source"
                },
                {
                    "type": "struct",
                    "fields": [
                        f("string", false, "id"),
                        f("int64", false, "total_order"),
                        f("int64", false, "data_collection_order"),
                    ],
                    "optional": true,
                    "name": "event.block",
                    "version": 1,
                    "field": "transaction"
                },
                f("string", false, "op"),
                f("int64", true, "ts_ms"),
                f("int64", true, "ts_us"),
                f("int64", true, "ts_ns"),
            ],
            "optional": false,
            "name": format!("{}.{}.{}.Envelope", self.server, self.db, self.table),
            "version": 2
        })
    }

    /// [`Self::envelope_schema`] as compact JSON text, to be computed once and passed to
    /// [`encode`].
    pub fn envelope_schema_json(&self, connector: &str) -> String {
        self.envelope_schema(connector).to_string()
    }

    /// Brings a generic row to Debezium's value types: booleans from 0/1 and 0/1 from
    /// booleans, and only the table's columns, in the table's order.
    pub fn normalize(&self, row: &Map<String, Value>) -> Map<String, Value> {
        self.columns
            .iter()
            .map(|c| {
                let v = row.get(&c.name).cloned().unwrap_or(Value::Null);
                let v = match (c.kind, v) {
                    (ColumnType::Boolean, Value::Number(n)) => Value::Bool(n.as_i64() != Some(0)),
                    (ColumnType::Int16, Value::Bool(b)) => Value::from(i64::from(b)),
                    (_, v) => v,
                };
                (c.name.clone(), v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
