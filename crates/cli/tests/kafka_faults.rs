//! One node of the three-node Kafka cluster killed with SIGKILL mid-run, and started again
//! later, while the whole speed layer and the batch layer's landing run: `brewline cdc`,
//! `recommend`, `accept` and `batch run --layer bronze` go on through the leader elections;
//! nothing is lost, and nothing captured is repeated. Alone in its test binary, so
//! that no other test shares the cluster while a node is down. Needs the servers
//! `scripts/test` starts (`TEST_BREWLINE_*`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use brewline_batch::Lake;
use common::faults::*;
use common::*;

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

    // Every committed row captured once; per key, the changes in commit order.
    every_row_captured(&d).await;

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
