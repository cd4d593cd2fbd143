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

/// `n` incompressible bytes: a topic's size limit applies to the compressed batch.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 7;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// The keys of `topic` as a reader without a group reads them (at least `least` of them, or
/// what 30 s give), and its lag once they are read.
async fn keys_to_the_end(log: &KafkaLog, topic: &str, least: usize) -> (Vec<Vec<u8>>, u64) {
    use brewline_ports::{EventLog, Subscription};
    use std::time::{Duration, Instant};
    let mut reader = log
        .consumer(Subscription {
            topics: vec![topic.to_string()],
            group: None,
            from: Vec::new(),
        })
        .await
        .unwrap();
    let mut keys = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let got = reader.poll(100, Duration::from_millis(500)).await.unwrap();
        keys.extend(got.into_iter().filter_map(|r| r.record.key));
        if keys.len() >= least && reader.lag().await.unwrap() == 0 {
            break;
        }
    }
    (keys, reader.lag().await.unwrap())
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

/// Output and offsets committed as one: a reader of committed records sees a transaction's
/// records once it is committed, never those of one aborted (here: a record the topic refuses
/// fails it whole), and a member reads its offsets and how far its output is sent back.
#[tokio::test]
#[ignore = "needs a Kafka broker: run scripts/test"]
async fn output_and_offsets_are_committed_as_one() {
    use brewline_kafka::KafkaConsumer;
    use brewline_ports::{Consumer, EventLog, Progress, Record, Subscription};
    use std::time::Duration;
    let log = KafkaLog::new(config());
    let (input, output, group) = (unique("txn-in"), unique("txn-out"), unique("txn-g"));
    log.create_topic(&input, 1).await.unwrap();
    log.create_topic_with(&output, 1, &[("max.message.bytes", "10000".to_string())])
        .await
        .unwrap();
    let records: Vec<Record> = (0..10)
        .map(|i| Record::keyed(format!("k{i}"), Some(b"v".to_vec())))
        .collect();
    log.producer().unwrap().send(&input, records).await.unwrap();
    let subscription = Subscription {
        topics: vec![input.clone()],
        group: Some(group.clone()),
        from: Vec::new(),
    };
    let mut member = KafkaConsumer::new(&config(), subscription.clone())
        .await
        .unwrap();
    member
        .use_transactions(&config(), &unique("txn-id"))
        .await
        .unwrap();
    let mut read = Vec::new();
    while read.len() < 10 {
        read.extend(member.poll(10, Duration::from_secs(10)).await.unwrap());
    }
    let txn = member.transactions().expect("transactions in use");
    let partition = [(input.clone(), 0)];
    assert_eq!(txn.sent_through(&partition).await.unwrap(), vec![0]);

    // Refused: nothing of the transaction is visible, nothing is committed.
    let fine = Record::keyed("fine", Some(b"ok".to_vec()));
    let huge = Record::keyed("huge", Some(noise(20_000)));
    let progress = [Progress {
        topic: input.clone(),
        partition: 0,
        next: 4,
        sent_through: 10,
    }];
    let both = [fine.clone(), huge];
    let err = txn
        .commit(&[(output.as_str(), &both[..])], &progress)
        .await
        .unwrap_err();
    assert_eq!(err.refused.len(), 1, "{err}");
    assert_eq!(err.refused[0].index, 1, "{err}");
    assert_eq!(txn.sent_through(&partition).await.unwrap(), vec![0]);

    // Committed: the output is visible, and the offsets with their mark are committed.
    let only = [fine];
    txn.commit(&[(output.as_str(), &only[..])], &progress)
        .await
        .unwrap();
    assert_eq!(txn.sent_through(&partition).await.unwrap(), vec![10]);
    let (keys, lag) = keys_to_the_end(&log, &output, 1).await;
    assert_eq!(
        keys,
        vec![b"fine".to_vec()],
        "only the committed transaction's record"
    );
    assert_eq!(lag, 0, "read to the end, past the transactions' markers");

    // A member of the group after it starts from the committed offset.
    drop(member);
    let mut next = KafkaConsumer::new(&config(), subscription).await.unwrap();
    let first = loop {
        let got = next.poll(1, Duration::from_secs(10)).await.unwrap();
        if let Some(r) = got.into_iter().next() {
            break r;
        }
    };
    assert_eq!(first.offset, 4);
}

/// A capture's position committed with its events: read back by a successor with the same
/// transactional id, never moved by a transaction that failed (the topic read past an
/// aborted position), and the last per name kept apart from other captures'.
#[tokio::test]
#[ignore = "needs a Kafka broker: run scripts/test"]
async fn a_capture_position_is_committed_with_its_events() {
    use brewline_kafka::KafkaPositions;
    use brewline_ports::{position_record, CheckpointStore, Record};
    let log = KafkaLog::new(config());
    let (events, positions, id) = (unique("cap-ev"), unique("cap-pos"), unique("cap-id"));
    log.create_topic_with(&events, 1, &[("max.message.bytes", "10000".to_string())])
        .await
        .unwrap();
    log.create_topic_with(&positions, 1, &[("cleanup.policy", "compact".to_string())])
        .await
        .unwrap();
    let first = KafkaPositions::open(&config(), &positions, &id)
        .await
        .unwrap();
    assert_eq!(
        first.load("cap").await.unwrap(),
        None,
        "nothing committed yet"
    );
    let batch = |keys: &[&str]| -> Vec<Record> {
        keys.iter()
            .map(|k| Record::keyed(k.as_bytes(), Some(b"event".to_vec())))
            .collect()
    };
    async fn commit(
        p: &KafkaPositions,
        events: &str,
        keys: Vec<Record>,
        at: &str,
    ) -> brewline_ports::Result<()> {
        let mark = [position_record("cap", at)];
        p.transactions()
            .commit(&[(events, &keys), (p.topic(), &mark)], &[])
            .await
    }
    commit(&first, &events, batch(&["a", "b"]), "binlog.000001:100")
        .await
        .unwrap();
    first.save("other", "binlog.000009:9").await.unwrap();
    // A record the topic refuses fails the transaction whole: neither the events nor the
    // position are seen.
    let mut refused = batch(&["c"]);
    refused.push(Record::keyed("huge", Some(noise(20_000))));
    let err = commit(&first, &events, refused, "binlog.000001:200")
        .await
        .unwrap_err();
    assert_eq!(err.refused.len(), 1, "{err}");
    assert_eq!(
        first.load("cap").await.unwrap().as_deref(),
        Some("binlog.000001:100")
    );
    // The positions topic ending in an aborted transaction's record: read past it.
    let mark = [position_record("cap", "binlog.000001:250")];
    let huge = [Record::keyed("huge", Some(noise(20_000)))];
    let err = first
        .transactions()
        .commit(&[(first.topic(), &mark), (events.as_str(), &huge)], &[])
        .await
        .unwrap_err();
    assert_eq!(err.refused.len(), 1, "{err}");
    assert_eq!(
        first.load("cap").await.unwrap().as_deref(),
        Some("binlog.000001:100"),
        "the aborted transaction's position is not read"
    );
    commit(&first, &events, batch(&["c"]), "binlog.000001:300")
        .await
        .unwrap();
    drop(first);

    let successor = KafkaPositions::open(&config(), &positions, &id)
        .await
        .unwrap();
    assert_eq!(
        successor.load("cap").await.unwrap().as_deref(),
        Some("binlog.000001:300")
    );
    assert_eq!(
        successor.load("other").await.unwrap().as_deref(),
        Some("binlog.000009:9")
    );
    let (keys, lag) = keys_to_the_end(&log, &events, 3).await;
    assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(lag, 0);
}

/// The broker refuses a whole batch when one record is too large for the topic: the records
/// of the batch are sent again each alone, and only the guilty one is refused.
#[tokio::test]
#[ignore = "needs a Kafka broker: run scripts/test"]
async fn a_record_too_large_for_the_topic_is_refused_alone() {
    use brewline_ports::{EventLog, Record};
    let log = KafkaLog::new(config());
    let topic = unique("small");
    log.create_topic_with(&topic, 1, &[("max.message.bytes", "10000".to_string())])
        .await
        .unwrap();
    let records = vec![
        Record::keyed("a", Some(b"1".to_vec())),
        Record::keyed("b", Some(noise(20_000))),
        Record::keyed("c", Some(b"2".to_vec())),
    ];
    let err = log
        .producer()
        .unwrap()
        .send(&topic, records)
        .await
        .unwrap_err();
    assert_eq!(err.refused.len(), 1, "{err}");
    assert_eq!(err.refused[0].index, 1, "{err}");
    let (keys, _) = keys_to_the_end(&log, &topic, 2).await;
    assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec()]);
}

/// When a member joins, the partitions move: each member sees it in
/// [`brewline_ports::Consumer::assignments`], and reads its partitions again from the
/// committed offsets, not from where it was. The recommender relies on both to forget what it
/// knew of its partitions and not to repeat another member's work.
#[tokio::test]
#[ignore = "needs a Kafka broker: run scripts/test"]
async fn members_see_their_partitions_move_and_read_them_again_from_the_committed_offsets() {
    use brewline_kafka::KafkaConsumer;
    use brewline_ports::{Consumed, Consumer, EventLog, Record, Subscription};
    use std::time::{Duration, Instant};
    let log = KafkaLog::new(config());
    let (topic, group) = (unique("moves"), unique("moves-g"));
    log.create_topic(&topic, 2).await.unwrap();
    let records: Vec<Record> = (0..40)
        .map(|i| Record::keyed(format!("k{i}"), Some(b"v".to_vec())))
        .collect();
    log.producer().unwrap().send(&topic, records).await.unwrap();
    let subscription = Subscription {
        topics: vec![topic.clone()],
        group: Some(group),
        from: Vec::new(),
    };
    let mut a = KafkaConsumer::new(&config(), subscription.clone())
        .await
        .unwrap();
    let mut read = 0;
    while read < 40 {
        read += a.poll(100, Duration::from_secs(10)).await.unwrap().len();
    }
    let alone = a.assignments();
    assert!(alone >= 1, "the partitions were handed to the first member");
    a.commit(&[(topic.clone(), 0, 2), (topic.clone(), 1, 2)])
        .await
        .unwrap();

    // A second member joins: both poll until the partitions are shared, keeping what each
    // read after its last move.
    let mut b = KafkaConsumer::new(&config(), subscription).await.unwrap();
    let (mut after_a, mut after_b): (Vec<Consumed>, Vec<Consumed>) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    let wait = Duration::from_millis(200);
    while Instant::now() < deadline && (after_a.len() < 2 || after_b.len() < 2) {
        let (got_a, got_b) = tokio::join!(a.poll(100, wait), b.poll(100, wait));
        if a.assignments() >= alone + 2 {
            after_a.extend(got_a.unwrap());
        }
        if b.assignments() >= 1 {
            after_b.extend(got_b.unwrap());
        }
    }
    assert!(
        a.assignments() >= alone + 2,
        "the first member's partitions were taken and handed back: {} → {}",
        alone,
        a.assignments()
    );
    for (member, after) in [("first", &after_a), ("second", &after_b)] {
        let partitions: std::collections::BTreeSet<i32> =
            after.iter().map(|r| r.partition).collect();
        assert_eq!(
            partitions.len(),
            1,
            "the {member} member reads one partition"
        );
        assert_eq!(
            after[0].offset, 2,
            "the {member} member reads from the committed offset"
        );
    }
}
