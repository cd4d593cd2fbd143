//! brewline against real Debezium (the MariaDB connector in Kafka Connect, `scripts/connect`):
//! the recommender fed by Debezium's own output, and `brewline cdc` compared with Debezium
//! event by event on one workload. Needs the servers `scripts/test` starts
//! (`TEST_BREWLINE_*`, `TEST_BREWLINE_CONNECT`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use brewline_kafka::KafkaLog;
use brewline_ports::EventLog;
use common::*;
use mysql_async::prelude::Queryable;
use serde_json::Value;

/// Runs SQL statements on the deployment's database, in order.
async fn sql(d: &Deployment, statements: &[&str]) {
    let mut conn = database(d).await;
    for s in statements {
        conn.query_drop(*s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    conn.disconnect().await.unwrap();
}

/// Waits until a record keyed `key` is in `topic`, or fails after `within` with `log`.
async fn wait_for_key(
    d: &Deployment,
    topic: &str,
    key: &str,
    within: Duration,
    log: &dyn Fn() -> String,
) {
    let deadline = Instant::now() + within;
    loop {
        let records = read_all(d, topic, Duration::from_secs(1)).await;
        if records
            .iter()
            .any(|r| r.record.key.as_deref() == Some(key.as_bytes()))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no record keyed {key} in {topic} within {within:?}:\n{}",
            tail_of(&log())
        );
    }
}

/// Waits until both captures of the comparison wrote a change of order `key`.
async fn wait_for_both(d: &Deployment, connect: &DebeziumWorker, key: &str, within: Duration) {
    let cdc_log = || d.log("cdc");
    let connect_log = || connect.log();
    let captures: [(&str, &dyn Fn() -> String); 2] =
        [("brewline", &cdc_log), ("debezium", &connect_log)];
    for (prefix, log) in captures {
        let topic = format!("{prefix}.{}.orders", d.prefix);
        wait_for_key(d, &topic, key, within, log).await;
    }
}

/// Orders placed by the tills, an eligible order cancelled (its lines and then itself
/// deleted: Debezium's deletes and tombstones), an order updated, and a column added.
async fn changes_of_every_kind(d: &Deployment, seed: &str, column: &str) {
    d.run(&[
        "simulate",
        "--orders",
        "200",
        "--rate",
        "200",
        "--seed",
        seed,
        "--eligible-share",
        "0.25",
    ]);
    let cancelled = format!("cancelled-{seed}");
    let alter = format!("ALTER TABLE orders ADD COLUMN {column} VARCHAR(16) NULL");
    let insert = format!(
        "INSERT INTO orders (id, timestamp, customer_id, store_id, payment_method_id, num_products)
         VALUES ('{cancelled}', NOW(3), (SELECT MIN(id) FROM customers WHERE tier = 'diamond'), 1, 9, 2)"
    );
    let line =
        format!("INSERT INTO order_details VALUES ('{cancelled}', 'CF01', 1, 0, 30000, FALSE)");
    let delete_lines = format!("DELETE FROM order_details WHERE order_id = '{cancelled}'");
    let delete = format!("DELETE FROM orders WHERE id = '{cancelled}'");
    let update =
        format!("UPDATE orders SET status = 'refunded', {column} = 'app' ORDER BY id LIMIT 3");
    sql(
        d,
        &[&insert, &line, &delete_lines, &delete, &alter, &update],
    )
    .await;
}

/// The recommender reads what Debezium writes as it is: first with JsonConverter's schemas on,
/// then, after Connect is restarted with them off, without; through deletes, tombstones and
/// schema changes. Every eligible order gets exactly one suggestion content (by SQL on the
/// database), and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka Connect, the Kafka cluster, Redis and MariaDB: run scripts/test"]
async fn the_recommender_reads_debeziums_own_output_with_and_without_schemas() {
    let d = Deployment::with_cdc("dbz", (8, 9));
    d.set_up();
    // Orders already there: Debezium's snapshot brings them (op r).
    d.run(&[
        "simulate",
        "--orders",
        "300",
        "--seed",
        "51",
        "--eligible-share",
        "0.25",
    ]);
    let connect_dir = d.dir.path().join("connect");
    let mut connect = DebeziumWorker::start(&d, &connect_dir, "mysql", true);
    let mut recommend = d.start("recommend", &["recommend"]);
    changes_of_every_kind(&d, "52", "channel").await;
    let eligible = eligible_by_sql(&d).await;
    let found = suggestions_for(&d, &eligible, Duration::from_secs(180)).await;
    assert!(
        found.keys().cloned().collect::<BTreeSet<_>>() == eligible,
        "with schemas: {} of {} eligible orders suggested\nconnect:\n{}\nrecommend:\n{}",
        found.len(),
        eligible.len(),
        tail_of(&connect.log()),
        tail_of(&d.log("recommend"))
    );

    // Connect stopped as an operator stops it and started again with schemas off: it goes on
    // from its stored offsets, into the same topics.
    // The JVM ends with 143 after SIGTERM: its log says whether it stopped cleanly.
    terminate(&mut connect.process);
    assert!(
        connect.log().contains("Kafka Connect stopped"),
        "{}",
        tail_of(&connect.log())
    );
    let connect = DebeziumWorker::start(&d, &connect_dir, "mysql", false);
    changes_of_every_kind(&d, "53", "note").await;
    let eligible = eligible_by_sql(&d).await;
    assert!(eligible.len() > 100, "{} eligible orders", eligible.len());
    let found = suggestions_for(&d, &eligible, Duration::from_secs(180)).await;
    assert_one_suggestion_each(&found, &eligible, || {
        format!(
            "connect:\n{}\nrecommend:\n{}",
            tail_of(&connect.log()),
            tail_of(&d.log("recommend"))
        )
    });
    assert!(!found.contains_key("cancelled-52") && !found.contains_key("cancelled-53"));

    // What Debezium wrote: snapshot reads, both shapes, deletes with their tombstones.
    let records = read_all(&d, &d.topic("orders"), Duration::from_secs(2)).await;
    let values: Vec<Value> = records
        .iter()
        .filter_map(|r| serde_json::from_slice(r.record.value.as_ref()?).ok())
        .collect();
    assert!(values.iter().any(|v| v.get("schema").is_some()));
    assert!(values.iter().any(|v| v.get("schema").is_none()));
    let op = |v: &Value| {
        v.get("payload").unwrap_or(v)["op"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let ops: BTreeSet<String> = values.iter().map(op).collect();
    assert_eq!(ops, BTreeSet::from(["r", "c", "u", "d"].map(String::from)));
    assert!(
        records.iter().any(|r| r.record.value.is_none()),
        "tombstones"
    );
    let dead = read_all(&d, &d.topic("dlq"), Duration::from_secs(2)).await;
    assert!(dead.is_empty(), "dead letters: {dead:?}");
    assert!(
        terminate(&mut recommend).success(),
        "{}",
        d.log("recommend")
    );
}

/// The events of a topic per key, in the order they were written (`None`: a tombstone).
async fn events_by_key(d: &Deployment, topic: &str) -> BTreeMap<String, Vec<Option<Value>>> {
    let mut out: BTreeMap<String, Vec<Option<Value>>> = BTreeMap::new();
    for r in read_all(d, topic, Duration::from_secs(2)).await {
        let key = String::from_utf8(r.record.key.clone().unwrap()).unwrap();
        let value = r
            .record
            .value
            .as_ref()
            .map(|v| serde_json::from_slice(v).unwrap());
        out.entry(key).or_default().push(value);
    }
    out
}

/// What legitimately differs between brewline's and Debezium's event of one row change
/// (README, "brewline cdc and Debezium"), as JSON pointers into the record's value: the
/// topic prefix in the schemas' names and `source.name`, the capture's version, and when
/// each capture handled the change (`ts_*` of the envelope).
const DIFFERS_BY_DESIGN: [&str; 7] = [
    "/schema/name",
    "/schema/fields/0/name",
    "/schema/fields/1/name",
    "/payload/source/version",
    "/payload/source/name",
    "/payload/ts_ms",
    "/payload/ts_us",
];

/// And of a snapshot read, when each capture read the row and the binlog position its
/// snapshot was taken at (each took its own, a moment apart).
const DIFFERS_IN_SNAPSHOTS: [&str; 5] = [
    "/payload/source/ts_ms",
    "/payload/source/ts_us",
    "/payload/source/ts_ns",
    "/payload/source/file",
    "/payload/source/pos",
];

/// The JSON pointers at which two values differ.
fn differing_paths(a: &Value, b: &Value, at: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (u, v) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                differing_paths(u, v, format!("{at}/{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                differing_paths(u, v, format!("{at}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!("{at}: brewline {a} / Debezium {b}")),
        _ => {}
    }
}

/// Where two events of the same key differ beyond what differs by design, if they do.
fn difference(brewline: &Option<Value>, debezium: &Option<Value>) -> Option<String> {
    let (mut b, mut z) = match (brewline, debezium) {
        (None, None) => return None,
        (Some(b), Some(z)) => (b.clone(), z.clone()),
        _ => return Some(format!("brewline {brewline:?}, Debezium {debezium:?}")),
    };
    // The envelope ts_ns is Debezium's nanoseconds of when it handled the change: brewline
    // writes it too, from a clock of its own.
    let mut ignored: Vec<&str> = DIFFERS_BY_DESIGN.to_vec();
    ignored.push("/payload/ts_ns");
    if z["payload"]["op"] == "r" {
        ignored.extend(DIFFERS_IN_SNAPSHOTS);
    }
    for pointer in ignored {
        for v in [&mut b, &mut z] {
            if let Some(x) = v.pointer_mut(pointer) {
                *x = Value::Null;
            }
        }
    }
    let mut out = Vec::new();
    differing_paths(&b, &z, String::new(), &mut out);
    (!out.is_empty()).then(|| out.join("; "))
}

/// `brewline cdc` and Debezium capture the same MariaDB workload into different topic
/// prefixes: inserts (multi-row transactions, as the tills write them), updates, deletes, an
/// `ALTER TABLE ... ADD COLUMN` and values of DECIMAL, DATETIME (3 and 6 digits), TIMESTAMP,
/// TIME, BOOLEAN and NULL.
/// For every row change: the same key, `op`, `before`, `after` (values typed as Debezium
/// types them) and the same binlog coordinates, in the same order per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka Connect, the Kafka cluster, Redis and MariaDB: run scripts/test"]
async fn brewline_cdc_writes_what_debezium_writes_event_for_event() {
    let d = Deployment::with_cdc("same", (10, 11));
    d.set_up();
    let db = d.prefix.clone();
    // Columns of every type the issue names, added before capture starts so that the
    // snapshot reads them too.
    sql(
        &d,
        &[
            "ALTER TABLE orders ADD COLUMN total DECIMAL(12,2) NULL, ADD COLUMN paid_at TIMESTAMP(3) NULL, \
             ADD COLUMN delivered DATETIME NULL, ADD COLUMN gift BOOLEAN NULL, \
             ADD COLUMN shipped DATETIME(6) NULL, ADD COLUMN prep TIME(3) NULL",
        ],
    )
    .await;
    d.run(&["simulate", "--orders", "40", "--seed", "61"]);
    sql(&d, &["UPDATE orders SET total = 12.5, paid_at = '2026-11-30 10:00:00.125', delivered = '2026-11-30 11:00:00', gift = TRUE, \
               shipped = '2026-11-30 12:00:00.123456', prep = '00:04:30.250' ORDER BY id LIMIT 5"]).await;

    let log = KafkaLog::new(d.kafka());
    for prefix in ["brewline", "debezium"] {
        for table in ["orders", "order_details"] {
            log.create_topic(&format!("{prefix}.{db}.{table}"), 3)
                .await
                .unwrap();
        }
    }
    // The capture's topic prefix, as an operator sets it.
    let mut cdc = d.start_with(
        "cdc",
        &["cdc", "--schemas", "on"],
        &[("BREWLINE_CAPTURE__TOPIC_PREFIX", "brewline")],
    );
    let connect = DebeziumWorker::start(&d, &d.dir.path().join("connect"), "debezium", true);

    // Both snapshots done before anything changes: each then streams from where it read.
    let snapshot_end = Duration::from_secs(120);
    let first_order: String = {
        let mut conn = database(&d).await;
        let id: Option<String> = conn
            .query_first("SELECT MAX(id) FROM orders")
            .await
            .unwrap();
        conn.disconnect().await.unwrap();
        id.unwrap()
    };
    wait_for_both(&d, &connect, &first_order, snapshot_end).await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The workload.
    d.run(&["simulate", "--orders", "60", "--seed", "62"]);
    sql(
        &d,
        &[
            "UPDATE orders SET total = 99.99, paid_at = '2026-12-01 08:30:00.5', delivered = NOW(), gift = FALSE, \
             shipped = NOW(6), prep = '-01:00:00.5' WHERE total IS NULL ORDER BY id LIMIT 10",
            "UPDATE orders SET total = NULL, gift = NULL WHERE gift = TRUE ORDER BY id LIMIT 2",
            "UPDATE order_details SET quantity = quantity + 1, subtotal = subtotal * 2 ORDER BY order_id LIMIT 4",
            "START TRANSACTION",
            "INSERT INTO orders (id, timestamp, customer_id, store_id, payment_method_id, num_products, total, gift)
             VALUES ('tx-1', '2026-12-01 09:00:00.250', NULL, 2, 9, 2, 0.01, TRUE)",
            "INSERT INTO order_details VALUES ('tx-1', 'CF01', 1, 10, 27000, FALSE), ('tx-1', 'T01', 2, 0, 40000, TRUE)",
            "UPDATE orders SET status = 'paid' WHERE id = 'tx-1'",
            "COMMIT",
            "DELETE FROM order_details WHERE order_id = 'tx-1' AND product_id = 'T01'",
            "ALTER TABLE orders ADD COLUMN channel VARCHAR(16) NULL DEFAULT 'till'",
            "UPDATE orders SET channel = 'app' WHERE id = 'tx-1'",
            "DELETE FROM order_details WHERE order_id = (SELECT MIN(id) FROM orders)",
            "DELETE FROM orders WHERE id = (SELECT MIN(id) FROM (SELECT id FROM orders) o)",
        ],
    )
    .await;
    d.run(&["simulate", "--orders", "20", "--seed", "63"]);
    sql(
        &d,
        &["INSERT INTO orders (id, timestamp, customer_id, store_id, payment_method_id, num_products)
           VALUES ('zzzz-end', NOW(3), 1, 1, 1, 1)"],
    )
    .await;
    let streamed = Duration::from_secs(120);
    wait_for_both(&d, &connect, "zzzz-end", streamed).await;

    let mut differences = Vec::new();
    let mut compared = 0;
    for table in ["orders", "order_details"] {
        let ours = events_by_key(&d, &format!("brewline.{db}.{table}")).await;
        let theirs = events_by_key(&d, &format!("debezium.{db}.{table}")).await;
        let keys: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
        for key in keys {
            let (o, t) = (
                ours.get(key).cloned().unwrap_or_default(),
                theirs.get(key).cloned().unwrap_or_default(),
            );
            if o.len() != t.len() {
                differences.push(format!(
                    "{table} {key}: brewline {} events, Debezium {}",
                    o.len(),
                    t.len()
                ));
                continue;
            }
            for (i, (a, b)) in o.iter().zip(&t).enumerate() {
                compared += 1;
                if let Some(diff) = difference(a, b) {
                    differences.push(format!("{table} {key} #{i}: {diff}"));
                }
            }
        }
    }
    assert!(compared > 250, "{compared} events compared");
    assert!(
        differences.is_empty(),
        "{} differences of {compared} events, e.g.:\n{}",
        differences.len(),
        differences[..differences.len().min(20)].join("\n")
    );
    assert!(terminate(&mut cdc).success(), "{}", d.log("cdc"));
    drop(connect);
}
