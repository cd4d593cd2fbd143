//! The batch layer on the embedded engines: orders captured into the embedded log, then batch
//! runs into a lake folder — idempotent landing, current state after deletes, marts that
//! reconcile with the source to the unit, and a failing gate that publishes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use brewline_batch::{bronze, run, Lake, Sources};
use brewline_core::debezium::TableSchema;
use brewline_core::generator::Tills;
use brewline_core::order::NewOrder;
use brewline_core::ReferenceData;
use brewline_embedded::DataDir;
use brewline_ports::{Capturable, EventLog, Record, SourceDb};
use brewline_speed::capture::{Capture, CaptureConfig};
use brewline_speed::stats::Stats;
use brewline_speed::StopWhen;
use deltalake::arrow::array::{Array, Int64Array, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use tokio::sync::watch;

const ORDERS: &str = "mysql.coffee_shop.orders";
const LINES: &str = "mysql.coffee_shop.order_details";

fn reference() -> ReferenceData {
    ReferenceData::bundled().unwrap()
}

async fn prepared(root: &std::path::Path) -> DataDir {
    let dir = DataDir::open(root, Duration::from_secs(90)).unwrap();
    dir.source.seed_reference(&reference()).await.unwrap();
    for t in [ORDERS, LINES] {
        dir.log.create_topic(t, 3).await.unwrap();
    }
    dir
}

async fn write_and_capture(dir: &DataDir, orders: &[NewOrder]) {
    dir.source.insert_orders(orders).await.unwrap();
    let capture = Capture::new(
        CaptureConfig {
            topic_prefix: "mysql".into(),
            with_schema: false,
            checkpoint: "capture".into(),
            batch: 500,
            tables: vec![
                (TableSchema::orders("mysql", "coffee_shop"), "id".into()),
                (
                    TableSchema::order_details("mysql", "coffee_shop"),
                    "order_id".into(),
                ),
            ],
        },
        Arc::new(Stats::default()),
    );
    let position = brewline_ports::CheckpointStore::load(&dir.log, "capture")
        .await
        .unwrap();
    let mut feed = dir.source.follow(position).await.unwrap();
    let producer = dir.log.producer().unwrap();
    let (_a, drained) = watch::channel(true);
    let (_b, shutdown) = watch::channel(false);
    capture
        .run(
            feed.as_mut(),
            producer.as_ref(),
            &dir.log,
            StopWhen { drained, shutdown },
        )
        .await
        .unwrap();
}

/// (order_date → revenue) of a mart.
async fn daily_revenue(lake: &Lake) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for b in lake.read("mart/revenue_daily").await.unwrap() {
        // Strings may come back as views: cast to plain UTF-8.
        let dates = cast(b.column_by_name("order_date").unwrap(), &DataType::Utf8).unwrap();
        let dates = dates.as_any().downcast_ref::<StringArray>().unwrap();
        let revenue = cast(b.column_by_name("revenue").unwrap(), &DataType::Int64).unwrap();
        let revenue = revenue.as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            out.insert(dates.value(i).to_string(), revenue.value(i));
        }
    }
    out
}

fn rows(batches: &[deltalake::arrow::array::RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_land_once_reconcile_to_the_unit_and_a_failed_gate_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = prepared(tmp.path()).await;
    let lake = Lake::at(tmp.path().join("lake").to_string_lossy().to_string());
    let all: Vec<NewOrder> = Tills::new(&reference(), 3)
        .unwrap()
        .orders(0, 600)
        .collect();
    write_and_capture(&dir, &all[..400]).await;
    let r = reference();
    let sources = Sources {
        log: &dir.log,
        orders_topic: ORDERS,
        order_details_topic: LINES,
        reference: &r,
    };

    let first = run(&sources, &lake).await.unwrap();
    assert!(first.passed(), "{}", first.summary());
    let lines: usize = all[..400].iter().map(|o| o.lines.len()).sum();
    assert_eq!(rows(&lake.read(bronze::ORDERS).await.unwrap()), 400);
    assert_eq!(rows(&lake.read(bronze::ORDER_LINES).await.unwrap()), lines);
    assert_eq!(rows(&lake.read("silver/orders").await.unwrap()), 400);
    assert_eq!(
        rows(&lake.read("gold/fact_order_lines").await.unwrap()),
        lines
    );
    // Gold revenue per day equals the sum of subtotals in the source for that day.
    let source_revenue: i64 = all[..400]
        .iter()
        .flat_map(|o| &o.lines)
        .map(|l| l.subtotal)
        .sum();
    let by_day = daily_revenue(&lake).await;
    assert_eq!(by_day.values().sum::<i64>(), source_revenue, "{by_day:?}");
    assert!(!lake.read("mart/product_affinity").await.unwrap().is_empty());

    // Run again with nothing new: nothing landed twice, marts the same.
    let again = run(&sources, &lake).await.unwrap();
    assert!(again.passed(), "{}", again.summary());
    assert_eq!(rows(&lake.read(bronze::ORDERS).await.unwrap()), 400);
    assert_eq!(rows(&lake.read(bronze::ORDER_LINES).await.unwrap()), lines);
    assert_eq!(daily_revenue(&lake).await, by_day);

    // New orders, and one order deleted with its lines: silver holds the current state.
    write_and_capture(&dir, &all[400..]).await;
    let gone = &all[0];
    let producer = dir.log.producer().unwrap();
    let line_delete = |l: &brewline_core::order::NewLine| {
        format!(
            r#"{{"op":"d","before":{{"order_id":"{}","product_id":"{}","quantity":{},"discount_percent":0,"subtotal":{},"is_suggestion":false}},"after":null,"source":{{"ts_ms":1}},"ts_ms":1}}"#,
            gone.id, l.product_id, l.quantity, l.subtotal
        )
    };
    let deletes: Vec<Record> = gone
        .lines
        .iter()
        .map(|l| Record::keyed(gone.id.clone(), Some(line_delete(l).into_bytes())))
        .collect();
    producer.send(LINES, deletes).await.unwrap();
    let order_delete = format!(
        r#"{{"op":"d","before":{{"id":"{}","timestamp":1,"customer_id":null,"store_id":{},"payment_method_id":{},"num_products":{}}},"after":null,"source":{{"ts_ms":1}},"ts_ms":1}}"#,
        gone.id,
        gone.store_id,
        gone.payment_method_id,
        gone.lines.len()
    );
    producer
        .send(
            ORDERS,
            vec![
                Record::keyed(gone.id.clone(), Some(order_delete.into_bytes())),
                Record::keyed(gone.id.clone(), None),
            ],
        )
        .await
        .unwrap();
    let third = run(&sources, &lake).await.unwrap();
    assert!(third.passed(), "{}", third.summary());
    assert_eq!(rows(&lake.read("silver/orders").await.unwrap()), 599);
    let revenue: i64 = all[1..]
        .iter()
        .flat_map(|o| &o.lines)
        .map(|l| l.subtotal)
        .sum();
    assert_eq!(daily_revenue(&lake).await.values().sum::<i64>(), revenue);

    // A line with a negative subtotal: the silver gate fails, nothing of silver or gold is
    // published, the lake keeps the last good run.
    let silver_version = lake.version("silver/orders").await.unwrap();
    let bad = format!(
        r#"{{"op":"c","before":null,"after":{{"order_id":"{}","product_id":"CF01","quantity":1,"discount_percent":0,"subtotal":-5,"is_suggestion":false}},"source":{{"ts_ms":1}},"ts_ms":1}}"#,
        all[1].id
    );
    producer
        .send(
            LINES,
            vec![Record::keyed(all[1].id.clone(), Some(bad.into_bytes()))],
        )
        .await
        .unwrap();
    let failed = run(&sources, &lake).await.unwrap();
    assert_eq!(
        failed.failed_layer.as_deref(),
        Some("silver"),
        "{}",
        failed.summary()
    );
    assert!(failed.summary().contains("FAILED"), "{}", failed.summary());
    assert!(failed
        .gates
        .iter()
        .any(|g| !g.passed() && g.name.contains("subtotal")));
    assert_eq!(lake.version("silver/orders").await.unwrap(), silver_version);
    assert_eq!(daily_revenue(&lake).await.values().sum::<i64>(), revenue);
    let report = serde_json::to_value(&failed).unwrap();
    assert_eq!(report["failed_layer"], "silver");
}
