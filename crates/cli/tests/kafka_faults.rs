//! One node of the three-node Kafka cluster killed with SIGKILL mid-run, and started again
//! later, while the whole speed layer and the batch layer's landing run: `brewline cdc`,
//! `recommend`, `accept` and `batch run --layer bronze` go on through the leader elections;
//! nothing is lost, and what is repeated is repeated identically. Alone in its test binary, so
//! that no other test shares the cluster while a node is down. Needs the servers
//! `scripts/test` starts (`TEST_BREWLINE_*`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use brewline_batch::Lake;
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::ClientConfig;
use serde_json::Value;

/// A node of the test cluster (`TEST_BREWLINE_KAFKA_NODES/node-N`), started again when the
/// test ends, whatever happened, so that the tests after it have the whole cluster.
struct KafkaNode {
    dir: PathBuf,
    down: bool,
}

impl KafkaNode {
    fn new(id: i32) -> KafkaNode {
        KafkaNode {
            dir: PathBuf::from(env("TEST_BREWLINE_KAFKA_NODES")).join(format!("node-{id}")),
            down: false,
        }
    }

    fn kill(&mut self) {
        let pid = std::fs::read_to_string(self.dir.join("pid")).unwrap();
        let status = std::process::Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "could not kill Kafka node {pid}");
        self.down = true;
    }

    fn start(&mut self) {
        let status = std::process::Command::new(self.dir.join("start"))
            .status()
            .unwrap();
        assert!(status.success(), "could not start {:?}", self.dir);
        self.down = false;
    }
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        if self.down {
            self.start();
        }
    }
}

fn metadata_client(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap()
}

/// The node that leads partition 0 of `topic`.
fn leader_of(brokers: &str, topic: &str) -> i32 {
    let metadata = metadata_client(brokers)
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .find(|p| p.id() == 0)
        .unwrap()
        .leader()
}

/// Waits until every partition of `topics` has all three replicas in sync again.
fn wait_in_sync(brokers: &str, topics: &[String], within: Duration) {
    let client = metadata_client(brokers);
    let deadline = Instant::now() + within;
    loop {
        let short: Vec<String> = topics
            .iter()
            .flat_map(|t| {
                let metadata = client
                    .fetch_metadata(Some(t), Duration::from_secs(10))
                    .unwrap();
                metadata.topics()[0]
                    .partitions()
                    .iter()
                    .filter(|p| p.isr().len() < 3)
                    .map(|p| format!("{t}/{}: in sync {:?}", p.id(), p.isr()))
                    .collect::<Vec<_>>()
            })
            .collect();
        if short.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas not back in sync: {short:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every copy of one row change (same binlog file, position and row; for a snapshot read,
/// which all stand at the snapshot's position, the same row) carries the same change; returns
/// the distinct changes per key, in the order they were read.
fn identical_repeats(events: &[(String, Value)]) -> BTreeMap<String, Vec<Value>> {
    let mut seen: BTreeMap<(String, String, i64, i64, String), Value> = BTreeMap::new();
    let mut per_key: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (key, payload) in events {
        let s = &payload["source"];
        let at = (
            key.clone(),
            s["file"].as_str().unwrap().to_string(),
            s["pos"].as_i64().unwrap(),
            s["row"].as_i64().unwrap(),
            if payload["op"] == "r" {
                payload["after"].to_string()
            } else {
                String::new()
            },
        );
        let change = serde_json::json!({
            "op": payload["op"], "before": payload["before"], "after": payload["after"],
        });
        match seen.get(&at) {
            Some(first) => assert_eq!(first, &change, "a repeat of {at:?} differs"),
            None => {
                seen.insert(at, change.clone());
                per_key.entry(key.clone()).or_default().push(change);
            }
        }
    }
    per_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Kafka cluster, Redis and MariaDB: run scripts/test"]
async fn a_kafka_node_killed_mid_run_loses_nothing() {
    let d = Deployment::with_cdc("knode", (12, 13));
    d.set_up();
    let lake = d.dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let land = || {
        let mut cmd = d.command(&[
            "batch",
            "run",
            "--servers",
            "--layer",
            "bronze",
            "--lake",
            lake,
        ]);
        cmd.env(
            "BREWLINE_BATCH__HISTORY",
            d.dir.path().join("history.sqlite"),
        );
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "bronze landing failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    let mut cdc = d.start("cdc", &["cdc"]);
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut recommend = d.start(
        "recommend",
        &["recommend", "--workers", "2", "--metrics-addr", &metrics],
    );
    let mut accept = d.start("accept", &["accept", "--share", "1.0"]);
    let mut tills = d.start(
        "tills",
        &[
            "simulate",
            "--orders",
            "2000",
            "--rate",
            "100",
            "--seed",
            "41",
            "--eligible-share",
            "0.25",
        ],
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    land();

    // The node leading the orders' first partition dies without a word; the others elect new
    // leaders (and, if it was the active controller, a new controller) and go on with two
    // replicas in sync, which min.insync.replicas = 2 accepts.
    let victim = leader_of(&d.brokers, &d.topic("orders"));
    let mut node = KafkaNode::new(victim);
    node.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    land();
    tokio::time::sleep(Duration::from_secs(6)).await;
    node.start();

    let deadline = Instant::now() + Duration::from_secs(90);
    while tills.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "simulate did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(tills.0.wait().unwrap().success(), "{}", d.log("tills"));

    // Every eligible order exactly one suggestion content, no other.
    let eligible = eligible_by_sql(&d).await;
    assert!(eligible.len() > 300, "{} eligible orders", eligible.len());
    let found = suggestions_for(&d, &eligible, Duration::from_secs(120)).await;
    assert_one_suggestion_each(&found, &eligible, || {
        let metrics = reqwest_free_get(&metrics, "/metrics");
        let counters: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("brewline_") && !l.contains("_bucket"))
            .collect();
        format!(
            "recommend log:\n{}\nmetrics:\n{}",
            tail_of(&d.log("recommend")),
            counters.join("\n")
        )
    });

    // Every accepted suggestion written back once.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (suggested_lines(&d).await as usize) < eligible.len() {
        assert!(Instant::now() < deadline, "{}", tail_of(&d.log("accept")));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(suggested_lines(&d).await as usize, eligible.len());

    // Every committed row captured; a row change sent twice was sent identically; per key,
    // the changes in commit order.
    let captured = |table: &'static str| {
        let d = &d;
        async move {
            read_all(d, &d.topic(table), Duration::from_secs(3))
                .await
                .into_iter()
                .filter_map(|r| {
                    let key = String::from_utf8(r.record.key.clone()?).unwrap();
                    let value: Value = serde_json::from_slice(r.record.value.as_ref()?).unwrap();
                    Some((key, value.get("payload").cloned().unwrap_or(value)))
                })
                .collect::<Vec<_>>()
        }
    };
    let mut in_db = lines_by_sql(&d, false).await;
    in_db.extend(lines_by_sql(&d, true).await);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let captured_lines: BTreeSet<(String, String)> =
            identical_repeats(&captured("order_details").await)
                .values()
                .flatten()
                .map(|c| {
                    (
                        c["after"]["order_id"].as_str().unwrap().to_string(),
                        c["after"]["product_id"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
        if in_db.is_subset(&captured_lines) {
            break;
        }
        // The write-backs of the last suggestions may still be on their way through cdc.
        assert!(
            Instant::now() < deadline,
            "{} lines of the database never captured\ncdc log:\n{}",
            in_db.difference(&captured_lines).count(),
            tail_of(&d.log("cdc"))
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let orders = identical_repeats(&captured("orders").await);
    let mut db = database(&d).await;
    let order_count: usize = mysql_async::prelude::Queryable::query_first::<usize, _>(
        &mut db,
        "SELECT COUNT(*) FROM orders",
    )
    .await
    .unwrap()
    .unwrap();
    db.disconnect().await.unwrap();
    assert_eq!(orders.len(), order_count, "every order captured");
    assert!(orders.values().all(|changes| changes.len() == 1));

    // Bronze: every record of the CDC topics landed exactly once, across the run made while
    // the node was down and the one after.
    node_back_in_sync(&d);
    assert!(terminate(&mut cdc).success(), "{}", d.log("cdc"));
    land();
    let lake = Lake::at(lake);
    let landed_orders = lake.read("bronze/orders_cdc").await.unwrap();
    let landed_lines = lake.read("bronze/order_details_cdc").await.unwrap();
    let topic_orders = read_all(&d, &d.topic("orders"), Duration::from_secs(2))
        .await
        .len();
    let topic_lines = read_all(&d, &d.topic("order_details"), Duration::from_secs(2))
        .await
        .len();
    assert_eq!(
        (
            brewline_batch::lake::rows(&landed_orders),
            brewline_batch::lake::rows(&landed_lines)
        ),
        (topic_orders, topic_lines),
        "bronze holds each record of the topics once"
    );

    assert!(
        terminate(&mut recommend).success(),
        "{}",
        d.log("recommend")
    );
    assert!(terminate(&mut accept).success(), "{}", d.log("accept"));
}

/// The killed node is a full replica of the deployment's topics again.
fn node_back_in_sync(d: &Deployment) {
    let topics: Vec<String> = ["orders", "order_details", "suggestions"]
        .iter()
        .map(|t| d.topic(t))
        .collect();
    wait_in_sync(&d.brokers, &topics, Duration::from_secs(120));
}
