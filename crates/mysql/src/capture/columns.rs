//! MySQL column types and values as Debezium's MySQL connector writes them: pure functions,
//! no I/O.
//!
//! | MySQL | Debezium (Kafka Connect) | JSON |
//! |---|---|---|
//! | BIT(1) | boolean | `true` |
//! | TINYINT (TINYINT(1) and BOOLEAN too), SMALLINT (MEDIUMINT, INT; INT UNSIGNED, BIGINT) | int16 (int32; int64) | number: `0`/`1` for a BOOLEAN |
//! | DECIMAL | string, double or `Decimal` by `decimal_handling` | `"12.50"`, `12.5`, base64 |
//! | FLOAT, DOUBLE | double | number |
//! | DATETIME, DATETIME(1..3) | `io.debezium.time.Timestamp` | epoch milliseconds |
//! | DATETIME(4..6) | `io.debezium.time.MicroTimestamp` | epoch microseconds |
//! | TIME | `io.debezium.time.MicroTime` | microseconds |
//! | TIMESTAMP | `io.debezium.time.ZonedTimestamp` | `"2026-11-25T10:00:00.123Z"` |
//! | DATE | `io.debezium.time.Date` | days since the epoch |
//! | CHAR, VARCHAR, TEXT, ENUM, SET, JSON, YEAR | string | text |
//! | BINARY, VARBINARY, BLOB | bytes | base64 |

use base64::Engine as _;
use brewline_core::calendar::{civil_from_days, days_from_civil};
use brewline_core::debezium::ColumnType;
use mysql_async::Value;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// How DECIMAL columns are written (Debezium's `decimal.handling.mode`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DecimalHandling {
    /// Exact, as text: `"12.50"`.
    #[default]
    String,
    /// Exact, as Kafka Connect's `Decimal`: the unscaled value's bytes, base64 in JSON.
    Precise,
    /// As a double (may round).
    Double,
}

/// A column as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// `DATA_TYPE`, e.g. `int`.
    pub data_type: String,
    /// `COLUMN_TYPE`, e.g. `int(11) unsigned`, `tinyint(1)`.
    pub column_type: String,
    pub nullable: bool,
    pub precision: Option<u32>,
    pub scale: Option<u32>,
    /// `DATETIME_PRECISION`: fractional digits of a DATETIME, TIMESTAMP or TIME.
    pub fraction_digits: Option<u32>,
}

/// The Debezium type of a column.
pub fn column_type(c: &ColumnInfo, decimals: DecimalHandling) -> ColumnType {
    let unsigned = c.column_type.to_ascii_lowercase().contains("unsigned");
    match c.data_type.to_ascii_lowercase().as_str() {
        // MySQL stores BOOLEAN as TINYINT(1), and Debezium types TINYINT(1) as it reads it in
        // `SHOW CREATE TABLE` (its snapshot): int16, 0 or 1.
        "bit" if c.column_type.eq_ignore_ascii_case("bit(1)") => ColumnType::Boolean,
        "bool" | "boolean" => ColumnType::Boolean,
        "tinyint" => ColumnType::Int16,
        "smallint" if unsigned => ColumnType::Int32,
        "smallint" => ColumnType::Int16,
        "mediumint" => ColumnType::Int32,
        "int" | "integer" if unsigned => ColumnType::Int64,
        "int" | "integer" => ColumnType::Int32,
        "bigint" => ColumnType::Int64,
        "decimal" | "numeric" => match decimals {
            DecimalHandling::String => ColumnType::String,
            DecimalHandling::Double => ColumnType::Float64,
            DecimalHandling::Precise => ColumnType::Decimal {
                precision: c.precision.unwrap_or(10),
                scale: c.scale.unwrap_or(0),
            },
        },
        "float" | "double" | "real" => ColumnType::Float64,
        "datetime" if c.fraction_digits.unwrap_or(0) > 3 => ColumnType::MicroTimestamp,
        "datetime" => ColumnType::Timestamp,
        "time" => ColumnType::MicroTime,
        "timestamp" => ColumnType::ZonedTimestamp,
        "date" => ColumnType::Date,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "bit" => {
            ColumnType::Bytes
        }
        _ => ColumnType::String,
    }
}

/// The Debezium type of a value by the type the binlog's table map gives its column, which is
/// the type the row was written with; `None` where that says too little (BIT, GEOMETRY).
pub fn binlog_type(
    t: mysql_async::consts::ColumnType,
    decimals: DecimalHandling,
) -> Option<ColumnType> {
    use mysql_async::consts::ColumnType as T;
    Some(match t {
        T::MYSQL_TYPE_TINY | T::MYSQL_TYPE_SHORT => ColumnType::Int16,
        T::MYSQL_TYPE_INT24 | T::MYSQL_TYPE_LONG => ColumnType::Int32,
        T::MYSQL_TYPE_LONGLONG => ColumnType::Int64,
        T::MYSQL_TYPE_FLOAT | T::MYSQL_TYPE_DOUBLE => ColumnType::Float64,
        T::MYSQL_TYPE_DECIMAL | T::MYSQL_TYPE_NEWDECIMAL => match decimals {
            DecimalHandling::Double => ColumnType::Float64,
            DecimalHandling::String => ColumnType::String,
            // Kafka Connect's `Decimal` needs the column's scale, which the row does not carry.
            DecimalHandling::Precise => return None,
        },
        T::MYSQL_TYPE_DATETIME | T::MYSQL_TYPE_DATETIME2 => ColumnType::Timestamp,
        T::MYSQL_TYPE_TIMESTAMP | T::MYSQL_TYPE_TIMESTAMP2 => ColumnType::ZonedTimestamp,
        T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE => ColumnType::Date,
        T::MYSQL_TYPE_TIME | T::MYSQL_TYPE_TIME2 => ColumnType::MicroTime,
        T::MYSQL_TYPE_BIT | T::MYSQL_TYPE_GEOMETRY => return None,
        _ => ColumnType::String,
    })
}

/// What a value's type says of its kind, coarsely: two types of one kind convert each other's
/// values.
fn kind_of(t: ColumnType) -> u8 {
    match t {
        ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64 => 0,
        ColumnType::Float64 | ColumnType::Decimal { .. } => 1,
        ColumnType::String | ColumnType::Bytes => 2,
        ColumnType::Timestamp | ColumnType::MicroTimestamp => 3,
        ColumnType::ZonedTimestamp => 4,
        ColumnType::Date => 5,
        ColumnType::MicroTime => 6,
        ColumnType::Boolean => 7,
    }
}

/// The type to convert a row's value with: the column's type as described now, unless the row
/// was written when the column was of another kind (an `ALTER TABLE ... MODIFY` since, which a
/// capture that lags reads past): then the type its own event gives.
pub fn written_as(described: ColumnType, binlog: Option<ColumnType>) -> ColumnType {
    match binlog {
        Some(then) if kind_of(then) != kind_of(described) => then,
        _ => described,
    }
}

/// A column's default (`information_schema.COLUMNS.COLUMN_DEFAULT`) as a value of its Debezium
/// type: MariaDB quotes a text default (`'till'`) and writes `NULL` for none, MySQL gives the
/// bare text; an expression (`current_timestamp()`) is no value.
pub fn default_value(kind: ColumnType, raw: &str) -> Option<Json> {
    if raw.eq_ignore_ascii_case("NULL") {
        return None;
    }
    let text = match raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        Some(quoted) => quoted.replace("''", "'"),
        None => raw.to_string(),
    };
    to_json(kind, Value::Bytes(text.into_bytes())).ok()
}

/// The Debezium type to use for a value of a column nobody described (a column added after
/// the table's description was read, until it is read again).
pub fn guessed_type(v: &Value) -> ColumnType {
    match v {
        Value::Int(_) | Value::UInt(_) => ColumnType::Int64,
        Value::Float(_) | Value::Double(_) => ColumnType::Float64,
        Value::Date(..) => ColumnType::Timestamp,
        Value::NULL | Value::Bytes(_) | Value::Time(..) => ColumnType::String,
    }
}

/// A value read from MySQL (binlog row, or a snapshot read with the session in UTC) as
/// Debezium writes it for a column of type `kind`.
pub fn to_json(kind: ColumnType, v: Value) -> Result<Json, String> {
    let bad = |v: &Value| format!("{} is not a value of a {kind:?} column", shown(v));
    Ok(match (kind, v) {
        (_, Value::NULL) => Json::Null,
        (ColumnType::Boolean, Value::Int(n)) => Json::Bool(n != 0),
        (ColumnType::Boolean, Value::UInt(n)) => Json::Bool(n != 0),
        (ColumnType::Boolean, Value::Bytes(b)) => Json::Bool(text(&b) != "0"),
        (ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64, v) => match v {
            Value::Int(n) => Json::from(n),
            Value::UInt(n) => Json::from(n),
            Value::Bytes(b) => {
                let t = text(&b);
                t.parse::<i64>()
                    .map(Json::from)
                    .or_else(|_| t.parse::<u64>().map(Json::from))
                    .map_err(|_| format!("{t:?} is not an integer"))?
            }
            v => return Err(bad(&v)),
        },
        (ColumnType::Float64, v) => match v {
            Value::Float(f) => Json::from(f64::from(f)),
            Value::Double(f) => Json::from(f),
            Value::Int(n) => Json::from(n as f64),
            Value::UInt(n) => Json::from(n as f64),
            Value::Bytes(b) => {
                let t = text(&b);
                Json::from(
                    t.parse::<f64>()
                        .map_err(|_| format!("{t:?} is not a number"))?,
                )
            }
            v => return Err(bad(&v)),
        },
        (ColumnType::Decimal { scale, .. }, Value::Bytes(b)) => {
            let unscaled = unscaled(&text(&b), scale)?;
            Json::String(
                base64::engine::general_purpose::STANDARD.encode(twos_complement(unscaled)),
            )
        }
        (ColumnType::Timestamp, v) => match v {
            Value::Date(y, mo, d, h, mi, s, us) => {
                Json::from(epoch_micros(y, mo, d, h, mi, s, us).div_euclid(1000))
            }
            Value::Bytes(b) => {
                let t = text(&b);
                let (y, mo, d, h, mi, s, us) =
                    parse_datetime(&t).ok_or_else(|| format!("{t:?} is not a DATETIME"))?;
                Json::from(epoch_micros(y, mo, d, h, mi, s, us).div_euclid(1000))
            }
            v => return Err(bad(&v)),
        },
        (ColumnType::MicroTimestamp, v) => match v {
            Value::Date(y, mo, d, h, mi, s, us) => Json::from(epoch_micros(y, mo, d, h, mi, s, us)),
            Value::Bytes(b) => {
                let t = text(&b);
                let (y, mo, d, h, mi, s, us) =
                    parse_datetime(&t).ok_or_else(|| format!("{t:?} is not a DATETIME"))?;
                Json::from(epoch_micros(y, mo, d, h, mi, s, us))
            }
            v => return Err(bad(&v)),
        },
        (ColumnType::MicroTime, v) => match v {
            Value::Time(negative, days, h, mi, s, us) => {
                let secs = i64::from(days) * 86_400
                    + i64::from(h) * 3600
                    + i64::from(mi) * 60
                    + i64::from(s);
                let micros = micros_of_seconds(secs)
                    .and_then(|m| m.checked_add(i64::from(us)))
                    .ok_or_else(|| bad(&v))?;
                Json::from(if negative { -micros } else { micros })
            }
            Value::Bytes(b) => {
                let t = text(&b);
                Json::from(time_micros(&t).ok_or_else(|| format!("{t:?} is not a TIME"))?)
            }
            v => return Err(bad(&v)),
        },
        (ColumnType::ZonedTimestamp, v) => {
            let micros = match v {
                // The binlog's TIMESTAMP: seconds since the epoch, maybe with a fraction.
                Value::Bytes(b) => {
                    let t = text(&b);
                    match parse_datetime(&t) {
                        Some((y, mo, d, h, mi, s, us)) => epoch_micros(y, mo, d, h, mi, s, us),
                        None => epoch_seconds_text(&t)
                            .ok_or_else(|| format!("{t:?} is not a TIMESTAMP"))?,
                    }
                }
                Value::Int(secs) => micros_of_seconds(secs).ok_or_else(|| bad(&v))?,
                Value::UInt(secs) => i64::try_from(secs)
                    .ok()
                    .and_then(micros_of_seconds)
                    .ok_or_else(|| bad(&v))?,
                // Read by a query in a session whose time zone is UTC.
                Value::Date(y, mo, d, h, mi, s, us) => epoch_micros(y, mo, d, h, mi, s, us),
                v => return Err(bad(&v)),
            };
            Json::String(iso_utc(micros))
        }
        (ColumnType::Date, Value::Date(y, mo, d, ..)) => {
            Json::from(days_from_civil(i64::from(y), u32::from(mo), u32::from(d)))
        }
        (ColumnType::Date, Value::Bytes(b)) => {
            let t = text(&b);
            let (y, mo, d, ..) =
                parse_datetime(&t).ok_or_else(|| format!("{t:?} is not a DATE"))?;
            Json::from(days_from_civil(i64::from(y), u32::from(mo), u32::from(d)))
        }
        (ColumnType::Bytes, Value::Bytes(b)) => {
            Json::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (ColumnType::String, v) => Json::String(match v {
            Value::Bytes(b) => text(&b),
            Value::Int(n) => n.to_string(),
            Value::UInt(n) => n.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Double(f) => f.to_string(),
            Value::Date(y, mo, d, h, mi, s, us) => {
                format!(
                    "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{}",
                    fraction(us)
                )
            }
            Value::Time(neg, days, h, mi, s, us) => format!(
                "{}{:02}:{mi:02}:{s:02}{}",
                if neg { "-" } else { "" },
                u64::from(days) * 24 + u64::from(h),
                fraction(us)
            ),
            Value::NULL => return Ok(Json::Null),
        }),
        (_, v) => return Err(bad(&v)),
    })
}

/// A value as an error message shows it. Not `mysql_common`'s `Debug`, which overflows (and
/// panics in a debug build) on a TIME of more than 178 956 970 days, which a broken row may hold.
fn shown(v: &Value) -> String {
    match v {
        Value::Time(neg, days, h, m, s, us) => {
            let hours = u64::from(*days) * 24 + u64::from(*h);
            let sign = if *neg { "-" } else { "" };
            format!("TIME '{sign}{hours:03}:{m:02}:{s:02}.{us:06}'")
        }
        Value::Bytes(b) if b.len() > 64 => format!("{} bytes", b.len()),
        other => format!("{other:?}"),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn fraction(us: u32) -> String {
    if us == 0 {
        String::new()
    } else {
        format!(".{us:06}")
    }
}

/// `2026-11-25 10:00:00[.123456]` or `2026-11-25`.
fn parse_datetime(t: &str) -> Option<(u16, u8, u8, u8, u8, u8, u32)> {
    let (date, time) = t.split_once([' ', 'T']).unwrap_or((t, "00:00:00"));
    let mut d = date.splitn(3, '-');
    let (y, mo, dd) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let (h, mi, s) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    Some((y, mo, dd, h, mi, s, fraction_micros(frac)?))
}

/// The digits after a decimal point (`"125"`, `"123456"`, or none) as microseconds.
fn fraction_micros(frac: &str) -> Option<u32> {
    if frac.is_empty() {
        return Some(0);
    }
    let digits: String = frac.chars().take(6).collect();
    Some(digits.parse::<u32>().ok()? * 10u32.pow(6 - digits.len() as u32))
}

/// `[-]838:59:59[.ffffff]` (a TIME as text) in microseconds.
fn time_micros(t: &str) -> Option<i64> {
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
    let mut parts = hms.splitn(3, ':');
    let (h, m, s): (i64, i64, i64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    let secs = h
        .checked_mul(3600)?
        .checked_add(m.checked_mul(60)?)?
        .checked_add(s)?;
    let micros = micros_of_seconds(secs)?.checked_add(i64::from(fraction_micros(frac)?))?;
    Some(if negative { -micros } else { micros })
}

/// `1700000000` or `1700000000.123000` (seconds since the epoch) in microseconds.
fn epoch_seconds_text(t: &str) -> Option<i64> {
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    let secs: i64 = secs.parse().ok()?;
    micros_of_seconds(secs)?.checked_add(i64::from(fraction_micros(frac)?))
}

/// Seconds in microseconds, unless that is past what an i64 holds (a broken row).
fn micros_of_seconds(secs: i64) -> Option<i64> {
    secs.checked_mul(1_000_000)
}

fn epoch_micros(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> i64 {
    let days = days_from_civil(i64::from(y), u32::from(mo), u32::from(d));
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
    secs * 1_000_000 + i64::from(us)
}

/// ISO-8601 in UTC, as Debezium's `ZonedTimestamp`: `2026-11-25T10:00:00Z`, with the
/// fraction only when there is one.
pub fn iso_utc(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let us = micros.rem_euclid(1_000_000) as u32;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let frac = if us == 0 {
        String::new()
    } else if us.is_multiple_of(1000) {
        format!(".{:03}", us / 1000)
    } else {
        format!(".{us:06}")
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// The unscaled integer of a decimal text at `scale` digits: `"-12.5"` at 2 → -1250.
fn unscaled(t: &str, scale: u32) -> Result<i128, String> {
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if frac.len() > scale as usize || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return Err(format!("{t:?} is not a decimal of scale {scale}"));
    }
    let padded = format!("{int}{frac}{}", "0".repeat(scale as usize - frac.len()));
    let v: i128 = padded
        .parse()
        .map_err(|_| format!("{t:?} does not fit 38 digits"))?;
    Ok(if neg { -v } else { v })
}

/// The shortest big-endian two's-complement bytes of `v` (Java's `BigInteger.toByteArray`).
fn twos_complement(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < bytes.len() - 1 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(data_type: &str, column_type: &str) -> ColumnInfo {
        ColumnInfo {
            name: "c".into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            nullable: true,
            precision: Some(10),
            scale: Some(2),
            fraction_digits: None,
        }
    }

    #[test]
    fn a_row_written_before_its_column_changed_kind_converts_with_the_type_it_was_written_with() {
        use mysql_async::consts::ColumnType as T;
        let then = |t| binlog_type(t, DecimalHandling::String);
        // The same kind: the described type, which knows more (TINYINT(1), fractions).
        assert_eq!(
            written_as(ColumnType::Int16, then(T::MYSQL_TYPE_TINY)),
            ColumnType::Int16
        );
        assert_eq!(
            written_as(ColumnType::MicroTimestamp, then(T::MYSQL_TYPE_DATETIME2)),
            ColumnType::MicroTimestamp
        );
        assert_eq!(
            written_as(ColumnType::String, then(T::MYSQL_TYPE_NEWDECIMAL)),
            ColumnType::String,
            "DECIMAL as text"
        );
        // VARCHAR then, INT now: the row's text is text.
        let kind = written_as(ColumnType::Int32, then(T::MYSQL_TYPE_VARCHAR));
        assert_eq!(kind, ColumnType::String);
        assert_eq!(
            to_json(kind, Value::Bytes(b"abc".to_vec())).unwrap(),
            Json::String("abc".into())
        );
        // INT then, VARCHAR now; BIT says too little to overrule.
        assert_eq!(
            written_as(ColumnType::String, then(T::MYSQL_TYPE_LONG)),
            ColumnType::Int32
        );
        assert_eq!(
            written_as(ColumnType::Bytes, then(T::MYSQL_TYPE_BIT)),
            ColumnType::Bytes
        );
    }

    #[test]
    fn column_types_follow_debezium() {
        let t = |d: &str, c: &str| column_type(&info(d, c), DecimalHandling::String);
        assert_eq!(t("tinyint", "tinyint(1)"), ColumnType::Int16, "BOOLEAN");
        assert_eq!(t("bit", "bit(1)"), ColumnType::Boolean);
        let fraction = |digits| {
            column_type(
                &ColumnInfo {
                    fraction_digits: Some(digits),
                    ..info("datetime", "datetime")
                },
                DecimalHandling::String,
            )
        };
        assert_eq!(fraction(3), ColumnType::Timestamp);
        assert_eq!(fraction(6), ColumnType::MicroTimestamp);
        assert_eq!(t("time", "time(3)"), ColumnType::MicroTime);
        assert_eq!(t("tinyint", "tinyint(4)"), ColumnType::Int16);
        assert_eq!(t("int", "int(11)"), ColumnType::Int32);
        assert_eq!(t("int", "int(10) unsigned"), ColumnType::Int64);
        assert_eq!(t("bigint", "bigint(20)"), ColumnType::Int64);
        assert_eq!(t("datetime", "datetime(3)"), ColumnType::Timestamp);
        assert_eq!(t("timestamp", "timestamp"), ColumnType::ZonedTimestamp);
        assert_eq!(t("varchar", "varchar(36)"), ColumnType::String);
        assert_eq!(t("decimal", "decimal(10,2)"), ColumnType::String);
        assert_eq!(
            column_type(&info("decimal", "decimal(10,2)"), DecimalHandling::Precise),
            ColumnType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(
            column_type(&info("decimal", "decimal(10,2)"), DecimalHandling::Double),
            ColumnType::Float64
        );
    }

    #[test]
    fn fine_datetimes_are_epoch_micros_and_times_micros_of_the_day() {
        let v = Value::Date(2026, 11, 25, 10, 0, 0, 123_456);
        assert_eq!(
            to_json(ColumnType::MicroTimestamp, v).unwrap(),
            Json::from(1_795_600_800_123_456i64)
        );
        let v = Value::Time(false, 0, 8, 30, 0, 250_000);
        assert_eq!(
            to_json(ColumnType::MicroTime, v).unwrap(),
            Json::from(30_600_250_000i64)
        );
        let v = Value::Time(true, 1, 1, 0, 0, 0);
        assert_eq!(
            to_json(ColumnType::MicroTime, v).unwrap(),
            Json::from(-90_000_000_000i64)
        );
        let text = Value::Bytes(b"-25:00:00.5".to_vec());
        assert_eq!(
            to_json(ColumnType::MicroTime, text).unwrap(),
            Json::from(-90_000_500_000i64)
        );
        assert!(to_json(ColumnType::MicroTime, Value::Bytes(b"noon".to_vec())).is_err());
    }

    #[test]
    fn defaults_are_values_of_their_type_and_expressions_none() {
        assert_eq!(
            default_value(ColumnType::String, "'till'"),
            Some(Json::from("till"))
        );
        assert_eq!(
            default_value(ColumnType::String, "'it''s'"),
            Some(Json::from("it's"))
        );
        assert_eq!(
            default_value(ColumnType::String, "plain"),
            Some(Json::from("plain"))
        );
        assert_eq!(default_value(ColumnType::Int16, "0"), Some(Json::from(0)));
        assert_eq!(default_value(ColumnType::Int32, "NULL"), None);
        assert_eq!(
            default_value(ColumnType::Timestamp, "current_timestamp(3)"),
            None
        );
        assert_eq!(
            default_value(ColumnType::Timestamp, "'2026-01-01 00:00:00'"),
            Some(Json::from(1_767_225_600_000i64))
        );
    }

    #[test]
    fn datetime_is_epoch_millis_and_timestamp_is_iso_utc() {
        // 2026-11-25 10:00:00.123 as DATETIME(3), read from the binlog.
        let v = Value::Date(2026, 11, 25, 10, 0, 0, 123_000);
        assert_eq!(
            to_json(ColumnType::Timestamp, v).unwrap(),
            Json::from(1_795_600_800_123i64)
        );
        // The same instant as the binlog writes a TIMESTAMP(3): epoch seconds as text.
        let v = Value::Bytes(b"1795600800.123000".to_vec());
        assert_eq!(
            to_json(ColumnType::ZonedTimestamp, v).unwrap(),
            Json::from("2026-11-25T10:00:00.123Z")
        );
        assert_eq!(
            to_json(ColumnType::ZonedTimestamp, Value::Int(0)).unwrap(),
            Json::from("1970-01-01T00:00:00Z")
        );
        // Read by a query with the session in UTC.
        let v = Value::Date(2026, 11, 25, 10, 0, 0, 0);
        assert_eq!(
            to_json(ColumnType::ZonedTimestamp, v).unwrap(),
            Json::from("2026-11-25T10:00:00Z")
        );
        assert_eq!(
            to_json(ColumnType::Date, Value::Date(1970, 1, 2, 0, 0, 0, 0)).unwrap(),
            Json::from(1)
        );
        assert_eq!(
            to_json(
                ColumnType::Timestamp,
                Value::Bytes(b"1969-12-31 23:59:59".to_vec())
            )
            .unwrap(),
            Json::from(-1000)
        );
    }

    #[test]
    fn booleans_integers_text() {
        assert_eq!(
            to_json(ColumnType::Boolean, Value::Int(1)).unwrap(),
            Json::Bool(true)
        );
        assert_eq!(
            to_json(ColumnType::Boolean, Value::Int(0)).unwrap(),
            Json::Bool(false)
        );
        assert_eq!(
            to_json(ColumnType::Int32, Value::Int(-7)).unwrap(),
            Json::from(-7)
        );
        assert_eq!(
            to_json(ColumnType::Int64, Value::UInt(u64::MAX)).unwrap(),
            Json::from(u64::MAX)
        );
        assert_eq!(
            to_json(
                ColumnType::String,
                Value::Bytes("Cà phê".as_bytes().to_vec())
            )
            .unwrap(),
            Json::from("Cà phê")
        );
        assert_eq!(to_json(ColumnType::Int32, Value::NULL).unwrap(), Json::Null);
        assert!(to_json(ColumnType::Int32, Value::Date(2026, 1, 1, 0, 0, 0, 0)).is_err());
    }

    #[test]
    fn decimals_are_exact_in_every_mode() {
        assert_eq!(
            to_json(ColumnType::String, Value::Bytes(b"12.50".to_vec())).unwrap(),
            Json::from("12.50")
        );
        assert_eq!(
            to_json(ColumnType::Float64, Value::Bytes(b"12.50".to_vec())).unwrap(),
            Json::from(12.5)
        );
        let precise = |t: &str| {
            to_json(
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
                Value::Bytes(t.as_bytes().to_vec()),
            )
            .unwrap()
        };
        // 1250 = 0x04E2; -1250 = 0xFB1E; 128 needs a leading 0 byte (0x0080).
        assert_eq!(precise("12.50"), Json::from("BOI="));
        assert_eq!(precise("-12.5"), Json::from("+x4="));
        assert_eq!(precise("1.28"), Json::from("AIA="));
        assert_eq!(precise("0"), Json::from("AA=="));
        assert!(unscaled("1.234", 2).is_err());
    }

    /// Every column type, DECIMALs of several shapes among them.
    fn any_kind() -> impl proptest::strategy::Strategy<Value = ColumnType> {
        use proptest::prelude::*;
        prop_oneof![
            Just(ColumnType::Int16),
            Just(ColumnType::Int32),
            Just(ColumnType::Int64),
            Just(ColumnType::String),
            Just(ColumnType::Boolean),
            Just(ColumnType::Timestamp),
            Just(ColumnType::MicroTimestamp),
            Just(ColumnType::MicroTime),
            Just(ColumnType::ZonedTimestamp),
            Just(ColumnType::Date),
            Just(ColumnType::Float64),
            Just(ColumnType::Bytes),
            (0u32..80, 0u32..40)
                .prop_map(|(precision, scale)| ColumnType::Decimal { precision, scale }),
        ]
    }

    /// Every value a binlog row or a snapshot read may carry, hostile ones included: dates out
    /// of range, times of any sign and size, numbers at their bounds, any bytes.
    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Value::NULL),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
            "[-+0-9.eE: T]{0,30}".prop_map(|s| Value::Bytes(s.into_bytes())),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::UInt),
            any::<f32>().prop_map(Value::Float),
            any::<f64>().prop_map(Value::Double),
            (
                any::<u16>(),
                any::<u8>(),
                any::<u8>(),
                any::<u8>(),
                any::<u8>(),
                any::<u8>(),
                any::<u32>()
            )
                .prop_map(|(y, mo, d, h, mi, s, us)| Value::Date(y, mo, d, h, mi, s, us)),
            (
                any::<bool>(),
                any::<u32>(),
                any::<u8>(),
                any::<u8>(),
                any::<u8>(),
                any::<u32>()
            )
                .prop_map(|(neg, d, h, mi, s, us)| Value::Time(neg, d, h, mi, s, us)),
        ]
    }

    proptest::proptest! {
        /// Any value for any column type: converted, or refused with a reason, never a panic.
        #[test]
        fn any_value_converts_or_says_why(kind in any_kind(), value in any_value()) {
            let _ = to_json(kind, value.clone());
            let _ = guessed_type(&value);
        }

        /// Any text as a column default: read or left out, never a panic.
        #[test]
        fn any_default_reads_or_is_left_out(kind in any_kind(), raw in ".{0,30}") {
            let _ = default_value(kind, &raw);
        }
    }
}
