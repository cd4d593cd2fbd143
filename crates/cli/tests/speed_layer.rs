//! The speed layer on real servers, as an operator runs it: `db init`, `db seed`, `cache load`,
//! `topics create`, then `brewline recommend` processes reading Debezium events from Kafka,
//! killed and restarted (ordinary group membership: partitions move by real rebalances),
//! checked against the orders. Needs the servers `scripts/test` starts
//! (`TEST_BREWLINE_*`); run with `scripts/test`, or `cargo test -- --ignored` with them set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brewline_core::order::NewOrder;
use brewline_core::ReferenceData;
use brewline_kafka::KafkaProducer;
use brewline_ports::{Producer, Record};
use common::faults::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, Redis and MariaDB: run scripts/test"]
async fn two_recommenders_killed_and_restarted_make_one_suggestion_per_eligible_order() {
    let d = Arc::new(Deployment::new("recs", None, (2, 3)));
    d.set_up();
    let all = orders(&ReferenceData::bundled().unwrap(), 11, 2400);
    let eligible = eligible(&all);
    assert!(eligible.len() > 500, "{} eligible", eligible.len());

    // The first half as JsonConverter writes without schemas, then two malformed records.
    let work = tempfile::tempdir().unwrap();
    produce_events(&d, work.path(), &all[..1200], false).await;
    let producer = KafkaProducer::new(&d.kafka()).unwrap();
    producer
        .send(
            &d.topic("orders"),
            vec![
                Record::keyed("bad-1", Some(b"this is not JSON".to_vec())),
                Record::keyed(
                    "bad-2",
                    Some(br#"{"payload":{"op":"x","after":{"id":"bad-2"}}}"#.to_vec()),
                ),
            ],
        )
        .await
        .unwrap();

    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut a = d.start("a", &["recommend", "--metrics-addr", &metrics]);
    let mut b = d.start("b", &["recommend", "--workers", "2"]);

    // The second half with schemas, while process b is killed and restarted three times
    // and the cache is loaded again.
    let producing = {
        let work = work.path().to_path_buf();
        let second: Vec<NewOrder> = all[1200..].to_vec();
        let d2 = d.clone();
        tokio::spawn(async move {
            for chunk in second.chunks(300) {
                produce_events(&d2, &work, chunk, true).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // SIGKILL: no chance to commit or to leave the group; its partitions move to a once
        // the session times out, and back when the new b joins.
        b.kill();
        b = d.start("b", &["recommend", "--workers", "2"]);
    }
    d.run(&["cache", "load"]);
    producing.await.unwrap();

    let found = suggestions_for(&d, &eligible, Duration::from_secs(120)).await;
    assert!(
        d.log("b").contains("written in Kafka transactions"),
        "{}",
        d.log("b")
    );
    assert_one_suggestion_each(&found, &eligible, || {
        format!(
            "log a:\n{}\nlog b:\n{}",
            tail_of(&d.log("a")),
            tail_of(&d.log("b"))
        )
    });
    for copies in found.values() {
        let products: Vec<&str> = copies[0]["order_products"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert!(!products.contains(&copies[0]["product_id"].as_str().unwrap()));
    }

    let dead = read_all(&d, &d.topic("dlq"), Duration::from_secs(2)).await;
    let dead_keys: BTreeSet<String> = dead
        .iter()
        .map(|r| String::from_utf8(r.record.key.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(
        dead_keys,
        BTreeSet::from(["bad-1".to_string(), "bad-2".to_string()])
    );
    for r in &dead {
        let reason = r
            .record
            .headers
            .iter()
            .find(|(k, _)| k == "brewline.error.reason")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap();
        assert!(!reason.is_empty());
    }

    let body = reqwest_free_get(&metrics, "/metrics");
    assert!(
        // OpenMetrics names a counter's family without `_total`, its sample with it.
        body.contains("# TYPE brewline_suggestions counter")
            && body.contains("\nbrewline_suggestions_total "),
        "{body}"
    );
    assert!(
        body.contains("brewline_suggestion_latency_seconds_bucket"),
        "{body}"
    );

    // Customers accept every suggestion: each becomes one order line, once, however often
    // `accept` reads it.
    let mut accept = d.start("accept", &["accept", "--share", "1.0"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let lines_written = loop {
        let n = suggested_lines(&d).await;
        if n >= eligible.len() as i64 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(terminate(&mut accept).success(), "{}", d.log("accept"));
    assert_eq!(lines_written, eligible.len() as i64, "{}", d.log("accept"));
    let mut again = d.start("accept", &["accept", "--group", "second-reader"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(terminate(&mut again).success(), "{}", d.log("accept"));
    assert_eq!(suggested_lines(&d).await, lines_written, "accepted once");

    assert!(terminate(&mut a).success(), "{}", d.log("a"));
    assert!(terminate(&mut b).success(), "{}", d.log("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, Redis and MariaDB: run scripts/test"]
async fn the_recommender_rides_out_a_redis_restart() {
    let mut redis = OwnRedis::start();
    let d = Deployment::new("redis", Some(&redis.url()), (0, 1));
    d.set_up();
    let all = orders(&ReferenceData::bundled().unwrap(), 12, 800);
    let eligible = eligible(&all);
    let work = tempfile::tempdir().unwrap();
    produce_events(&d, work.path(), &all[..400], false).await;
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut r = d.start("r", &["recommend", "--metrics-addr", &metrics]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.down();
    // Events arrive while Redis is down; the recommender retries until it is back.
    produce_events(&d, work.path(), &all[400..], true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.up();

    let found = suggestions_for(&d, &eligible, Duration::from_secs(90)).await;
    let found_ids: BTreeSet<String> = found.keys().cloned().collect();
    assert_eq!(
        found_ids.len(),
        eligible.len(),
        "every eligible order, no other\n{}",
        tail_of(&d.log("r"))
    );
    assert_eq!(found_ids, eligible);
    for (order, copies) in &found {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "{order}: {copies:?}"
        );
    }
    let body = reqwest_free_get(&metrics, "/metrics");
    let retries = body
        .lines()
        .find(|l| l.starts_with("brewline_engine_retries_total{engine=\"redis\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(retries > 0, "the outage shows as retries:\n{body}");
    assert!(terminate(&mut r).success(), "{}", d.log("r"));
}

/// The value of a metric's sample (`name` with its labels, if any) in `body`.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
}

/// Redis flushed while every order is open (its header read, its lines not yet): the recommender
/// finds the order state gone at its next write, reads the log again from its committed offsets
/// (held at the first header) and completes every order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, Redis and MariaDB: run scripts/test"]
async fn order_state_flushed_from_redis_is_rebuilt_from_the_log() {
    let redis = OwnRedis::start();
    let d = Deployment::new("flush", Some(&redis.url()), (0, 1));
    d.set_up();
    // The events are made in topics of their own, then fed header first.
    let stage = Deployment::new("stage", Some(&redis.url()), (2, 3));
    stage.run(&["db", "init"]);
    stage.run(&["db", "seed"]);
    stage.run(&["topics", "create"]);
    let all = orders(&ReferenceData::bundled().unwrap(), 13, 600);
    let eligible = eligible(&all);
    let work = tempfile::tempdir().unwrap();
    produce_events(&stage, work.path(), &all, false).await;
    let headers = read_all(&stage, &stage.topic("orders"), Duration::from_secs(3)).await;
    let lines = read_all(
        &stage,
        &stage.topic("order_details"),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(headers.len(), all.len());
    let forward = |records: &[brewline_ports::Consumed]| -> Vec<Record> {
        records.iter().map(|r| r.record.clone()).collect()
    };

    let metrics = format!("127.0.0.1:{}", free_port());
    let mut r = d.start("r", &["recommend", "--metrics-addr", &metrics]);
    let producer = KafkaProducer::new(&d.kafka()).unwrap();
    producer
        .send(&d.topic("orders"), forward(&headers))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = reqwest_free_get(&metrics, "/metrics");
        if sample(&body, "brewline_open_orders") == Some(all.len() as f64) {
            break;
        }
        assert!(Instant::now() < deadline, "headers not read:\n{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Every order open: the dynamic database is flushed.
    let mut dynamic = redis::Client::open(format!("{}/1", redis.url()))
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("FLUSHDB").query::<()>(&mut dynamic).unwrap();
    producer
        .send(&d.topic("order_details"), forward(&lines))
        .await
        .unwrap();

    let found = suggestions_for(&d, &eligible, Duration::from_secs(90)).await;
    let found_ids: BTreeSet<String> = found.keys().cloned().collect();
    assert_eq!(
        found_ids,
        eligible,
        "every eligible order, no other\n{}",
        tail_of(&d.log("r"))
    );
    for (order, copies) in &found {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "{order}: {copies:?}"
        );
    }
    let body = reqwest_free_get(&metrics, "/metrics");
    assert!(
        sample(&body, "brewline_order_state_rebuilds_total").unwrap_or(0.0) >= 1.0,
        "{body}"
    );
    assert!(d.log("r").contains("order state lost"), "{}", d.log("r"));
    assert!(terminate(&mut r).success(), "{}", d.log("r"));
}
