//! The event log on a real Kafka cluster: the shared conformance cases. Needs the three-node
//! cluster `scripts/test` starts (`TEST_BREWLINE_BROKERS`); run with `scripts/test`, or
//! `cargo test -- --ignored` with that variable set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use brewline_kafka::{KafkaConfig, KafkaLog};
use brewline_ports::conformance;

/// The test cluster, with brewline's defaults but for a short session, so that a killed
/// member's partitions move on quickly.
pub fn config() -> KafkaConfig {
    let brokers = std::env::var("TEST_BREWLINE_BROKERS")
        .expect("TEST_BREWLINE_BROKERS is not set: run these tests through scripts/test");
    KafkaConfig {
        brokers,
        consumer: BTreeMap::from([
            // A member that died without leaving is replaced after 6 s (the broker's least
            // session timeout), not 45.
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
async fn a_member_rewinds_to_its_committed_offsets() {
    let log = KafkaLog::new(config());
    conformance::a_member_rewinds_to_its_committed_offsets(&log, &unique("rewind"), &unique("g"))
        .await;
}

#[tokio::test]
#[ignore = "needs a Kafka broker: run scripts/test"]
async fn an_oversized_record_is_refused_alone() {
    let log = KafkaLog::new(config());
    conformance::an_oversized_record_is_refused_alone(&log, &unique("huge")).await;
}

#[tokio::test]
#[ignore = "needs a Kafka broker: run scripts/test"]
async fn a_reader_starts_where_it_is_told() {
    let log = KafkaLog::new(config());
    conformance::a_reader_starts_where_it_is_told(&log, &unique("from")).await;
}

/// brewline's topics on the three-node cluster: every partition on three replicas, and a
/// write acknowledged only once two of them have it.
#[tokio::test]
#[ignore = "needs a Kafka broker: run scripts/test"]
async fn topics_are_replicated_three_times_two_in_sync() {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::ClientConfig;
    let topic = unique("replicated");
    let week = (7 * 86_400_000_u64).to_string();
    KafkaLog::new(config())
        .create_topic_with(&topic, 3, &[("retention.ms", week.clone())])
        .await
        .unwrap();
    let brokers = config().brokers;
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let metadata = client
        .fetch_metadata(Some(&topic), std::time::Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions();
    assert_eq!(partitions.len(), 3);
    for p in partitions {
        assert_eq!(p.replicas().len(), 3, "partition {}", p.id());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let configs = admin
        .describe_configs([&ResourceSpecifier::Topic(&topic)], &AdminOptions::new())
        .await
        .unwrap();
    let resource = configs.into_iter().next().unwrap().unwrap();
    let min_insync = resource
        .entries
        .iter()
        .find(|e| e.name == "min.insync.replicas")
        .and_then(|e| e.value.clone());
    assert_eq!(min_insync.as_deref(), Some("2"));
    let retention = resource
        .entries
        .iter()
        .find(|e| e.name == "retention.ms")
        .and_then(|e| e.value.clone());
    assert_eq!(retention, Some(week), "settings given at creation");
}
