//! Any value a binlog row (or a snapshot read) may carry, for any column type: converted to
//! what Debezium writes, or refused with a reason, never a panic; and any text as a column's
//! default.
#![no_main]

use brewline_core::debezium::ColumnType;
use brewline_mysql::capture::columns::{default_value, guessed_type, to_json};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mysql_async::Value;

#[derive(Debug, Arbitrary)]
enum Kind {
    Int16,
    Int32,
    Int64,
    String,
    Boolean,
    Timestamp,
    MicroTimestamp,
    MicroTime,
    ZonedTimestamp,
    Date,
    Float64,
    Decimal { precision: u8, scale: u8 },
    Bytes,
}

#[derive(Debug, Arbitrary)]
enum Raw {
    Null,
    Bytes(Vec<u8>),
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    Date(u16, u8, u8, u8, u8, u8, u32),
    Time(bool, u32, u8, u8, u8, u32),
}

#[derive(Debug, Arbitrary)]
struct Input {
    kind: Kind,
    value: Raw,
    default: String,
}

fn kind(k: &Kind) -> ColumnType {
    match *k {
        Kind::Int16 => ColumnType::Int16,
        Kind::Int32 => ColumnType::Int32,
        Kind::Int64 => ColumnType::Int64,
        Kind::String => ColumnType::String,
        Kind::Boolean => ColumnType::Boolean,
        Kind::Timestamp => ColumnType::Timestamp,
        Kind::MicroTimestamp => ColumnType::MicroTimestamp,
        Kind::MicroTime => ColumnType::MicroTime,
        Kind::ZonedTimestamp => ColumnType::ZonedTimestamp,
        Kind::Date => ColumnType::Date,
        Kind::Float64 => ColumnType::Float64,
        Kind::Decimal { precision, scale } => ColumnType::Decimal {
            precision: u32::from(precision),
            scale: u32::from(scale),
        },
        Kind::Bytes => ColumnType::Bytes,
    }
}

fn value(r: Raw) -> Value {
    match r {
        Raw::Null => Value::NULL,
        Raw::Bytes(b) => Value::Bytes(b),
        Raw::Int(n) => Value::Int(n),
        Raw::UInt(n) => Value::UInt(n),
        Raw::Float(f) => Value::Float(f),
        Raw::Double(f) => Value::Double(f),
        Raw::Date(y, mo, d, h, mi, s, us) => Value::Date(y, mo, d, h, mi, s, us),
        Raw::Time(neg, d, h, mi, s, us) => Value::Time(neg, d, h, mi, s, us),
    }
}

fuzz_target!(|input: Input| {
    let k = kind(&input.kind);
    let v = value(input.value);
    let _ = guessed_type(&v);
    let _ = to_json(k, v);
    let _ = default_value(k, &input.default);
});
