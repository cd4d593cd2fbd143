//! The batch layer on the embedded engines: orders captured into the embedded log, then batch
//! runs into a lake folder — idempotent landing, current state after deletes, marts that
//! reconcile with the source to the unit, and a failing gate that publishes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use brewline_batch::serving::BatchView;
use brewline_batch::{
    bronze, run, run_built_layers, run_layers, Compute, Lake, Layer, Mode, Sources,
};
use brewline_core::debezium::TableSchema;
use brewline_core::generator::Tills;
use brewline_core::order::NewOrder;
use brewline_core::ReferenceData;
use brewline_embedded::DataDir;
use brewline_ports::{Capturable, EventLog, Record, SourceDb};
use brewline_speed::capture::{Capture, CaptureSettings, Output};
use brewline_speed::stats::Stats;
use brewline_speed::StopWhen;
use deltalake::arrow::array::{Array, Int64Array, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use tokio::sync::watch;

const ORDERS: &str = "mysql.coffee_shop.orders";
const LINES: &str = "mysql.coffee_shop.order_details";
const SUGGESTIONS: &str = "order_suggestions";

fn reference() -> ReferenceData {
    ReferenceData::bundled().unwrap()
}

/// A temporary folder with a prepared data dir and the lake in its `lake/`.
async fn fresh_lake() -> (tempfile::TempDir, DataDir, Lake) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = prepared(tmp.path()).await;
    let lake = Lake::at(tmp.path().join("lake").to_string_lossy().to_string());
    (tmp, dir, lake)
}

async fn prepared(root: &std::path::Path) -> DataDir {
    let dir = DataDir::open(root, Duration::from_secs(90)).unwrap();
    dir.source.seed_reference(&reference()).await.unwrap();
    for t in [ORDERS, LINES, SUGGESTIONS] {
        dir.log.create_topic(t, 3).await.unwrap();
    }
    dir
}

async fn write_and_capture(dir: &DataDir, orders: &[NewOrder]) {
    dir.source.insert_orders(orders).await.unwrap();
    let capture = Capture::new(
        CaptureSettings {
            topic_prefix: "mysql".into(),
            with_schema: false,
            connector: "mysql".into(),
            checkpoint: "capture".into(),
            batch: 500,
            tables: vec![
                (TableSchema::orders("mysql", "coffee_shop"), "id".into()),
                (
                    TableSchema::order_details("mysql", "coffee_shop"),
                    "order_id".into(),
                ),
            ],
            dead_letter_topic: "brewline.dlq".into(),
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
            Output::Sent(producer.as_ref()),
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

/// The rows of `sql` over lake `tables` (each registered under the last part of its name),
/// every value as text ("" for null).
async fn query(lake: &Lake, tables: &[&str], sql: &str) -> Vec<Vec<String>> {
    use deltalake::arrow::util::display::array_value_to_string;
    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    for t in tables {
        let name = t.rsplit('/').next().unwrap();
        assert!(
            lake.register(&ctx, t, name).await.unwrap().is_some(),
            "{t} exists"
        );
    }
    let mut out = Vec::new();
    for b in ctx.sql(sql).await.unwrap().collect().await.unwrap() {
        for i in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| {
                        if c.is_null(i) {
                            String::new()
                        } else {
                            array_value_to_string(c, i).unwrap()
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

/// The sources of the embedded engines of `dir`.
fn sources(dir: &DataDir) -> Sources<'_> {
    Sources {
        log: &dir.log,
        orders_topic: ORDERS,
        order_details_topic: LINES,
        suggestions_topic: SUGGESTIONS,
        source: &dir.source,
        accept_lost_events: false,
    }
}

async fn run_with(dir: &DataDir, lake: &Lake) -> brewline_batch::RunReport {
    let sources = sources(dir);
    let report = run(&sources, lake).await.unwrap();
    assert!(report.passed(), "{}", report.summary());
    report
}

/// A product's price changes and a store opens between two runs: the product gets a second
/// version (the first ends where it starts), the store a first; surrogate keys keep their
/// meaning across runs; each fact line carries the product version valid when its order was
/// placed, and each order its store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scd2_versions_products_and_stores_and_facts_join_the_version_of_their_time() {
    let (_tmp, dir, lake) = fresh_lake().await;
    let r = reference();
    let price = r
        .products
        .iter()
        .find(|p| p.id == "CF01")
        .unwrap()
        .unit_price;
    // Every order has CF01 as its first line.
    let with_cf01 = |orders: Vec<NewOrder>| -> Vec<NewOrder> {
        orders
            .into_iter()
            .map(|mut o| {
                o.lines.retain(|l| l.product_id != "CF01");
                o.lines.insert(
                    0,
                    brewline_core::order::NewLine {
                        product_id: "CF01".into(),
                        quantity: 1,
                        unit_price: price,
                        subtotal: price,
                    },
                );
                o.lines.truncate(3);
                o
            })
            .collect()
    };
    let tills = Tills::new(&r, 5).unwrap();
    let before = with_cf01(tills.orders(0, 50).collect());
    write_and_capture(&dir, &before).await;
    run_with(&dir, &lake).await;
    let keys_first = query(
        &lake,
        &["gold/dim_products"],
        "SELECT product_id, product_key FROM dim_products ORDER BY product_key",
    )
    .await;
    assert_eq!(keys_first.len(), r.products.len());

    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut changed = r.clone();
    changed
        .products
        .iter_mut()
        .find(|p| p.id == "CF01")
        .unwrap()
        .unit_price += 1000;
    changed.stores.push(brewline_core::reference::Store {
        id: 5000,
        name: "Kofi Riverside\r".into(),
        address: "1 River Road".into(),
        district: "District 7".into(),
        city: "Ho Chi Minh".into(),
    });
    dir.source.seed_reference(&changed).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut after = with_cf01(tills.orders(50, 50).collect());
    for o in after.iter_mut().take(10) {
        o.store_id = 5000;
    }
    write_and_capture(&dir, &after).await;
    run_with(&dir, &lake).await;
    run_with(&dir, &lake).await; // nothing new: the same dimensions

    let versions = query(
        &lake,
        &["gold/dim_products"],
        "SELECT version, unit_price, is_current, CAST(end_ms IS NULL AS VARCHAR), \
         CAST(end_date = LEAD(start_date) OVER (ORDER BY version) AS VARCHAR) \
         FROM dim_products WHERE product_id = 'CF01' ORDER BY version",
    )
    .await;
    assert_eq!(
        versions,
        vec![
            vec![
                "1".to_string(),
                price.to_string(),
                "false".into(),
                "false".into(),
                "true".into()
            ],
            vec![
                "2".to_string(),
                (price + 1000).to_string(),
                "true".into(),
                "true".into(),
                "".into()
            ],
        ]
    );
    let keys_now = query(
        &lake,
        &["gold/dim_products"],
        "SELECT product_id, product_key FROM dim_products WHERE version = 1 ORDER BY product_key",
    )
    .await;
    assert_eq!(keys_now, keys_first, "surrogate keys keep their meaning");
    assert_eq!(
        query(
            &lake,
            &["gold/dim_products"],
            "SELECT COUNT(*), COUNT(DISTINCT product_key), MAX(product_key) FROM dim_products"
        )
        .await,
        vec![vec![
            (r.products.len() + 1).to_string(),
            (r.products.len() + 1).to_string(),
            (r.products.len() + 1).to_string()
        ]]
    );
    assert_eq!(
        query(
            &lake,
            &["gold/dim_stores"],
            "SELECT name, version, is_current FROM dim_stores WHERE store_id = 5000"
        )
        .await,
        vec![vec![
            "Kofi Riverside".to_string(),
            "1".into(),
            "true".into()
        ]],
        "the new store is in, cleaned"
    );
    // CF01 lines: the old price before the change, the new one after.
    let by_price = query(
        &lake,
        &["gold/fact_order_lines", "gold/dim_products"],
        "SELECT d.version, f.list_price, COUNT(*) FROM fact_order_lines f \
         JOIN dim_products d ON d.product_key = f.product_key \
         WHERE f.product_id = 'CF01' GROUP BY d.version, f.list_price ORDER BY d.version",
    )
    .await;
    assert_eq!(
        by_price,
        vec![
            vec!["1".to_string(), price.to_string(), "50".into()],
            vec!["2".to_string(), (price + 1000).to_string(), "50".into()],
        ]
    );
    assert_eq!(
        query(
            &lake,
            &["gold/fact_orders", "gold/dim_stores"],
            "SELECT COUNT(*) FROM fact_orders f JOIN dim_stores s ON s.store_key = f.store_key \
             WHERE s.store_id = 5000"
        )
        .await,
        vec![vec!["10".to_string()]]
    );
    let cities = query(
        &lake,
        &["mart/revenue_city_daily"],
        "SELECT SUM(orders) FROM revenue_city_daily",
    )
    .await;
    assert_eq!(cities, vec![vec!["100".to_string()]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_land_once_reconcile_to_the_unit_and_a_failed_gate_publishes_nothing() {
    let (tmp, dir, lake) = fresh_lake().await;
    let all: Vec<NewOrder> = Tills::new(&reference(), 3)
        .unwrap()
        .orders(0, 600)
        .collect();
    write_and_capture(&dir, &all[..400]).await;
    let sources = sources(&dir);

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

    // Suggestions: one made twice (a replay), one accepted (its line written back), of a
    // product neither order has.
    let free = reference()
        .products
        .iter()
        .map(|p| p.id.clone())
        .find(|p| {
            ![&all[5], &all[6]]
                .iter()
                .any(|o| o.lines.iter().any(|l| &l.product_id == p))
        })
        .unwrap();
    let suggestion = |o: &NewOrder| brewline_core::Suggestion {
        order_id: o.id.clone(),
        product_id: free.clone(),
        product_name: "Suggested".into(),
        quantity: 1,
        unit_price: 1000,
        discount_percent: 30,
        subtotal: 700,
        is_suggestion: true,
        customer_id: Some(o.customer_id),
        store_id: o.store_id,
        payment_method_id: o.payment_method_id,
        order_products: o.lines.iter().map(|l| l.product_id.clone()).collect(),
        strategy: "random".into(),
    };
    let records: Vec<Record> = [&all[5], &all[5], &all[6]]
        .iter()
        .map(|o| {
            Record::keyed(
                o.id.clone(),
                Some(serde_json::to_vec(&suggestion(o)).unwrap()),
            )
        })
        .collect();
    producer.send(SUGGESTIONS, records).await.unwrap();
    let accepted = format!(
        r#"{{"op":"c","before":null,"after":{{"order_id":"{}","product_id":"{free}","quantity":1,"discount_percent":30,"subtotal":700,"is_suggestion":true}},"source":{{"ts_ms":1}},"ts_ms":1}}"#,
        all[6].id
    );
    producer
        .send(
            LINES,
            vec![Record::keyed(
                all[6].id.clone(),
                Some(accepted.into_bytes()),
            )],
        )
        .await
        .unwrap();
    let fourth = run(&sources, &lake).await.unwrap();
    assert!(fourth.passed(), "{}", fourth.summary());
    assert_eq!(
        rows(&lake.read("bronze/order_suggestions").await.unwrap()),
        3
    );
    assert_eq!(rows(&lake.read("silver/suggestions").await.unwrap()), 2);
    let totals = query(
        &lake,
        &["mart/suggestions_daily"],
        "SELECT SUM(suggestions), SUM(accepted), SUM(accepted_revenue) FROM suggestions_daily",
    )
    .await;
    assert_eq!(
        totals,
        vec![vec!["2".to_string(), "1".into(), "700".into()]]
    );
    let revenue = revenue + 700;
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
    // The files staged for the refused version are gone: each silver table's folder holds
    // the files of its current version and of the versions before, none unnamed.
    for (table, _) in Layer::Silver.tables() {
        let folder = tmp.path().join("lake").join(table);
        assert_eq!(unnamed_files(&lake, table, &folder).await, 0, "{table}");
    }
    let report = serde_json::to_value(&failed).unwrap();
    assert_eq!(report["failed_layer"], "silver");
}

/// The serving layer's watermark is the bronze that gold was built from: silver built in one
/// run, more events landed by a second, gold alone in a third — the manifest names the bronze
/// silver read, and the speed layer starts at its offsets; a full run then moves it to all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_watermark_is_the_bronze_gold_was_built_from() {
    let (_tmp, dir, lake) = fresh_lake().await;
    let tills = Tills::new(&reference(), 5).unwrap();
    let first: Vec<NewOrder> = tills.orders(0, 200).collect();
    write_and_capture(&dir, &first).await;
    let s = sources(&dir);
    let passed = |r: brewline_batch::RunReport| assert!(r.passed(), "{}", r.summary());
    passed(
        run_layers(
            &s,
            &lake,
            &[Layer::Bronze, Layer::Silver],
            Mode::Incremental,
        )
        .await
        .unwrap(),
    );
    let read_by_silver = lake.version(bronze::ORDERS).await.unwrap().unwrap();
    let later: Vec<NewOrder> = tills.orders(200, 100).collect();
    write_and_capture(&dir, &later).await;
    passed(
        run_layers(&s, &lake, &[Layer::Bronze], Mode::Incremental)
            .await
            .unwrap(),
    );
    assert!(lake.version(bronze::ORDERS).await.unwrap().unwrap() > read_by_silver);
    passed(
        run_layers(&s, &lake, &[Layer::Gold], Mode::Incremental)
            .await
            .unwrap(),
    );

    let landed = |view: BatchView| async move {
        let offsets = view.landed(bronze::ORDERS, ORDERS, 3).await.unwrap();
        offsets.iter().sum::<i64>()
    };
    let view = BatchView::load(&lake).await.unwrap();
    let watermark = view.watermark.clone().unwrap();
    assert_eq!(watermark.versions[bronze::ORDERS], read_by_silver);
    assert_eq!(view.book.daily.values().map(|d| d.orders).sum::<i64>(), 200);
    assert!(
        first.iter().all(|o| view.held.may_hold(&o.id)),
        "every order held"
    );
    assert_eq!(
        landed(view).await,
        200,
        "the speed layer starts after the first 200"
    );

    run_with(&dir, &lake).await;
    let view = BatchView::load(&lake).await.unwrap();
    assert_eq!(view.book.daily.values().map(|d| d.orders).sum::<i64>(), 300);
    assert!(later.iter().all(|o| view.held.may_hold(&o.id)));
    assert_eq!(landed(view).await, 300);
}

/// Events deleted from the log (retention) after one run and before the next landed them: the
/// next runs fail at the bronze gates, naming the partitions and offsets lost and the way on,
/// and land nothing of those topics; accepted, a run lands from the earliest events left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_deleted_before_they_were_landed_fail_bronze_until_accepted() {
    let (_tmp, dir, lake) = fresh_lake().await;
    let tills = Tills::new(&reference(), 9).unwrap();
    write_and_capture(&dir, &tills.orders(0, 30).collect::<Vec<_>>()).await;
    run_with(&dir, &lake).await;
    // Two more captures (a batch of records each), then partition 0 of both CDC topics loses
    // all but its latest batch: an order's header and lines share their partition.
    write_and_capture(&dir, &tills.orders(30, 30).collect::<Vec<_>>()).await;
    write_and_capture(&dir, &tills.orders(60, 30).collect::<Vec<_>>()).await;
    for topic in [ORDERS, LINES] {
        dir.log.delete_before(topic, 0, i64::MAX).await.unwrap();
        assert!(dir.log.earliest(topic).await.unwrap()[0].1 > 0);
    }
    let landed = rows(&lake.read(bronze::ORDERS).await.unwrap());
    for _ in 0..2 {
        let report = run(&sources(&dir), &lake).await.unwrap();
        assert_eq!(
            report.failed_layer.as_deref(),
            Some("bronze"),
            "{}",
            report.summary()
        );
        let gaps: Vec<_> = report
            .gates
            .iter()
            .filter(|g| g.name.contains("deleted from the log"))
            .collect();
        assert_eq!(gaps.len(), 2, "{}", report.summary());
        for g in gaps {
            assert!(g.violations > 0, "{g:?}");
            assert!(g.name.contains("[0]: offsets"), "{g:?}");
            assert!(g.name.contains("--accept-lost-events"), "{g:?}");
        }
        assert_eq!(
            rows(&lake.read(bronze::ORDERS).await.unwrap()),
            landed,
            "nothing of the topic landed, run after run"
        );
    }
    let accepting = Sources {
        accept_lost_events: true,
        ..sources(&dir)
    };
    let report = run(&accepting, &lake).await.unwrap();
    assert!(report.passed(), "{}", report.summary());
    assert!(report
        .gates
        .iter()
        .any(|g| g.name.contains("accepted: landed from offset") && g.violations == 0));
    assert!(rows(&lake.read(bronze::ORDERS).await.unwrap()) > landed);
}

/// A run killed while it publishes (silver published, gold half overwritten, no manifest yet):
/// readers of the serving manifest still see the last whole run, table for table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_while_publishing_leaves_manifest_readers_on_the_last_whole_run() {
    let (_tmp, dir, lake) = fresh_lake().await;
    let tills = Tills::new(&reference(), 12).unwrap();
    write_and_capture(&dir, &tills.orders(0, 40).collect::<Vec<_>>()).await;
    run_with(&dir, &lake).await;
    let before = BatchView::load(&lake).await.unwrap();

    write_and_capture(&dir, &tills.orders(40, 40).collect::<Vec<_>>()).await;
    let s = sources(&dir);
    let partial = run_layers(
        &s,
        &lake,
        &[Layer::Bronze, Layer::Silver],
        Mode::Incremental,
    )
    .await
    .unwrap();
    assert!(partial.passed(), "{}", partial.summary());
    // …and the first gold tables of the run replaced before the kill.
    for table in ["gold/fact_orders", "mart/revenue_daily"] {
        let current = lake.read(table).await.unwrap();
        let empty = deltalake::arrow::array::RecordBatch::new_empty(current[0].schema());
        lake.write(
            table,
            vec![empty],
            deltalake::protocol::SaveMode::Overwrite,
            &BTreeMap::new(),
            serde_json::Map::new(),
        )
        .await
        .unwrap();
    }
    let after = BatchView::load(&lake).await.unwrap();
    assert_eq!(after.watermark, before.watermark, "the same run");
    assert_eq!(after.book.daily, before.book.daily, "the same figures");
    assert_eq!(
        after.book.daily.values().map(|d| d.orders).sum::<i64>(),
        40,
        "none of the killed run's orders"
    );

    run_with(&dir, &lake).await;
    let next = BatchView::load(&lake).await.unwrap();
    assert_eq!(next.book.daily.values().map(|d| d.orders).sum::<i64>(), 80);
}

/// The number of rows of `table` as of `version`, or the error reading it gives.
async fn rows_at(lake: &Lake, table: &str, version: i64) -> Result<usize, String> {
    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    lake.register_at(&ctx, table, "t", Some(version))
        .await
        .map_err(|e| e.to_string())?;
    let df = ctx
        .sql("SELECT * FROM t")
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows(&df.collect().await.map_err(|e| e.to_string())?))
}

/// Three runs leave bronze in small files and old versions of silver and gold behind: optimize
/// compacts them without changing a row; a vacuum with no retention deletes the files only old
/// versions read (an old mart version is unreadable after it) but keeps those of the versions
/// the serving manifest names, even where optimize replaced them (the batch view loads as
/// before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_and_vacuum_keep_every_row_and_the_served_versions() {
    use brewline_batch::{housekeeping, serving};
    let (tmp, dir, lake) = fresh_lake().await;
    let tills = Tills::new(&reference(), 9).unwrap();
    let mart = "mart/revenue_daily";
    let mut first_mart = None;
    for run in 0..3 {
        let orders: Vec<NewOrder> = tills.orders(run * 100, 100).collect();
        write_and_capture(&dir, &orders).await;
        run_with(&dir, &lake).await;
        first_mart.get_or_insert(lake.version(mart).await.unwrap().unwrap());
    }
    let revenue = daily_revenue(&lake).await;
    let served = serving::watermark(&lake).await.unwrap().unwrap().versions;
    let bronze_at = served[bronze::ORDERS];
    let bronze_rows = rows_at(&lake, bronze::ORDERS, bronze_at).await.unwrap();
    let orders_in_view = |view: BatchView| view.book.daily.values().map(|d| d.orders).sum::<i64>();
    assert_eq!(orders_in_view(BatchView::load(&lake).await.unwrap()), 300);

    let compacted = housekeeping::optimize(&lake).await.unwrap();
    let orders = compacted
        .iter()
        .find(|t| t.table == bronze::ORDERS)
        .unwrap();
    assert!(
        orders.files_removed >= 3 && orders.files_added >= 1,
        "{compacted:?}"
    );
    let now = lake.version(bronze::ORDERS).await.unwrap().unwrap();
    assert!(now > bronze_at, "optimize commits a new version");
    assert_eq!(
        rows_at(&lake, bronze::ORDERS, now).await.unwrap(),
        bronze_rows
    );
    assert_eq!(daily_revenue(&lake).await, revenue);

    // A file a run killed before its commit left behind: no version names it.
    let orphan = tmp
        .path()
        .join("lake/silver/orders/part-00000-killed-run-c000.snappy.parquet");
    std::fs::write(&orphan, b"PAR1").unwrap();
    let vacuumed = housekeeping::vacuum(&lake, Duration::ZERO).await.unwrap();
    assert!(!orphan.exists(), "a file no version names is deleted");
    assert!(
        vacuumed
            .iter()
            .any(|t| t.table == mart && t.files_removed > 0),
        "{vacuumed:?}"
    );
    let old = first_mart.unwrap();
    assert!(old < served[mart]);
    assert!(
        rows_at(&lake, mart, old).await.is_err(),
        "the files of an old version are gone"
    );
    assert_eq!(
        rows_at(&lake, bronze::ORDERS, bronze_at).await.unwrap(),
        bronze_rows,
        "the served version of bronze keeps the files optimize replaced"
    );
    assert_eq!(orders_in_view(BatchView::load(&lake).await.unwrap()), 300);
    assert_eq!(daily_revenue(&lake).await, revenue);
}

/// Parquet files in `folder` (the table's) that no version of the table names.
async fn unnamed_files(lake: &Lake, table: &str, folder: &std::path::Path) -> usize {
    let mut named = std::collections::HashSet::new();
    let latest = lake.version(table).await.unwrap().unwrap();
    for version in 0..=latest {
        let t = lake.open_at(table, Some(version)).await.unwrap();
        for uri in t.get_file_uris().unwrap() {
            named.insert(uri.rsplit('/').next().unwrap().to_string());
        }
    }
    std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".parquet") && !named.contains(name))
        .count()
}

/// A Debezium change event of `o`'s row (`op` "c", "u" or "d"), placed at `ts_ms`.
fn order_event(op: &str, o: &NewOrder, ts_ms: i64) -> Record {
    let row = format!(
        r#"{{"id":"{}","timestamp":{ts_ms},"customer_id":{},"store_id":{},"payment_method_id":{},"num_products":{}}}"#,
        o.id,
        o.customer_id,
        o.store_id,
        o.payment_method_id,
        o.lines.len()
    );
    change_event(&o.id, op, row)
}

/// A Debezium change event of a line of order `order_id`.
fn line_event(op: &str, order_id: &str, l: &brewline_core::order::NewLine) -> Record {
    let row = format!(
        r#"{{"order_id":"{order_id}","product_id":"{}","quantity":{},"discount_percent":0,"subtotal":{},"is_suggestion":false}}"#,
        l.product_id, l.quantity, l.subtotal
    );
    change_event(order_id, op, row)
}

fn change_event(key: &str, op: &str, row: String) -> Record {
    let (before, after) = if op == "d" {
        (row, "null".to_string())
    } else {
        ("null".to_string(), row)
    };
    let event = format!(
        r#"{{"op":"{op}","before":{before},"after":{after},"source":{{"ts_ms":1}},"ts_ms":1}}"#
    );
    Record::keyed(key.to_string(), Some(event.into_bytes()))
}

/// Sends `orders` as created, the i-th on day `first_day + i % days` (days after 2026-09-01).
async fn send_orders(dir: &DataDir, orders: &[NewOrder], first_day: i64, days: i64) {
    let producer = dir.log.producer().unwrap();
    let (mut heads, mut lines) = (Vec::new(), Vec::new());
    for (i, o) in orders.iter().enumerate() {
        let ts = DAY_ZERO_MS + (first_day + i as i64 % days) * 86_400_000 + 3_600_000;
        heads.push(order_event("c", o, ts));
        lines.extend(o.lines.iter().map(|l| line_event("c", &o.id, l)));
    }
    producer.send(ORDERS, heads).await.unwrap();
    producer.send(LINES, lines).await.unwrap();
}

/// 2026-09-01T00:00:00Z.
const DAY_ZERO_MS: i64 = 1_788_220_800_000;

/// Every row of every silver and gold table, as sorted text.
async fn every_built_row(lake: &Lake) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut out = BTreeMap::new();
    for layer in [Layer::Silver, Layer::Gold] {
        for (table, _) in layer.tables() {
            let name = table.rsplit('/').next().unwrap();
            let mut rows = query(lake, &[table], &format!("SELECT * FROM {name}")).await;
            rows.sort();
            out.insert(table.to_string(), rows);
        }
    }
    out
}

/// Six small runs, each computing only what its events touch — new orders over several days,
/// an old order updated (moved to another day after its day's marts were built, a line
/// changed), an old order deleted with its lines, new dimension versions (a price, a renamed
/// store), a suggestion accepted on an old order, then nothing — leave every silver, gold and
/// mart table exactly as a full rebuild from the same bronze makes it, row for row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_build_the_very_tables_a_full_rebuild_builds() {
    let (tmp, dir, lake) = fresh_lake().await;
    let r = reference();
    let all: Vec<NewOrder> = Tills::new(&r, 4).unwrap().orders(0, 200).collect();
    let sources = sources(&dir);
    let refresh = |report: &brewline_batch::RunReport, layer: &str| -> String {
        assert!(report.passed(), "{}", report.summary());
        report.refresh[layer].clone()
    };

    // 1: nothing recorded yet, so whole.
    send_orders(&dir, &all[..60], 0, 5).await;
    let first = run(&sources, &lake).await.unwrap();
    assert_eq!(
        refresh(&first, "silver"),
        "rebuilt whole: no earlier silver recorded"
    );
    assert_eq!(
        refresh(&first, "gold"),
        "rebuilt whole: no earlier gold recorded"
    );

    // 2: new orders on the same days and a new one: the files of the earlier orders stay.
    let files = |table: &'static str| {
        let lake = &lake;
        async move {
            let t = lake.open(table).await.unwrap();
            t.get_file_uris()
                .unwrap()
                .collect::<std::collections::BTreeSet<String>>()
        }
    };
    let (orders_before, facts_before) = (
        files("silver/orders").await,
        files("gold/fact_orders").await,
    );
    send_orders(&dir, &all[60..120], 2, 4).await;
    let second = run(&sources, &lake).await.unwrap();
    assert_eq!(refresh(&second, "silver"), "incremental: 60 orders touched");
    assert_eq!(
        refresh(&second, "gold"),
        "incremental: 60 orders touched, 4 days"
    );
    let orders_after = files("silver/orders").await;
    assert!(orders_after.is_superset(&orders_before) && orders_after.len() > orders_before.len());
    assert!(files("gold/fact_orders").await.is_superset(&facts_before));

    // 3: an old order moved three days on with a line changed; another deleted.
    let producer = dir.log.producer().unwrap();
    let (moved, gone) = (&all[3], &all[7]);
    let mut changed_line = moved.lines[0].clone();
    changed_line.quantity += 2;
    changed_line.subtotal += 2 * changed_line.unit_price;
    producer
        .send(
            ORDERS,
            vec![
                order_event("u", moved, DAY_ZERO_MS + 6 * 86_400_000 + 60_000),
                order_event("d", gone, DAY_ZERO_MS),
                Record::keyed(gone.id.clone(), None),
            ],
        )
        .await
        .unwrap();
    let mut lines = vec![line_event("u", &moved.id, &changed_line)];
    lines.extend(gone.lines.iter().map(|l| line_event("d", &gone.id, l)));
    producer.send(LINES, lines).await.unwrap();
    let third = run(&sources, &lake).await.unwrap();
    assert_eq!(refresh(&third, "silver"), "incremental: 2 orders touched");
    // The files holding the two orders were rewritten, the others kept.
    let orders_now = files("silver/orders").await;
    let rewritten = orders_after.difference(&orders_now).count();
    assert!(
        (1..=2).contains(&rewritten) && orders_now.len() == orders_after.len() - rewritten + 1,
        "{rewritten} rewritten: {orders_after:?} -> {orders_now:?}"
    );
    // Order 3 left day 3 for day 6; order 7 was on day 2.
    assert_eq!(
        refresh(&third, "gold"),
        "incremental: 2 orders touched, 3 days"
    );

    // 4: a product's price and a store's name change; new orders after that.
    let mut changed = r.clone();
    let product = all[0].lines[0].product_id.clone();
    changed
        .products
        .iter_mut()
        .find(|p| p.id == product)
        .unwrap()
        .unit_price += 1000;
    let store = all[1].store_id;
    changed
        .stores
        .iter_mut()
        .find(|s| s.id == store)
        .unwrap()
        .name = "Kofi Renamed".into();
    dir.source.seed_reference(&changed).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    send_orders(&dir, &all[120..200], 8, 3).await;
    let fourth = run(&sources, &lake).await.unwrap();
    assert_eq!(refresh(&fourth, "silver"), "incremental: 80 orders touched");
    // Gold also recomputes every earlier order of the product or the store, on their days.
    let day_of = |i: usize| -> usize {
        match i {
            3 => 6,
            0..60 => i % 5,
            60..120 => 2 + (i - 60) % 4,
            _ => 8 + (i - 120) % 3,
        }
    };
    let of_members: Vec<usize> = (0..120)
        .filter(|&i| i != 7)
        .filter(|&i| {
            all[i].store_id == store || all[i].lines.iter().any(|l| l.product_id == product)
        })
        .collect();
    let days: std::collections::BTreeSet<usize> =
        of_members.iter().map(|&i| day_of(i)).chain(8..11).collect();
    assert!(of_members.len() < 119, "some orders untouched");
    assert_eq!(
        refresh(&fourth, "gold"),
        format!(
            "incremental: {} orders touched, {} days",
            of_members.len() + 80,
            days.len()
        )
    );

    // 5: a suggestion made to an old order and accepted (its line written back).
    let old = &all[10];
    let free = r
        .products
        .iter()
        .map(|p| p.id.clone())
        .find(|p| !old.lines.iter().any(|l| &l.product_id == p))
        .unwrap();
    let suggestion = brewline_core::Suggestion {
        order_id: old.id.clone(),
        product_id: free.clone(),
        product_name: "Suggested".into(),
        quantity: 1,
        unit_price: 1000,
        discount_percent: 30,
        subtotal: 700,
        is_suggestion: true,
        customer_id: Some(old.customer_id),
        store_id: old.store_id,
        payment_method_id: old.payment_method_id,
        order_products: old.lines.iter().map(|l| l.product_id.clone()).collect(),
        strategy: "random".into(),
    };
    producer
        .send(
            SUGGESTIONS,
            vec![Record::keyed(
                old.id.clone(),
                Some(serde_json::to_vec(&suggestion).unwrap()),
            )],
        )
        .await
        .unwrap();
    let accepted = format!(
        r#"{{"op":"c","before":null,"after":{{"order_id":"{}","product_id":"{free}","quantity":1,"discount_percent":30,"subtotal":700,"is_suggestion":true}},"source":{{"ts_ms":1}},"ts_ms":1}}"#,
        old.id
    );
    producer
        .send(
            LINES,
            vec![Record::keyed(old.id.clone(), Some(accepted.into_bytes()))],
        )
        .await
        .unwrap();
    let fifth = run(&sources, &lake).await.unwrap();
    assert_eq!(refresh(&fifth, "silver"), "incremental: 1 orders touched");
    assert_eq!(
        refresh(&fifth, "gold"),
        "incremental: 1 orders touched, 1 days"
    );

    // 6: nothing new.
    let sixth = run(&sources, &lake).await.unwrap();
    assert_eq!(
        refresh(&sixth, "gold"),
        "incremental: 0 orders touched, 0 days"
    );

    let incremental = every_built_row(&lake).await;
    assert_eq!(incremental["silver/orders"].len(), 199);
    assert_eq!(
        incremental["silver/suggestions"].len(),
        1,
        "{:?}",
        incremental["silver/suggestions"]
    );
    let full = run_built_layers(&lake, &[Layer::Silver, Layer::Gold], Mode::Full)
        .await
        .unwrap();
    assert_eq!(refresh(&full, "silver"), "rebuilt whole: asked (--full)");
    let rebuilt = every_built_row(&lake).await;
    assert_eq!(incremental.len(), 29);
    for (table, rows) in &rebuilt {
        assert!(!rows.is_empty(), "{table} has rows");
        assert_eq!(
            &incremental[table], rows,
            "{table}: incremental and full differ"
        );
    }

    // The same rebuild with joins that may hold at most 60 rows of orders or days at once: the
    // facts and the baskets' pairs run in slices, and make the very same tables.
    let sliced_lake =
        Lake::at(tmp.path().join("lake").to_string_lossy().to_string()).with_compute(Compute {
            slice_rows: Some(60),
            ..Compute::default()
        });
    let sliced = run_built_layers(&sliced_lake, &[Layer::Silver, Layer::Gold], Mode::Full)
        .await
        .unwrap();
    let slices = |table: &str| {
        sliced
            .tables
            .iter()
            .find(|t| t.table == table)
            .map(|t| t.slices)
            .unwrap()
    };
    assert!(slices("gold/fact_orders") > 2, "{}", sliced.summary());
    assert!(slices("gold/fact_order_lines") > 2, "{}", sliced.summary());
    assert!(
        slices("mart/basket_pairs_daily") > 2,
        "{}",
        sliced.summary()
    );
    assert_eq!(slices("mart/revenue_daily"), 1);
    assert_eq!(slices("silver/orders"), 1);
    assert_eq!(
        every_built_row(&lake).await,
        rebuilt,
        "in slices and whole differ"
    );

    // A layer a run, as the Airflow DAG runs them: gold, built after a silver of its own run,
    // recomputes the orders whose silver rows changed since the last gold (here an old order
    // updated on another day, and new ones), and still matches a full rebuild.
    let mut again = all[30].clone();
    again.lines.truncate(1);
    producer
        .send(
            ORDERS,
            vec![order_event("u", &again, DAY_ZERO_MS + 12 * 86_400_000)],
        )
        .await
        .unwrap();
    let dropped: Vec<Record> = all[30].lines[1..]
        .iter()
        .map(|l| line_event("d", &again.id, l))
        .collect();
    producer.send(LINES, dropped).await.unwrap();
    let later: Vec<NewOrder> = Tills::new(&r, 9).unwrap().orders(0, 5).collect();
    send_orders(&dir, &later, 12, 1).await;
    let silver = run_layers(
        &sources,
        &lake,
        &[Layer::Bronze, Layer::Silver],
        Mode::Incremental,
    )
    .await
    .unwrap();
    assert_eq!(refresh(&silver, "silver"), "incremental: 6 orders touched");
    let gold = run_layers(&sources, &lake, &[Layer::Gold], Mode::Incremental)
        .await
        .unwrap();
    // The files silver rewrote hold other orders too: at least the 6, and their days.
    let how = refresh(&gold, "gold");
    assert!(how.starts_with("incremental: "), "{how}");
    let dag = every_built_row(&lake).await;
    let full = run_built_layers(&lake, &[Layer::Silver, Layer::Gold], Mode::Full)
        .await
        .unwrap();
    assert!(full.passed(), "{}", full.summary());
    let rebuilt = every_built_row(&lake).await;
    for (table, rows) in &rebuilt {
        assert_eq!(&dag[table], rows, "{table}: layer by layer and full differ");
    }
    assert_eq!(dag["silver/orders"].len(), 204);

    // An incremental run checks the gates by order on the orders it touched: a bad line of
    // an old order fails silver, and nothing is published.
    let mut bad = all[20].lines[0].clone();
    bad.quantity = 0;
    producer
        .send(LINES, vec![line_event("u", &all[20].id, &bad)])
        .await
        .unwrap();
    let versions = lake.version("silver/order_lines").await.unwrap();
    let failed = run(&sources, &lake).await.unwrap();
    assert_eq!(failed.failed_layer.as_deref(), Some("silver"));
    assert_eq!(failed.refresh["silver"], "incremental: 1 orders touched");
    let gate = failed
        .gates
        .iter()
        .find(|g| g.name == "order lines: quantity positive, subtotal not negative")
        .unwrap();
    assert_eq!(gate.violations, 1);
    assert_eq!(lake.version("silver/order_lines").await.unwrap(), versions);
}
