//! The whole speed layer from the database on: `simulate` writes orders into MariaDB,
//! `brewline cdc` captures its row binlog into Kafka (SIGKILLed and restarted in its snapshot
//! and mid-stream: no row read twice, no change event twice),
//! `brewline recommend` suggests, `brewline accept` writes accepted suggestions back, which
//! come through the binlog again and trigger nothing. Checked against SQL on the database.
//! Needs the servers `scripts/test` starts (`TEST_BREWLINE_*`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, Redis and MariaDB: run scripts/test"]
async fn cdc_feeds_the_recommender_through_kills_deletes_write_backs_and_a_schema_change() {
    let d = Deployment::with_cdc("cdc", (4, 5));
    d.set_up();
    // Orders already in the database when capture starts: the snapshot brings them.
    d.run(&[
        "simulate",
        "--orders",
        "400",
        "--seed",
        "21",
        "--eligible-share",
        "0.25",
    ]);

    let metrics = format!("127.0.0.1:{}", free_port());
    let cdc_args = ["cdc", "--metrics-addr", metrics.as_str()];
    // Capture killed in the middle of its snapshot (read two rows a transaction here, so that
    // it takes a while): it goes on after the last row it committed, in a snapshot of the
    // rest, and no row comes twice.
    let slowly = [
        ("BREWLINE_CAPTURE__BATCH", "2"),
        ("BREWLINE_CDC__SNAPSHOT_BATCH", "2"),
    ];
    let mut cdc = d.start_with("cdc", &cdc_args, &slowly);
    let mut recommend = d.start("recommend", &["recommend", "--instance-id", "r"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stored_position(&d)
        .await
        .is_some_and(|p| p.starts_with('{'))
    {
        assert!(
            Instant::now() < deadline,
            "no snapshot progress stored:\n{}",
            d.log("cdc")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cdc.kill();
    cdc = d.start("cdc", &cdc_args);
    // Then kills once the snapshot is done and its end stored (the binlog is followed from
    // the first part's position, passing over the changes the second part's reads hold).
    let deadline = Instant::now() + Duration::from_secs(60);
    let read_whole = |p: &str| !p.starts_with('{') || p.contains("\"done\":true");
    while !stored_position(&d).await.is_some_and(|p| read_whole(&p)) {
        assert!(
            Instant::now() < deadline,
            "no position stored:\n{}",
            d.log("cdc")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // More orders while capture is killed three times (SIGKILL: no chance to save anything).
    let tills = d.start(
        "tills",
        &[
            "simulate",
            "--orders",
            "1200",
            "--rate",
            "300",
            "--seed",
            "22",
            "--eligible-share",
            "0.25",
        ],
    );
    for started in 1..=3 {
        // Each kill once the capture is streaming again, in the middle of the tills' orders.
        let deadline = Instant::now() + Duration::from_secs(60);
        while d.log("cdc").matches("reading the binlog").count() < started {
            assert!(
                Instant::now() < deadline,
                "cdc never streamed:\n{}",
                d.log("cdc")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        cdc.kill();
        cdc = d.start("cdc", &cdc_args);
    }
    // A column added while orders flow does not stop capture.
    let mut conn = database(&d).await;
    conn.query_drop("ALTER TABLE orders ADD COLUMN channel VARCHAR(16) NULL")
        .await
        .unwrap();
    // An eligible order (diamond customer 2, ACB method 9) cancelled before its second line
    // came: deleted, it must never get a suggestion.
    for statement in [
        "INSERT INTO orders (id, timestamp, customer_id, store_id, payment_method_id, num_products)
         VALUES ('cancelled-1', NOW(3), (SELECT MIN(id) FROM customers WHERE tier = 'diamond'), 1, 9, 2)",
        "INSERT INTO order_details VALUES ('cancelled-1', 'CF01', 1, 0, 30000, FALSE)",
        "DELETE FROM order_details WHERE order_id = 'cancelled-1'",
        "DELETE FROM orders WHERE id = 'cancelled-1'",
        // An order updated after it was placed: the update follows its insert.
        "UPDATE orders SET status = 'refunded' WHERE id = (SELECT MIN(id) FROM (SELECT id FROM orders) o)",
    ] {
        conn.query_drop(statement).await.unwrap();
    }
    conn.disconnect().await.unwrap();
    let mut tills = tills;
    let deadline = Instant::now() + Duration::from_secs(60);
    while tills.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "simulate did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every eligible order exactly one suggestion (identical copies after a kill), no other.
    let eligible = eligible_by_sql(&d).await;
    assert!(eligible.len() > 20, "{} eligible orders", eligible.len());
    let found = suggestions_for(&d, &eligible, Duration::from_secs(120)).await;
    let found_ids: BTreeSet<String> = found.keys().cloned().collect();
    assert_eq!(
        found_ids.len(),
        eligible.len(),
        "suggestions vs SQL: missing {:?}, extra {:?}\ncdc log:\n{}\nrecommend log:\n{}",
        eligible.difference(&found_ids).take(5).collect::<Vec<_>>(),
        found_ids.difference(&eligible).take(5).collect::<Vec<_>>(),
        tail_of(&d.log("cdc")),
        tail_of(&d.log("recommend"))
    );
    assert_eq!(found_ids, eligible);
    assert!(!found.contains_key("cancelled-1"));
    for (order, copies) in &found {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "{order}: {copies:?}"
        );
    }

    // Every committed row change arrived: each line of the database has its event, and the
    // updated order's update comes after its insert.
    let lines = captured_rows(&d, "order_details").await;
    let captured: BTreeSet<(String, String)> = lines
        .iter()
        .filter(|(op, _)| op != "d")
        .map(|(_, p)| {
            let row = &p["after"];
            (
                row["order_id"].as_str().unwrap().to_string(),
                row["product_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let in_db = lines_by_sql(&d, false).await;
    assert!(
        in_db.is_subset(&captured),
        "{} lines of the database never captured",
        in_db.difference(&captured).count()
    );
    let orders = captured_rows(&d, "orders").await;
    // Four SIGKILLs, one in the snapshot, and no row read twice, no change event twice:
    // events and position go in one transaction.
    for (events, key) in [
        (&lines, ["order_id", "product_id"]),
        (&orders, ["id", "id"]),
    ] {
        let mut read = BTreeSet::new();
        for (_, p) in events.iter().filter(|(op, _)| op == "r") {
            let row = (p["after"][key[0]].clone(), p["after"][key[1]].clone());
            assert!(read.insert(format!("{row:?}")), "{row:?} read twice");
        }
        assert!(!read.is_empty());
    }
    for events in [&lines, &orders] {
        let mut seen = BTreeSet::new();
        for (op, p) in events.iter().filter(|(op, _)| op != "r") {
            let s = &p["source"];
            let at = (
                op.clone(),
                s["file"].to_string(),
                s["pos"].to_string(),
                s["row"].to_string(),
            );
            assert!(seen.insert(at.clone()), "{at:?} captured twice");
        }
    }
    let mut ops_by_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (op, p) in &orders {
        let row = if op == "d" { &p["before"] } else { &p["after"] };
        ops_by_order
            .entry(row["id"].as_str().unwrap().to_string())
            .or_default()
            .push(op.clone());
    }
    assert!(
        orders.iter().any(|(op, _)| op == "r"),
        "the orders before capture came by snapshot"
    );
    let cancelled = ops_by_order.get("cancelled-1").unwrap_or_else(|| {
        panic!(
            "the cancelled order's changes were not captured\ncdc log:\n{}",
            tail_of(&d.log("cdc"))
        )
    });
    assert_eq!(cancelled.first().map(String::as_str), Some("c"));
    assert_eq!(cancelled.last().map(String::as_str), Some("d"));
    let updated: Vec<&Vec<String>> = ops_by_order
        .values()
        .filter(|ops| ops.iter().any(|o| o == "u"))
        .collect();
    assert_eq!(updated.len(), 1, "one order was updated");
    let first_update = updated[0].iter().position(|o| o == "u").unwrap();
    assert!(updated[0][..first_update]
        .iter()
        .any(|o| o == "c" || o == "r"));
    assert!(
        orders
            .iter()
            .any(|(_, p)| p["after"].get("channel").is_some()),
        "rows after ALTER TABLE carry the new column"
    );

    // Customers accept every suggestion; the lines written back come through the binlog
    // with is_suggestion = 1 (BOOLEAN, written as Debezium writes it) and trigger nothing.
    let mut accept = d.start("accept", &["accept", "--share", "1.0"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (suggested_lines(&d).await as usize) < eligible.len() {
        assert!(Instant::now() < deadline, "{}", d.log("accept"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(terminate(&mut accept).success(), "{}", d.log("accept"));
    let written_back = lines_by_sql(&d, true).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let back: BTreeSet<(String, String)> = captured_rows(&d, "order_details")
            .await
            .iter()
            .filter(|(_, p)| p["after"]["is_suggestion"] == 1)
            .map(|(_, p)| {
                let row = &p["after"];
                (
                    row["order_id"].as_str().unwrap().to_string(),
                    row["product_id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        if back == written_back {
            break;
        }
        assert!(Instant::now() < deadline, "write-backs not captured");
    }
    let after = suggestions_for(&d, &eligible, Duration::from_secs(5)).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        found.keys().collect::<Vec<_>>()
    );
    for (order, copies) in &after {
        assert!(copies.iter().all(|c| c == &found[order][0]), "{order}");
    }

    let log = d.log("cdc");
    assert_eq!(
        log.matches("snapshot started").count(),
        1,
        "one snapshot; every restart went on from the stored position:\n{log}"
    );
    assert_eq!(
        log.matches("snapshot cut short goes on").count(),
        1,
        "{log}"
    );
    assert!(log.matches("reading the binlog").count() >= 4, "{log}");
    let body = reqwest_free_get(&metrics, "/metrics");
    assert!(
        body.contains("brewline_capture_rows_total{table=\"order_details\",op=\"c\"}"),
        "{body}"
    );
    assert!(body.contains("brewline_capture_lag_seconds"), "{body}");
    assert!(terminate(&mut cdc).success(), "{}", d.log("cdc"));
    assert!(
        terminate(&mut recommend).success(),
        "{}",
        d.log("recommend")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, Redis and MariaDB: run scripts/test"]
async fn a_purged_position_stops_capture_with_the_way_on_and_a_new_snapshot_takes_it() {
    let d = Deployment::with_cdc("lost", (14, 15));
    // The test loses the position by editing the position table: without transactions that
    // table is where it is kept (with them, the position committed in Kafka, which only a real
    // PURGE BINARY LOGS, fatal to every other test on the server, would lose).
    let config = std::fs::read_to_string(&d.config).unwrap();
    let config = config.replace("[kafka]\n", "[kafka]\ntransactions = \"off\"\n");
    std::fs::write(&d.config, config).unwrap();
    d.set_up();
    d.run(&["simulate", "--orders", "30", "--seed", "31"]);
    d.run(&["cdc", "--until-caught-up"]);
    let good = stored_position(&d).await.expect("a position stored");
    let forget = |position: &'static str| {
        let d = &d;
        async move {
            let mut conn = database(d).await;
            conn.exec_drop(
                "UPDATE brewline.brewline_offsets SET position = ? WHERE name = ?",
                (position, format!("cdc.mysql.{}", d.prefix)),
            )
            .await
            .unwrap();
            conn.disconnect().await.unwrap();
        }
    };
    // A binlog file the server no longer has, as after `PURGE BINARY LOGS`.
    forget("mysql-bin.000000:4").await;
    let out = d.command(&["cdc", "--until-caught-up"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("mysql-bin.000000:4 is no longer on the server")
            && stderr.contains("brewline cdc --resnapshot")
            && stderr.contains("cdc.on_lost_position"),
        "{stderr}"
    );
    assert_eq!(
        stored_position(&d).await.as_deref(),
        Some("mysql-bin.000000:4"),
        "nothing stored"
    );

    // The way on: a new snapshot, then the binlog from where it was taken.
    d.run(&["simulate", "--orders", "10", "--seed", "32"]);
    let out = d.run(&["cdc", "--until-caught-up", "--resnapshot"]);
    assert!(out.contains("captured"), "{out}");
    let after = stored_position(&d).await.unwrap();
    assert_ne!(after, "mysql-bin.000000:4");
    assert_ne!(after, good, "the 10 orders after it were captured");
    let snapshot_reads = captured_rows(&d, "orders")
        .await
        .iter()
        .filter(|(op, _)| op == "r")
        .count();
    assert_eq!(
        snapshot_reads,
        30 + 40,
        "the first snapshot's 30 orders, then all 40 again as read events"
    );

    // Or taken whenever it happens, by configuration.
    let config = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        config.replace("[cdc]\n", "[cdc]\non_lost_position = \"snapshot\"\n"),
    )
    .unwrap();
    forget("mysql-bin.000000:4").await;
    let out = d
        .command(&["cdc", "--until-caught-up"])
        .env("BREWLINE_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("taking a new snapshot"), "{stderr}");
    assert_ne!(
        stored_position(&d).await.as_deref(),
        Some("mysql-bin.000000:4")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, Redis and MariaDB: run scripts/test"]
async fn capture_started_while_the_database_is_down_waits_for_it() {
    let d = Deployment::with_cdc("down", (14, 15));
    let nowhere = format!("mysql://root@127.0.0.1:{}", free_port());
    let mut cdc = d.start_with(
        "cdc",
        &["cdc"],
        &[("BREWLINE_MYSQL__URL", nowhere.as_str())],
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        cdc.0.try_wait().unwrap().is_none(),
        "capture gave up:\n{}",
        d.log("cdc")
    );
    let log = d.log("cdc");
    assert!(
        log.matches("connecting to the source database failed; retrying")
            .count()
            >= 3,
        "{log}"
    );
    assert!(terminate(&mut cdc).success(), "{log}");
}
