//! Kafka Connect schemas of captured tables, as Debezium's MySQL and MariaDB connectors declare
//! them: the column types, the envelope schema written with each event when schemas are on, and
//! the normalisation of a generic row to those types.

use serde_json::{json, Map, Value};

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
