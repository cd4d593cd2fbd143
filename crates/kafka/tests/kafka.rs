//! The event log on a real Kafka-protocol broker: the shared conformance cases. Needs the
//! broker `scripts/test` starts (`TEST_BREWLINE_BROKERS`); run with `scripts/test`, or
//! `cargo test -- --ignored` with that variable set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use brewline_kafka::{KafkaConfig, KafkaLog};
use brewline_ports::conformance;

/// The test broker, with the settings tansu needs: it holds every fetch for up to
/// `fetch.wait.max.ms`; and a fetch from an offset inside a record batch skips to the next
/// batch (Kafka returns the batch and the client skips the records before the offset), so a
/// group resuming from a commit in the middle of a batch would lose records: batches of one
/// record make every offset a batch start. And a short session, so that a killed member's
/// partitions move on quickly.
pub fn config() -> KafkaConfig {
    let brokers = std::env::var("TEST_BREWLINE_BROKERS")
        .expect("TEST_BREWLINE_BROKERS is not set: run these tests through scripts/test");
    KafkaConfig {
        brokers,
        producer: BTreeMap::from([("batch.num.messages".to_string(), "1".to_string())]),
        consumer: BTreeMap::from([
            ("fetch.wait.max.ms".to_string(), "10".to_string()),
            // A member that died without leaving is replaced after 6 s, not 45.
            ("session.timeout.ms".to_string(), "6000".to_string()),
            ("heartbeat.interval.ms".to_string(), "1000".to_string()),
        ]),
        ..KafkaConfig::default()
    }
}

/// A topic name no other test run used.
fn unique(name: &str) -> String {
    format!("{name}-{}", brewline_ports::now_us())
}

#[tokio::test]
#[ignore = "needs a Kafka broker: run scripts/test"]
async fn keys_land_in_kafkas_partition_in_order() {
    let log = KafkaLog::new(config());
    conformance::keys_land_in_kafkas_partition_in_order(&log, &unique("keys")).await;
}

#[tokio::test]
#[ignore = "needs a Kafka broker: run scripts/test"]
async fn a_group_resumes_from_its_committed_offsets() {
    let topic = unique("resume");
    conformance::a_group_resumes_from_its_committed_offsets(
        || KafkaLog::new(config()),
        &topic,
        &unique("group"),
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a Kafka broker: run scripts/test"]
async fn headers_tombstones_and_unkeyed_records_survive() {
    let log = KafkaLog::new(config());
    conformance::headers_tombstones_and_unkeyed_records_survive(&log, &unique("headers")).await;
}

#[tokio::test]
#[ignore = "needs a Kafka broker: run scripts/test"]
async fn a_reader_starts_where_it_is_told() {
    let log = KafkaLog::new(config());
    conformance::a_reader_starts_where_it_is_told(&log, &unique("from")).await;
}
