use super::*;
use brewline_ports::{EventLog, Subscription};

fn record(key: &str, value: &str) -> Record {
    Record::keyed(key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
}

async fn log_with(dir: &Path, topic: &str, partitions: i32) -> EmbeddedLog {
    let log = EmbeddedLog::open(&dir.join("log.sqlite")).unwrap();
    log.create_topic(topic, partitions).await.unwrap();
    log
}

fn group(topics: &[&str], g: Option<&str>) -> Subscription {
    Subscription {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        group: g.map(str::to_string),
    }
}

async fn drain(c: &mut dyn Consumer) -> Vec<Consumed> {
    let mut all = Vec::new();
    loop {
        let batch = c.poll(7, Duration::from_millis(100)).await.unwrap();
        if batch.is_empty() && c.lag().await.unwrap() == 0 {
            return all;
        }
        all.extend(batch);
    }
}

#[tokio::test]
async fn keys_land_in_kafkas_partition_with_consecutive_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), "t", 3).await;
    let p = log.producer().unwrap();
    let records: Vec<_> = (0..60)
        .map(|i| record(&format!("k{}", i % 10), &i.to_string()))
        .collect();
    p.send("t", records[..30].to_vec()).await.unwrap();
    p.send("t", records[30..].to_vec()).await.unwrap();
    let mut c = log.consumer(group(&["t"], None)).await.unwrap();
    let all = drain(c.as_mut()).await;
    assert_eq!(all.len(), 60);
    let mut per_partition: HashMap<i32, Vec<i64>> = HashMap::new();
    for r in &all {
        let key = r.record.key.as_ref().unwrap();
        assert_eq!(r.partition, partition_for_key(key, 3));
        per_partition.entry(r.partition).or_default().push(r.offset);
    }
    for offsets in per_partition.values() {
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, &expected, "offsets start at 0 and have no gaps");
    }
    // Per key, records come back in the order they were sent.
    let values_of_k3: Vec<String> = all
        .iter()
        .filter(|r| r.record.key.as_deref() == Some(b"k3"))
        .map(|r| String::from_utf8(r.record.value.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(values_of_k3, ["3", "13", "23", "33", "43", "53"]);
}

#[tokio::test]
async fn a_group_resumes_from_its_committed_offsets_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), "t", 2).await;
    let p = log.producer().unwrap();
    p.send(
        "t",
        (0..10).map(|i| record(&format!("k{i}"), "v")).collect(),
    )
    .await
    .unwrap();
    let mut c = log.consumer(group(&["t"], Some("g"))).await.unwrap();
    let first = c.poll(4, Duration::from_secs(5)).await.unwrap();
    assert_eq!(c.lag().await.unwrap(), 10 - first.len() as u64);
    let commits: Vec<_> = first
        .iter()
        .map(|r| (r.topic.to_string(), r.partition, r.offset + 1))
        .collect();
    c.commit(&commits).await.unwrap();
    // Read more without committing, then "crash".
    let _uncommitted = c.poll(100, Duration::from_secs(5)).await.unwrap();
    drop(c);
    drop(log);
    let log = EmbeddedLog::open(&dir.path().join("log.sqlite")).unwrap();
    let mut c = log.consumer(group(&["t"], Some("g"))).await.unwrap();
    let rest = drain(c.as_mut()).await;
    assert_eq!(
        rest.len() + first.len(),
        10,
        "uncommitted records come again, committed ones do not"
    );
    for r in &rest {
        assert!(!first
            .iter()
            .any(|f| f.partition == r.partition && f.offset == r.offset));
    }
    let mut other = log.consumer(group(&["t"], Some("other"))).await.unwrap();
    assert_eq!(
        drain(other.as_mut()).await.len(),
        10,
        "another group starts from the earliest"
    );
}

#[tokio::test]
async fn headers_tombstones_and_unkeyed_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), "t", 2).await;
    let p = log.producer().unwrap();
    let with_headers = Record {
        key: None,
        value: Some(vec![0xff, 0x00, 0x01]),
        headers: vec![("reason".into(), b"bad".to_vec()), ("empty".into(), vec![])],
    };
    p.send(
        "t",
        vec![
            with_headers.clone(),
            Record::keyed("k", None),
            Record::default(),
        ],
    )
    .await
    .unwrap();
    let mut c = log.consumer(group(&["t"], None)).await.unwrap();
    let all = drain(c.as_mut()).await;
    assert_eq!(all.len(), 3);
    assert!(all.iter().any(|r| r.record == with_headers));
    assert!(all
        .iter()
        .any(|r| r.record.key.as_deref() == Some(b"k") && r.record.value.is_none()));
    let partitions: std::collections::HashSet<_> = all
        .iter()
        .filter(|r| r.record.key.is_none())
        .map(|r| r.partition)
        .collect();
    assert_eq!(partitions.len(), 2, "unkeyed records are spread");
}

#[tokio::test]
async fn missing_topics_are_errors_and_creating_twice_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), "t", 3).await;
    log.create_topic("t", 5).await.unwrap();
    assert_eq!(log.topics().await.unwrap(), vec![("t".to_string(), 3)]);
    let e = log
        .producer()
        .unwrap()
        .send("nope", vec![record("k", "v")])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("\"nope\" does not exist"), "{e}");
    assert!(log.consumer(group(&["nope"], Some("g"))).await.is_err());
    assert!(log.create_topic("zero", 0).await.is_err());
}

#[tokio::test]
async fn a_poll_wakes_when_a_record_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), "t", 1).await;
    let mut c = log.consumer(group(&["t"], Some("g"))).await.unwrap();
    let p = log.producer().unwrap();
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        p.send("t", vec![record("k", "v")]).await.unwrap();
    });
    let got = c.poll(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.len(), 1);
    send.await.unwrap();
}

#[tokio::test]
async fn checkpoints_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), "t", 1).await;
    assert_eq!(log.load("capture").await.unwrap(), None);
    log.save("capture", "41").await.unwrap();
    log.save("capture", "42").await.unwrap();
    drop(log);
    let log = EmbeddedLog::open(&dir.path().join("log.sqlite")).unwrap();
    assert_eq!(log.load("capture").await.unwrap().as_deref(), Some("42"));
}
