use super::*;
use brewline_ports::conformance;
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
        from: Vec::new(),
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
async fn keys_land_in_kafkas_partition_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("log.sqlite")).unwrap();
    conformance::keys_land_in_kafkas_partition_in_order(&log, "t").await;
    let mut c = log.consumer(group(&["t"], None)).await.unwrap();
    assert_eq!(
        drain(c.as_mut()).await.len(),
        60,
        "the end of the log is known"
    );
}

#[tokio::test]
async fn a_group_resumes_from_its_committed_offsets_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sqlite");
    conformance::a_group_resumes_from_its_committed_offsets(
        || EmbeddedLog::open(&path).unwrap(),
        "t",
        "g",
    )
    .await;
    let log = EmbeddedLog::open(&path).unwrap();
    let mut c = log.consumer(group(&["t"], Some("new"))).await.unwrap();
    let first = c.poll(4, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        c.lag().await.unwrap(),
        40 - first.len() as u64,
        "lag counts what is left"
    );
}

#[tokio::test]
async fn headers_tombstones_and_unkeyed_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("log.sqlite")).unwrap();
    conformance::headers_tombstones_and_unkeyed_records_survive(&log, "t").await;
}

#[tokio::test]
async fn a_member_rewinds_to_its_committed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("log.sqlite")).unwrap();
    conformance::a_member_rewinds_to_its_committed_offsets(&log, "t", "g").await;
}

#[tokio::test]
async fn an_oversized_record_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("log.sqlite")).unwrap();
    conformance::an_oversized_record_is_refused_alone(&log, "t").await;
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

#[tokio::test]
async fn a_reader_starts_where_it_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("log.sqlite")).unwrap();
    conformance::a_reader_starts_where_it_is_told(&log, "t").await;
}
