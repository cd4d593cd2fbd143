use super::*;
use crate::assembly::{Changes, OrderChange};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// An insert into `orders` as Debezium 2.x with JsonConverter `schemas.enable=true` writes it.
const ORDER_CREATE_WITH_SCHEMA: &str = r#"{"schema":{"type":"struct","fields":[{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"},{"type":"int64","optional":false,"name":"io.debezium.time.Timestamp","version":1,"field":"timestamp"},{"type":"int32","optional":true,"field":"customer_id"},{"type":"int32","optional":false,"field":"store_id"},{"type":"int32","optional":false,"field":"payment_method_id"},{"type":"int32","optional":false,"field":"num_products"},{"type":"string","optional":true,"field":"status"}],"optional":true,"name":"mysql.coffee_shop.orders.Value","field":"before"},{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"}],"optional":true,"name":"mysql.coffee_shop.orders.Value","field":"after"},{"type":"struct","fields":[{"type":"string","optional":false,"field":"version"}],"optional":false,"name":"io.debezium.connector.mysql.Source","field":"source"},{"type":"string","optional":false,"field":"op"},{"type":"int64","optional":true,"field":"ts_ms"}],"optional":false,"name":"mysql.coffee_shop.orders.Envelope","version":1},"payload":{"before":null,"after":{"id":"0b6c8a54-5b0e-4b8e-9d43-1f5b2b0e8a11","timestamp":1732435200123,"customer_id":1442,"store_id":17,"payment_method_id":9,"num_products":2,"status":"completed"},"source":{"version":"2.5.0.Final","connector":"mysql","name":"mysql","ts_ms":1732435200000,"snapshot":"false","db":"coffee_shop","sequence":null,"table":"orders","server_id":1,"gtid":null,"file":"mysql-bin.000003","pos":4512,"row":0,"thread":12,"query":null},"op":"c","ts_ms":1732435200456,"transaction":null}}"#;

/// A line of that order, schemas disabled, TINYINT(1) as 0.
const LINE_CREATE_NO_SCHEMA: &str = r#"{"before":null,"after":{"order_id":"0b6c8a54-5b0e-4b8e-9d43-1f5b2b0e8a11","product_id":"CF03","quantity":2,"discount_percent":0,"subtotal":80000,"is_suggestion":0},"source":{"version":"2.5.0.Final","connector":"mysql","name":"mysql","ts_ms":1732435200000,"snapshot":"false","db":"coffee_shop","sequence":null,"table":"order_details","server_id":1,"gtid":null,"file":"mysql-bin.000003","pos":4512,"row":0,"thread":12,"query":null},"op":"c","ts_ms":1732435200457,"transaction":null}"#;

/// A snapshot read, from an older Debezium that wrote `snapshot` as a boolean.
const ORDER_SNAPSHOT_READ: &str = r#"{"before":null,"after":{"id":"a1","timestamp":1732435200123,"customer_id":null,"store_id":3,"payment_method_id":1,"num_products":1,"status":null},"source":{"version":"1.9.7.Final","connector":"mysql","name":"mysql","ts_ms":0,"snapshot":true,"db":"coffee_shop","table":"orders","server_id":0,"file":"mysql-bin.000001","pos":154,"row":0},"op":"r","ts_ms":1732435199000}"#;

/// A delete of an order, schemas enabled (schema trimmed), followed in Kafka by a tombstone.
const ORDER_DELETE: &str = r#"{"schema":{"type":"struct","fields":[],"optional":false,"name":"mysql.coffee_shop.orders.Envelope"},"payload":{"before":{"id":"a1","timestamp":1732435200123,"customer_id":5,"store_id":3,"payment_method_id":1,"num_products":1,"status":"completed"},"after":null,"source":{"version":"2.5.0.Final","connector":"mysql","name":"mysql","ts_ms":1732435300000,"snapshot":"false","db":"coffee_shop","table":"orders","server_id":1,"file":"mysql-bin.000003","pos":9001,"row":0},"op":"d","ts_ms":1732435300010}}"#;

/// An accepted suggestion written back, BOOLEAN column as true.
const SUGGESTED_LINE: &str = r#"{"before":null,"after":{"order_id":"a1","product_id":"T01","quantity":1,"discount_percent":35,"subtotal":29250,"is_suggestion":true},"source":{"connector":"mysql","name":"mysql","ts_ms":1,"db":"coffee_shop","table":"order_details","file":"f","pos":1,"row":0},"op":"c","ts_ms":2}"#;

fn change<T: DeserializeOwned>(s: &str) -> ChangeEvent<T> {
    match decode::<T>(Some(s.as_bytes())).unwrap() {
        Decoded::Change(c) => c,
        Decoded::Tombstone => panic!("not a tombstone"),
    }
}

#[test]
fn decodes_insert_with_schema() {
    let c: ChangeEvent<OrderRow> = change(ORDER_CREATE_WITH_SCHEMA);
    assert_eq!(c.op, Op::Create);
    assert_eq!(c.source.table.as_deref(), Some("orders"));
    assert_eq!(c.source.file, "mysql-bin.000003");
    assert_eq!(c.source.pos, 4512);
    assert_eq!(c.ts_ms, Some(1_732_435_200_456));
    assert_eq!(c.committed_at_us(), 1_732_435_200_000_000);
    let row = c.after.as_ref().unwrap();
    assert_eq!(row.timestamp, Some(Moment::Millis(1_732_435_200_123)));
    match c
        .order_changes()
        .unwrap()
        .into_iter()
        .collect::<Vec<_>>()
        .as_slice()
    {
        [OrderChange::Placed(h)] => {
            assert_eq!(h.customer_id, Some(1442));
            assert_eq!(h.payment_method_id, 9);
            assert_eq!(h.num_products, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn decodes_line_without_schema() {
    let c: ChangeEvent<OrderLineRow> = change(LINE_CREATE_NO_SCHEMA);
    let row = c.after.as_ref().unwrap();
    assert!(!row.is_suggestion);
    assert_eq!(row.subtotal, 80_000);
    assert_eq!(
        c.order_changes().unwrap(),
        Changes::one(OrderChange::LineAdded {
            order_id: "0b6c8a54-5b0e-4b8e-9d43-1f5b2b0e8a11".into(),
            product_id: "CF03".into()
        })
    );
}

#[test]
fn decodes_snapshot_read_with_null_customer() {
    let c: ChangeEvent<OrderRow> = change(ORDER_SNAPSHOT_READ);
    assert_eq!(c.op, Op::Read);
    assert_eq!(c.source.snapshot.as_deref(), Some("true"));
    assert!(
        matches!(c.order_changes().unwrap().into_iter().next(), Some(OrderChange::Placed(h)) if h.customer_id.is_none())
    );
}

#[test]
fn delete_cancels_and_tombstones_are_recognised() {
    let c: ChangeEvent<OrderRow> = change(ORDER_DELETE);
    assert_eq!(c.op, Op::Delete);
    assert!(c.after.is_none());
    assert_eq!(
        c.order_changes().unwrap(),
        Changes::one(OrderChange::Cancelled {
            order_id: "a1".into()
        })
    );
    assert_eq!(decode::<OrderRow>(None).unwrap(), Decoded::Tombstone);
    assert_eq!(
        decode::<OrderRow>(Some(br#"{"schema":null,"payload":null}"#)).unwrap(),
        Decoded::Tombstone
    );
}

#[test]
fn suggested_lines_are_not_items_of_the_order() {
    let c: ChangeEvent<OrderLineRow> = change(SUGGESTED_LINE);
    assert!(c.after.as_ref().unwrap().is_suggestion);
    assert_eq!(c.order_changes().unwrap(), Changes::none());
}

#[test]
fn a_line_that_changes_product_or_becomes_a_suggestion_is_removed_first() {
    let update = |after: &str| -> Vec<OrderChange> {
        let s = format!(
            r#"{{"op":"u","before":{{"order_id":"o","product_id":"A","quantity":1,"subtotal":1,"is_suggestion":false}},"after":{after}}}"#
        );
        change::<OrderLineRow>(&s)
            .order_changes()
            .unwrap()
            .into_iter()
            .collect()
    };
    let removed = |p: &str| OrderChange::LineRemoved {
        order_id: "o".into(),
        product_id: p.into(),
    };
    let added = |p: &str| OrderChange::LineAdded {
        order_id: "o".into(),
        product_id: p.into(),
    };
    let row = |p: &str, flag: bool| {
        format!(
            r#"{{"order_id":"o","product_id":"{p}","quantity":2,"subtotal":2,"is_suggestion":{flag}}}"#
        )
    };
    assert_eq!(update(&row("B", false)), vec![removed("A"), added("B")]);
    assert_eq!(
        update(&row("A", false)),
        vec![added("A")],
        "a quantity change"
    );
    assert_eq!(
        update(&row("A", true)),
        vec![removed("A")],
        "now a suggested line"
    );
}

#[test]
fn added_columns_do_not_break_decoding() {
    let s =
        LINE_CREATE_NO_SCHEMA.replace(r#""is_suggestion":0"#, r#""is_suggestion":0,"note":"x""#);
    let c: ChangeEvent<OrderLineRow> = change(&s);
    assert_eq!(c.after.unwrap().product_id, "CF03");
}

#[test]
fn bad_events_get_a_reason() {
    let reason = |s: &str| {
        decode::<OrderRow>(Some(s.as_bytes()))
            .unwrap_err()
            .to_string()
    };
    assert!(reason("not json").contains("not a Debezium change event"));
    assert!(reason(r#"{"hello":1}"#).contains("no `payload`"));
    assert!(reason(r#"{"payload":{"op":"x","after":null}}"#).contains("unknown op \"x\""));
    assert!(reason(r#"{"op":"c","after":null,"source":{}}"#).contains("needs a `after` row"));
    assert!(reason(r#"{"op":"d","before":null}"#).contains("`before`"));
    let r = reason(
        r#"{"op":"c","after":{"id":"a","store_id":"three","payment_method_id":1,"num_products":1}}"#,
    );
    assert!(r.contains("invalid type"), "{r}");
    let r = reason(r#"{"op":"c","after":{"id":"a","store_id":3,"num_products":1}}"#);
    assert!(r.contains("missing field `payment_method_id`"), "{r}");
    let bad_flag = LINE_CREATE_NO_SCHEMA.replace(r#""is_suggestion":0"#, r#""is_suggestion":7"#);
    assert!(decode::<OrderLineRow>(Some(bad_flag.as_bytes())).is_err());
    let zero: ChangeEvent<OrderRow> = change(
        r#"{"op":"c","after":{"id":"a","store_id":3,"payment_method_id":1,"num_products":0}}"#,
    );
    assert!(zero
        .order_changes()
        .unwrap_err()
        .to_string()
        .contains("num_products 0"));
}

#[test]
fn encoded_schema_describes_the_table() {
    let schema = TableSchema::order_details("mysql", "coffee_shop").envelope_schema("mariadb");
    assert_eq!(schema["name"], "mysql.coffee_shop.order_details.Envelope");
    let after = &schema["fields"][1];
    assert_eq!(after["field"], "after");
    assert_eq!(after["name"], "mysql.coffee_shop.order_details.Value");
    let flag = after["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "is_suggestion");
    // BOOLEAN is TINYINT(1): int16, as Debezium types it, with its default.
    assert_eq!(flag.unwrap()["type"], "int16");
    assert_eq!(flag.unwrap()["default"], 0);
    assert_eq!(
        schema["fields"][2]["name"],
        "io.debezium.connector.mariadb.Source"
    );
    let orders = TableSchema::orders("mysql", "coffee_shop").envelope_schema("mysql");
    let ts = orders["fields"][1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "timestamp");
    assert_eq!(ts.unwrap()["name"], "io.debezium.time.Timestamp");
}

#[test]
fn normalize_types_flags_as_their_columns_and_orders_columns() {
    let t = TableSchema::order_details("mysql", "coffee_shop");
    let row: Map<String, Value> = serde_json::from_str(
        r#"{"is_suggestion":true,"subtotal":5,"order_id":"o","product_id":"p","quantity":1,"discount_percent":0,"extra":3}"#,
    )
    .unwrap();
    let n = t.normalize(&row);
    assert_eq!(
        n["is_suggestion"],
        Value::from(1),
        "a BOOLEAN column is int16"
    );
    assert_eq!(n.keys().next().unwrap(), "order_id");
    assert!(!n.contains_key("extra"));
    let bit = TableSchema {
        server: "mysql".into(),
        db: "coffee_shop".into(),
        table: "flags".into(),
        columns: vec![Column {
            name: "on".into(),
            kind: ColumnType::Boolean,
            optional: false,
            default: None,
        }],
    };
    let row: Map<String, Value> = serde_json::from_str(r#"{"on":1}"#).unwrap();
    assert_eq!(
        bit.normalize(&row)["on"],
        Value::Bool(true),
        "BIT(1) is boolean"
    );
}

fn arb_source() -> impl Strategy<Value = Source> {
    (
        any::<i64>(),
        0i64..1 << 40,
        0i32..100,
        "[a-z]{1,8}",
        prop::option::of(any::<i64>()),
    )
        .prop_map(|(ts_ms, pos, row, table, ts_us)| Source {
            version: "brewline".into(),
            connector: "mysql".into(),
            name: "mysql".into(),
            ts_ms,
            ts_us,
            ts_ns: ts_us.map(|us| us.saturating_mul(1000)),
            snapshot: Some("false".into()),
            db: "coffee_shop".into(),
            sequence: None,
            table: Some(table),
            server_id: 1,
            gtid: None,
            file: "binlog.000001".into(),
            pos,
            row,
            thread: None,
            query: None,
        })
}

fn arb_line() -> impl Strategy<Value = OrderLineRow> {
    (
        "[ -~]{0,12}",
        "[A-Z]{1,2}[0-9]{2}",
        1i64..4,
        0i64..100,
        0i64..1_000_000,
        any::<bool>(),
    )
        .prop_map(
            |(order_id, product_id, quantity, discount_percent, subtotal, is_suggestion)| {
                OrderLineRow {
                    order_id,
                    product_id,
                    quantity,
                    discount_percent,
                    subtotal,
                    is_suggestion,
                }
            },
        )
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Create),
        Just(Op::Update),
        Just(Op::Delete),
        Just(Op::Read)
    ]
}

proptest! {
    /// Decoding what `encode` wrote gives back the same event, with and without schema.
    #[test]
    fn decode_inverts_encode(
        op in arb_op(),
        before in arb_line(),
        after in arb_line(),
        source in arb_source(),
        ts_ms in prop::option::of(any::<i64>()),
        with_schema in any::<bool>(),
    ) {
        let event = ChangeEvent {
            op,
            before: (op != Op::Create && op != Op::Read).then_some(before),
            after: (op != Op::Delete).then_some(after),
            source,
            ts_ms,
            ts_us: None,
        };
        let schema = TableSchema::order_details("mysql", "coffee_shop").envelope_schema_json("mysql");
        let bytes = encode(&event, with_schema.then_some(schema.as_str()));
        let back = decode::<OrderLineRow>(Some(&bytes)).unwrap();
        prop_assert_eq!(back, Decoded::Change(event));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(v.get("schema").is_some(), with_schema);
    }
}

/// Values a hostile or broken producer may put anywhere in an event.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::from(i64::MAX)),
        Just(Value::from(i64::MIN)),
        Just(Value::from(u64::MAX)),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(-1.5)),
        Just(Value::from(-1)),
        Just(Value::from(0)),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        Just(Value::Null),
        Just(Value::Bool(true)),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
    ]
}

/// Every path to a value in `v` (object keys and array indices).
fn paths(v: &Value, at: Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let mut p = at.clone();
                p.push(k.clone());
                out.push(p.clone());
                paths(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let mut p = at.clone();
                p.push(i.to_string());
                out.push(p.clone());
                paths(child, p, out);
            }
        }
        _ => {}
    }
}

fn set(v: &mut Value, path: &[String], new: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = v;
    for p in parents {
        at = match at {
            Value::Object(m) => m.get_mut(p).unwrap(),
            Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
            _ => return,
        };
    }
    match at {
        Value::Object(m) => {
            m.insert(last.clone(), new);
        }
        Value::Array(a) => a[last.parse::<usize>().unwrap()] = new,
        _ => {}
    }
}

/// Decodes `bytes` as both topics' events, turns what decodes into order changes, and assembles
/// them with the real suggester: whatever the bytes, an answer or an error, never a panic.
fn decode_and_assemble(bytes: &[u8]) {
    use crate::assembly::{EventRef, OrderState};
    use crate::suggestion::{Lookups, RandomStrategy, Suggester};
    let lookups = Lookups::from_reference(&crate::ReferenceData::bundled().unwrap(), "ACB");
    let suggester = Suggester::new(7, Box::new(RandomStrategy));
    let suggest = |o: &crate::CompletedOrder| suggester.suggest(o, &lookups);
    let at = EventRef {
        topic: "t".into(),
        partition: 0,
        offset: 0,
    };
    let mut changes = Vec::new();
    if let Ok(Decoded::Change(e)) = decode::<OrderRow>(Some(bytes)) {
        let _ = e.committed_at_us();
        changes.extend(e.order_changes().into_iter().flatten());
    }
    if let Ok(Decoded::Change(e)) = decode_with::<OrderRow, SourceTime>(Some(bytes)) {
        let _ = e.committed_at_us();
        changes.extend(e.order_changes().into_iter().flatten());
    }
    if let Ok(Decoded::Change(e)) = decode_with::<OrderLineRow, SourceTime>(Some(bytes)) {
        let _ = e.committed_at_us();
        changes.extend(e.order_changes().into_iter().flatten());
    }
    let mut state = OrderState::default();
    for c in &changes {
        let _ = state.apply(c, &at, suggest);
    }
}

proptest! {
    /// Any bytes: decoded or refused with a reason, never a panic.
    #[test]
    fn any_bytes_decode_or_say_why(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        decode_and_assemble(&bytes);
    }

    /// Real events with one value anywhere made hostile (overflowing timestamps, huge counts,
    /// wrong types): decoded and assembled, or refused with a reason, never a panic.
    #[test]
    fn real_events_with_a_hostile_value_decode_or_say_why(
        which in 0usize..5,
        pick in any::<prop::sample::Index>(),
        value in hostile_value(),
    ) {
        let samples = [
            ORDER_CREATE_WITH_SCHEMA,
            LINE_CREATE_NO_SCHEMA,
            ORDER_SNAPSHOT_READ,
            ORDER_DELETE,
            SUGGESTED_LINE,
        ];
        let mut event: Value = serde_json::from_str(samples[which]).unwrap();
        let mut all = Vec::new();
        paths(&event, Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        set(&mut event, &path, value);
        decode_and_assemble(&serde_json::to_vec(&event).unwrap());
    }
}
