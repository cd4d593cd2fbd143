//! The recommender over the embedded engines: what it suggests, what it dead-letters, and what
//! survives a crash at each point of a batch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brewline_core::debezium::TableSchema;
use brewline_core::generator::Tills;
use brewline_core::order::NewOrder;
use brewline_core::suggestion::{Lookups, RandomStrategy, Suggester};
use brewline_core::ReferenceData;
use brewline_embedded::DataDir;
use brewline_ports::{
    Capturable, Consumed, Consumer, Counted, Counters, EventLog, LookupStore, PortError, Producer,
    Record, SourceDb, Subscription,
};
use brewline_speed::capture::{Capture, CaptureSettings, Output};
use brewline_speed::recommender::{Engines, Recommender, RecommenderSettings};
use brewline_speed::stats::Stats;
use brewline_speed::{lookup_cache, StopWhen};
use serde_json::Value;
use tokio::sync::watch;

const ORDERS: &str = "mysql.coffee_shop.orders";
const LINES: &str = "mysql.coffee_shop.order_details";
const SUGGESTIONS: &str = "order_suggestions";
const DLQ: &str = "brewline.dlq";

fn reference() -> ReferenceData {
    ReferenceData::bundled().unwrap()
}

/// Generated orders, every third one made eligible (a diamond customer paying with ACB).
fn orders(n: u64) -> Vec<NewOrder> {
    Tills::new(&reference(), 5)
        .unwrap()
        .orders(0, n)
        .enumerate()
        .map(|(i, mut o)| {
            if i % 3 == 0 {
                o.customer_id = 1 + (i as i64 % 15_000);
                o.payment_method_id = 9;
            }
            o
        })
        .collect()
}

fn eligible_ids(orders: &[NewOrder]) -> BTreeSet<String> {
    let lookups = Lookups::from_reference(&reference(), "ACB");
    orders
        .iter()
        .filter(|o| {
            lookups.diamond_customers.contains(&o.customer_id)
                && lookups.acb_payment_methods.contains(&o.payment_method_id)
        })
        .map(|o| o.id.clone())
        .collect()
}

async fn prepared(root: &Path) -> DataDir {
    let dir = DataDir::open(root, Duration::from_secs(90)).unwrap();
    dir.source.seed_reference(&reference()).await.unwrap();
    lookup_cache::refresh(&dir.source, &dir.state, "ACB")
        .await
        .unwrap();
    for t in [ORDERS, LINES, SUGGESTIONS] {
        dir.log.create_topic(t, 3).await.unwrap();
    }
    dir.log.create_topic(DLQ, 1).await.unwrap();
    dir
}

fn drained() -> StopWhen {
    let (_a, drained) = watch::channel(true);
    let (_b, shutdown) = watch::channel(false);
    StopWhen { drained, shutdown }
}

/// Writes orders and captures them into the CDC topics (with or without schema).
async fn write_and_capture(dir: &DataDir, orders: &[NewOrder], schemas: bool) {
    dir.source.insert_orders(orders).await.unwrap();
    let capture = Capture::new(
        CaptureSettings {
            topic_prefix: "mysql".into(),
            with_schema: schemas,
            connector: "mysql".into(),
            checkpoint: "capture".into(),
            batch: 100,
            tables: vec![
                (TableSchema::orders("mysql", "coffee_shop"), "id".into()),
                (
                    TableSchema::order_details("mysql", "coffee_shop"),
                    "order_id".into(),
                ),
            ],
            dead_letter_topic: DLQ.into(),
        },
        Arc::new(Stats::default()),
    );
    let position = brewline_ports::CheckpointStore::load(&dir.log, "capture")
        .await
        .unwrap();
    let mut feed = dir.source.follow(position).await.unwrap();
    let producer = dir.log.producer().unwrap();
    capture
        .run(
            feed.as_mut(),
            Output::Sent(producer.as_ref()),
            &dir.log,
            drained(),
        )
        .await
        .unwrap();
}

fn config(batch: usize) -> RecommenderSettings {
    RecommenderSettings {
        orders_topic: ORDERS.into(),
        order_details_topic: LINES.into(),
        suggestions_topic: SUGGESTIONS.into(),
        dead_letter_topic: DLQ.into(),
        group: "realtime-recs".into(),
        batch,
        poll_wait: Duration::from_millis(10),
        expire_every: Duration::from_secs(60),
        order_ttl: Duration::from_secs(90),
        lookups_every: Duration::from_millis(0),
    }
}

/// Runs one recommender worker until the topics are drained, with `producer` for its output.
async fn recommend(
    dir: &DataDir,
    batch: usize,
    producer: &dyn Producer,
) -> (Result<(), PortError>, Arc<Stats>) {
    recommend_with_seed(dir, batch, producer, 11).await
}

async fn recommend_with_seed(
    dir: &DataDir,
    batch: usize,
    producer: &dyn Producer,
    seed: u64,
) -> (Result<(), PortError>, Arc<Stats>) {
    recommend_with(
        dir, batch, producer, seed, &dir.state, &dir.state, &dir.state,
    )
    .await
}

async fn recommend_with(
    dir: &DataDir,
    batch: usize,
    producer: &dyn Producer,
    seed: u64,
    orders: &dyn brewline_ports::OrderStore,
    lookups: &dyn LookupStore,
    counters: &dyn Counters,
) -> (Result<(), PortError>, Arc<Stats>) {
    let mut consumer = member(dir).await;
    let engines = Engines {
        consumer: consumer.as_mut(),
        producer,
        orders,
        lookups,
        counters,
    };
    recommend_on(engines, batch, seed).await
}

/// A member of the recommenders' group.
async fn member(dir: &DataDir) -> Box<dyn Consumer> {
    dir.log
        .consumer(Subscription {
            topics: vec![ORDERS.into(), LINES.into()],
            group: Some("realtime-recs".into()),
            from: Vec::new(),
        })
        .await
        .unwrap()
}

/// Runs one recommender worker on `engines` until the topics are drained.
async fn recommend_on(
    mut engines: Engines<'_>,
    batch: usize,
    seed: u64,
) -> (Result<(), PortError>, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let suggester = Suggester::new(seed, Box::new(RandomStrategy));
    let mut r = Recommender::new(config(batch), suggester, stats.clone());
    (r.run(&mut engines, drained()).await, stats)
}

/// Every record of a topic, as (key, value).
async fn read_all(
    dir: &DataDir,
    topic: &str,
) -> Vec<(Option<String>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>)> {
    let mut c = dir
        .log
        .consumer(Subscription {
            topics: vec![topic.into()],
            group: None,
            from: Vec::new(),
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let batch = c.poll(1000, Duration::from_millis(100)).await.unwrap();
        if batch.is_empty() && c.lag().await.unwrap() == 0 {
            return out;
        }
        for r in batch {
            let key = r.record.key.map(|k| String::from_utf8(k).unwrap());
            out.push((key, r.record.value, r.record.headers));
        }
    }
}

/// Suggestions per order id.
async fn suggestions(dir: &DataDir) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (key, value, _) in read_all(dir, SUGGESTIONS).await {
        let v: Value = serde_json::from_slice(&value.unwrap()).unwrap();
        assert_eq!(key.as_deref(), v["order_id"].as_str(), "keyed by order id");
        out.entry(key.unwrap()).or_default().push(v);
    }
    out
}

#[tokio::test]
async fn every_eligible_order_gets_one_suggestion_and_no_other_order_any() {
    for schemas in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let dir = prepared(root.path()).await;
        let os = orders(600);
        write_and_capture(&dir, &os, schemas).await;
        let producer = dir.log.producer().unwrap();
        let (result, stats) = recommend(&dir, 64, producer.as_ref()).await;
        result.unwrap();
        let got = suggestions(&dir).await;
        let expected = eligible_ids(&os);
        assert_eq!(expected.len(), 200);
        assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), expected);
        assert!(got.values().all(|v| v.len() == 1));
        for (id, v) in &got {
            let order = os.iter().find(|o| &o.id == id).unwrap();
            let product = v[0]["product_id"].as_str().unwrap();
            assert!(
                !order.lines.iter().any(|l| l.product_id == product),
                "not in the order"
            );
        }
        assert_eq!(Stats::get(&stats.completed), 600);
        assert_eq!(Stats::get(&stats.eligible), 200);
        assert_eq!(Stats::get(&stats.suggestions), 200);
        assert_eq!(Stats::get(&stats.dead_letters), 0);
        assert!(stats.latency().count == 200);
    }
}

#[tokio::test]
async fn malformed_events_are_dead_lettered_and_processing_goes_on() {
    let root = tempfile::tempdir().unwrap();
    let dir = prepared(root.path()).await;
    let producer = dir.log.producer().unwrap();
    let bad = |v: &[u8]| Record::keyed("bad", Some(v.to_vec()));
    producer
        .send(
            ORDERS,
            vec![
                bad(b"not json at all"),
                bad(br#"{"hello":"world"}"#),
                bad(br#"{"payload":{"op":"z","after":{}}}"#),
                bad(br#"{"op":"c","after":{"id":"x","store_id":"three","payment_method_id":9,"num_products":1}}"#),
                Record::keyed("gone", None),
            ],
        )
        .await
        .unwrap();
    producer
        .send(LINES, vec![bad(&[0xff, 0xfe])])
        .await
        .unwrap();
    let os = orders(30);
    write_and_capture(&dir, &os, false).await;
    let (result, stats) = recommend(&dir, 16, producer.as_ref()).await;
    result.unwrap();
    assert_eq!(
        suggestions(&dir).await.len(),
        eligible_ids(&os).len(),
        "good events still flow"
    );
    let dead = read_all(&dir, DLQ).await;
    assert_eq!(dead.len(), 5, "the tombstone is not an error");
    assert_eq!(Stats::get(&stats.dead_letters), 5);
    let header = |h: &[(String, Vec<u8>)], name: &str| {
        String::from_utf8(h.iter().find(|(k, _)| k == name).unwrap().1.clone()).unwrap()
    };
    let reasons: BTreeSet<String> = dead
        .iter()
        .map(|(_, _, h)| header(h, "brewline.error.reason"))
        .collect();
    assert!(reasons
        .iter()
        .any(|r| r.contains("not a Debezium change event")));
    assert!(reasons.iter().any(|r| r.contains("no `payload`")));
    assert!(reasons.iter().any(|r| r.contains("unknown op \"z\"")));
    assert!(reasons.iter().any(|r| r.contains("invalid type")));
    let binary = dead
        .iter()
        .find(|(_, v, _)| v.as_deref() == Some(&[0xff, 0xfe][..]))
        .unwrap();
    assert_eq!(
        header(&binary.2, "brewline.error.topic"),
        LINES,
        "original bytes, topic kept"
    );
    assert_eq!(header(&binary.2, "brewline.error.offset"), "0");
}

/// The embedded lookup store, made to lose its lookups after the first load (a Redis flushed
/// or restarted without persistence): no version and empty sets from then on.
struct Losing<'a> {
    inner: &'a dyn LookupStore,
    loads: AtomicUsize,
}

#[async_trait]
impl LookupStore for Losing<'_> {
    async fn publish(&self, lookups: &Lookups) -> brewline_ports::Result<u64> {
        self.inner.publish(lookups).await
    }

    async fn version(&self) -> brewline_ports::Result<u64> {
        if self.loads.load(Ordering::SeqCst) == 0 {
            self.inner.version().await
        } else {
            Ok(0)
        }
    }

    async fn load(&self) -> brewline_ports::Result<(Lookups, u64)> {
        if self.loads.fetch_add(1, Ordering::SeqCst) == 0 {
            self.inner.load().await
        } else {
            Ok((Lookups::default(), 0))
        }
    }
}

#[tokio::test]
async fn lookups_lost_by_the_store_mid_run_are_not_believed_and_say_so() {
    let root = tempfile::tempdir().unwrap();
    let dir = prepared(root.path()).await;
    let os = orders(300);
    write_and_capture(&dir, &os, false).await;
    let producer = dir.log.producer().unwrap();
    let losing = Losing {
        inner: &dir.state,
        loads: AtomicUsize::new(0),
    };
    let (result, stats) = recommend_with(
        &dir,
        16,
        producer.as_ref(),
        11,
        &dir.state,
        &losing,
        &dir.state,
    )
    .await;
    result.unwrap();
    assert!(
        losing.loads.load(Ordering::SeqCst) >= 2,
        "the lost lookups were read"
    );
    let got = suggestions(&dir).await;
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        eligible_ids(&os),
        "every eligible order decided with the lookups in force"
    );
    let degraded = stats.degraded().expect("degraded");
    assert!(degraded.contains("no lookups"), "{degraded}");
    assert!(Stats::get(&stats.lookups_version) > 0);
}

#[tokio::test]
async fn a_recommender_without_lookups_waits_for_them() {
    let root = tempfile::tempdir().unwrap();
    let dir = DataDir::open(root.path(), Duration::from_secs(90)).unwrap();
    dir.source.seed_reference(&reference()).await.unwrap();
    for t in [ORDERS, LINES, SUGGESTIONS] {
        dir.log.create_topic(t, 3).await.unwrap();
    }
    dir.log.create_topic(DLQ, 1).await.unwrap();
    let os = orders(60);
    write_and_capture(&dir, &os, false).await;
    // Lookups that lack the ACB payment methods are no lookups to decide with either.
    let mut half = Lookups::from_reference(&reference(), "ACB");
    half.acb_payment_methods.clear();
    dir.state.publish(&half).await.unwrap();
    let producer = dir.log.producer().unwrap();
    let publish_later = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            suggestions(&dir).await.is_empty(),
            "nothing decided while waiting"
        );
        lookup_cache::refresh(&dir.source, &dir.state, "ACB")
            .await
            .unwrap();
    };
    let ((result, stats), ()) = tokio::join!(recommend(&dir, 16, producer.as_ref()), publish_later);
    result.unwrap();
    assert_eq!(
        suggestions(&dir)
            .await
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>(),
        eligible_ids(&os)
    );
    assert_eq!(stats.degraded(), None, "whole lookups came");
}

/// The embedded counters, made to fail at the n-th count of records, before or after it is
/// written: the process "crashes" there.
struct CrashingCounters<'a> {
    inner: &'a dyn Counters,
    at: usize,
    before: bool,
    calls: AtomicUsize,
}

#[async_trait]
impl Counters for CrashingCounters<'_> {
    async fn add(&self, deltas: &[(&str, u64)]) -> brewline_ports::Result<()> {
        self.inner.add(deltas).await
    }

    async fn get(&self) -> brewline_ports::Result<BTreeMap<String, u64>> {
        self.inner.get().await
    }

    async fn add_counted(
        &self,
        scope: &str,
        counts: &[Counted],
        through: &[(String, i32, i64)],
    ) -> brewline_ports::Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n == self.at && self.before {
            return Err(PortError::fatal("test", "crash before counting"));
        }
        self.inner.add_counted(scope, counts, through).await?;
        if n == self.at {
            return Err(PortError::fatal("test", "crash after counting"));
        }
        Ok(())
    }

    async fn counted_through(
        &self,
        scope: &str,
        partitions: &[(String, i32)],
    ) -> brewline_ports::Result<Vec<i64>> {
        self.inner.counted_through(scope, partitions).await
    }
}

#[tokio::test]
async fn counters_are_exact_through_a_crash_on_either_side_of_counting() {
    for before in [true, false] {
        let root = tempfile::tempdir().unwrap();
        let dir = prepared(root.path()).await;
        let os = orders(300);
        write_and_capture(&dir, &os, false).await;
        let producer = dir.log.producer().unwrap();
        let crashing = CrashingCounters {
            inner: &dir.state,
            at: 3,
            before,
            calls: AtomicUsize::new(0),
        };
        let (crashed, _) = recommend_with(
            &dir,
            16,
            producer.as_ref(),
            11,
            &dir.state,
            &dir.state,
            &crashing,
        )
        .await;
        assert!(crashed.is_err(), "the worker stopped at the crash");
        let (result, _) = recommend(&dir, 16, producer.as_ref()).await;
        result.unwrap();
        let counters = dir.state.get().await.unwrap();
        let expected = eligible_ids(&os).len() as u64;
        assert_eq!(counters["orders_completed"], 300, "before: {before}");
        assert_eq!(counters["orders_eligible"], expected, "before: {before}");
        assert_eq!(counters["suggestions"], expected, "before: {before}");
    }
}

/// The embedded producer, made to fail at a chosen moment: the process "crashes" there.
struct Crashing {
    inner: Box<dyn Producer>,
    /// Fail the n-th send of suggestions (0-based)…
    at: usize,
    /// …before it reaches the log (true) or after it was acknowledged (false).
    before: bool,
    sends: AtomicUsize,
}

#[async_trait]
impl Producer for Crashing {
    async fn send(&self, topic: &str, records: Vec<Record>) -> brewline_ports::Result<()> {
        if topic != SUGGESTIONS {
            return self.inner.send(topic, records).await;
        }
        let n = self.sends.fetch_add(1, Ordering::SeqCst);
        if n == self.at && self.before {
            return Err(PortError::fatal("test", "crash before the send"));
        }
        self.inner.send(topic, records).await?;
        if n == self.at {
            return Err(PortError::fatal("test", "crash after the send"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_crash_at_any_point_of_a_batch_loses_no_suggestion_and_repeats_only_identically() {
    for before in [true, false] {
        let root = tempfile::tempdir().unwrap();
        let os = orders(900);
        {
            let dir = prepared(root.path()).await;
            write_and_capture(&dir, &os, false).await;
            let crashing = Crashing {
                inner: dir.log.producer().unwrap(),
                at: 3,
                before,
                sends: AtomicUsize::new(0),
            };
            let (result, _) = recommend(&dir, 50, &crashing).await;
            assert!(result.is_err(), "the worker stopped at the crash");
            // Everything is dropped here: connections, state, the worker.
        }
        // Restarted with another seed: a replay must repeat what was sent, not draw it again.
        let dir = DataDir::open(root.path(), Duration::from_secs(90)).unwrap();
        let producer = dir.log.producer().unwrap();
        let (result, stats) = recommend_with_seed(&dir, 50, producer.as_ref(), 99).await;
        result.unwrap();
        assert!(
            Stats::get(&stats.replayed) >= 1,
            "the completing events of the crashed batch came again"
        );
        let got = suggestions(&dir).await;
        assert_eq!(
            got.keys().cloned().collect::<BTreeSet<_>>(),
            eligible_ids(&os),
            "none lost"
        );
        for (id, copies) in &got {
            assert!(
                copies.iter().all(|c| c == &copies[0]),
                "order {id}: repeats are identical"
            );
            if before {
                assert_eq!(
                    copies.len(),
                    1,
                    "nothing was sent before the crash, so nothing repeats"
                );
            }
        }
    }
}

#[tokio::test]
async fn stopping_half_way_and_reopening_loses_nothing_and_repeats_nothing() {
    let root = tempfile::tempdir().unwrap();
    let os = orders(1200);
    {
        let dir = prepared(root.path()).await;
        write_and_capture(&dir, &os[..700], false).await;
        let producer = dir.log.producer().unwrap();
        recommend(&dir, 128, producer.as_ref()).await.0.unwrap();
    }
    let dir = DataDir::open(root.path(), Duration::from_secs(90)).unwrap();
    write_and_capture(&dir, &os[700..], false).await;
    let producer = dir.log.producer().unwrap();
    let (result, stats) = recommend(&dir, 128, producer.as_ref()).await;
    result.unwrap();
    assert_eq!(
        Stats::get(&stats.completed),
        500,
        "the second run handles only the new orders"
    );
    let got = suggestions(&dir).await;
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        eligible_ids(&os)
    );
    assert!(got.values().all(|v| v.len() == 1), "none suggested twice");
    let change_events = read_all(&dir, ORDERS).await.len() + read_all(&dir, LINES).await.len();
    let lines: usize = os.iter().map(|o| o.lines.len()).sum();
    assert_eq!(
        change_events,
        os.len() + lines,
        "capture resumed without repeating or skipping"
    );
}

#[tokio::test]
async fn a_cancelled_order_gets_no_suggestion_and_written_back_suggestions_trigger_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = prepared(root.path()).await;
    let os: Vec<NewOrder> = orders(60)
        .into_iter()
        .filter(|o| o.lines.len() >= 2)
        .collect();
    let eligible: Vec<&NewOrder> = os
        .iter()
        .filter(|o| eligible_ids(&os).contains(&o.id))
        .collect();
    assert!(!eligible.is_empty());
    let victim = eligible[0];
    // The order row arrives; before its lines do, the order is deleted.
    dir.source
        .execute(&format!(
            "INSERT INTO orders VALUES ('{id}', 0, {c}, 1, 9, {n}, 'new');
             INSERT INTO order_details VALUES ('{id}', '{p}', 1, 0, 1, 0);
             DELETE FROM order_details WHERE order_id = '{id}';
             DELETE FROM orders WHERE id = '{id}';",
            id = "cancelled-1",
            c = victim.customer_id,
            n = 2,
            p = victim.lines[0].product_id
        ))
        .await
        .unwrap();
    write_and_capture(&dir, &os, false).await;
    let producer = dir.log.producer().unwrap();
    recommend(&dir, 32, producer.as_ref()).await.0.unwrap();
    let got = suggestions(&dir).await;
    assert!(!got.contains_key("cancelled-1"));
    // Accept a suggestion: written back as a suggested line, it changes nothing downstream.
    let (id, s) = got.iter().next().unwrap();
    dir.source
        .execute(&format!(
            "INSERT INTO order_details VALUES ('{id}', '{}', 1, {}, {}, 1)",
            s[0]["product_id"].as_str().unwrap(),
            s[0]["discount_percent"],
            s[0]["subtotal"]
        ))
        .await
        .unwrap();
    write_and_capture(&dir, &[], false).await;
    let (result, stats) = recommend(&dir, 32, producer.as_ref()).await;
    result.unwrap();
    assert_eq!(Stats::get(&stats.line_events), 1, "the write-back was read");
    assert_eq!(
        Stats::get(&stats.completed) + Stats::get(&stats.replayed),
        0
    );
    assert_eq!(suggestions(&dir).await, got, "and triggered nothing");
}

#[tokio::test]
async fn a_line_whose_product_changes_before_completion_counts_as_the_new_product() {
    let root = tempfile::tempdir().unwrap();
    let dir = prepared(root.path()).await;
    // A diamond customer paying with ACB; two lines wanted; line A becomes B, then C arrives.
    dir.source
        .execute(
            "INSERT INTO orders VALUES ('moved', 0, 7, 1, 9, 2, 'new');
             INSERT INTO order_details VALUES ('moved', 'CF01', 1, 0, 30000, 0);",
        )
        .await
        .unwrap();
    dir.source
        .execute("UPDATE order_details SET product_id = 'T01' WHERE order_id = 'moved'")
        .await
        .unwrap();
    dir.source
        .execute("INSERT INTO order_details VALUES ('moved', 'C01', 1, 0, 40000, 0)")
        .await
        .unwrap();
    write_and_capture(&dir, &[], false).await;
    let producer = dir.log.producer().unwrap();
    let (result, stats) = recommend(&dir, 16, producer.as_ref()).await;
    result.unwrap();
    assert_eq!(Stats::get(&stats.completed), 1);
    let state = dir.state.order("moved").await.unwrap().unwrap();
    assert_eq!(
        state.products,
        ["C01", "T01"],
        "CF01 left the order when it became T01"
    );
    let got = suggestions(&dir).await;
    let product = got["moved"][0]["product_id"].as_str().unwrap();
    assert!(
        product != "T01" && product != "C01",
        "suggested {product}, already in the order"
    );
}

#[tokio::test]
async fn a_record_the_log_refuses_is_dead_lettered_cut_short_and_the_rest_goes_on() {
    use brewline_speed::dead_letter::{
        send_or_dead_letter, MAX_DEAD_LETTER_VALUE, SOURCE_HEADER, TRUNCATED_HEADER,
    };
    let root = tempfile::tempdir().unwrap();
    let dir = prepared(root.path()).await;
    let producer = dir.log.producer().unwrap();
    let huge = vec![b'x'; 2 * brewline_ports::MAX_RECORD_BYTES];
    let records = vec![
        Record::keyed("a", Some(b"1".to_vec())),
        Record::keyed("b", Some(huge.clone())),
        Record::keyed("c", Some(b"2".to_vec())),
    ];
    let origin = |i: usize| {
        vec![(
            SOURCE_HEADER.to_string(),
            format!("change {i}").into_bytes(),
        )]
    };
    let dead = send_or_dead_letter(producer.as_ref(), SUGGESTIONS, &records, DLQ, origin)
        .await
        .unwrap();
    assert_eq!(dead, 1);
    let sent: Vec<_> = read_all(&dir, SUGGESTIONS).await;
    let keys: BTreeSet<_> = sent.iter().map(|(k, _, _)| k.clone().unwrap()).collect();
    assert_eq!(keys, ["a", "c"].map(String::from).into());
    let letters = read_all(&dir, DLQ).await;
    assert_eq!(letters.len(), 1);
    let (key, value, headers) = &letters[0];
    assert_eq!(key.as_deref(), Some("b"));
    assert_eq!(value.as_ref().unwrap().len(), MAX_DEAD_LETTER_VALUE);
    let h = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    };
    assert_eq!(h(TRUNCATED_HEADER), Some(huge.len().to_string()));
    assert_eq!(h(SOURCE_HEADER).as_deref(), Some("change 1"));
    assert!(h("brewline.error.reason").unwrap().contains("too large"));
}

/// An order store that loses everything once, after `lose_at` batches: from then on a new,
/// empty store (a Redis flushed, or restarted without persistence), found out at the next
/// write as the Redis store finds it out (its epoch is gone).
struct Forgetful {
    before: brewline_embedded::EmbeddedState,
    after: brewline_embedded::EmbeddedState,
    lose_at: usize,
    applies: AtomicUsize,
}

#[async_trait]
impl brewline_ports::OrderStore for Forgetful {
    async fn apply(
        &self,
        changes: &[brewline_ports::Applied],
        suggest: brewline_ports::Suggest<'_>,
    ) -> brewline_ports::Result<Vec<brewline_core::Step>> {
        let n = self.applies.fetch_add(1, Ordering::SeqCst);
        match n.cmp(&self.lose_at) {
            std::cmp::Ordering::Less => self.before.apply(changes, suggest).await,
            std::cmp::Ordering::Equal => {
                Err(PortError::state_lost("test", "the store was flushed"))
            }
            std::cmp::Ordering::Greater => self.after.apply(changes, suggest).await,
        }
    }

    async fn expire(&self) -> brewline_ports::Result<Vec<String>> {
        self.after.expire().await
    }
}

#[tokio::test]
async fn order_state_lost_mid_run_is_rebuilt_from_the_log_and_no_suggestion_is_lost() {
    let root = tempfile::tempdir().unwrap();
    let dir = prepared(root.path()).await;
    let os = orders(600);
    write_and_capture(&dir, &os, false).await;
    let emptied = tempfile::tempdir().unwrap();
    let store = Forgetful {
        before: dir.state.clone(),
        after: brewline_embedded::EmbeddedState::open(
            &emptied.path().join("state.sqlite"),
            Duration::from_secs(90),
        )
        .unwrap(),
        lose_at: 40,
        applies: AtomicUsize::new(0),
    };
    let producer = dir.log.producer().unwrap();
    let (result, stats) = recommend_with(
        &dir,
        16,
        producer.as_ref(),
        11,
        &store,
        &dir.state,
        &dir.state,
    )
    .await;
    result.unwrap();
    assert!(
        store.applies.load(Ordering::SeqCst) > 41,
        "the loss came mid-run"
    );
    assert_eq!(Stats::get(&stats.state_rebuilds), 1);
    let got = suggestions(&dir).await;
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        eligible_ids(&os),
        "every eligible order completed, those open at the loss too"
    );
    for (order, copies) in &got {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "{order}: {copies:?}"
        );
    }
    let counters = dir.state.get().await.unwrap();
    assert_eq!(counters["orders_completed"], 600, "each order counted once");
}

/// A group member whose polls are scripted: with `moves_at`, its partitions move to another
/// member at that poll and come back after that member handled a few batches (as when the
/// member's session timed out), and it reads them again from the committed offsets, as
/// Kafka's rebalance makes it; with `leaves_after`, it leaves its group after that many polls.
struct Member<'a> {
    inner: Box<dyn Consumer>,
    polls: usize,
    moves_at: Option<(usize, &'a DataDir)>,
    leaves_after: Option<usize>,
    assignments: u64,
}

impl<'a> Member<'a> {
    async fn new(dir: &'a DataDir) -> Member<'a> {
        Member {
            inner: member(dir).await,
            polls: 0,
            moves_at: None,
            leaves_after: None,
            assignments: 0,
        }
    }

    /// Another member takes the partitions, handles a few batches and leaves.
    async fn other_member_meanwhile(dir: &DataDir) {
        let mut other = Member {
            leaves_after: Some(25),
            ..Member::new(dir).await
        };
        let producer = dir.log.producer().unwrap();
        let engines = Engines {
            consumer: &mut other,
            producer: producer.as_ref(),
            orders: &dir.state,
            lookups: &dir.state,
            counters: &dir.state,
        };
        let (left, stats) = recommend_on(engines, 16, 11).await;
        assert!(left.is_err(), "the other member left after its batches");
        assert!(Stats::get(&stats.suggestions) > 0, "it suggested meanwhile");
    }
}

#[async_trait]
impl Consumer for Member<'_> {
    async fn poll(&mut self, max: usize, wait: Duration) -> brewline_ports::Result<Vec<Consumed>> {
        self.polls += 1;
        if self.leaves_after.is_some_and(|n| self.polls > n) {
            return Err(PortError::fatal("test", "left the group"));
        }
        if let Some((at, dir)) = self.moves_at {
            if self.polls == at {
                Member::other_member_meanwhile(dir).await;
                self.inner.rewind().await?;
                self.assignments += 2;
            }
        }
        self.inner.poll(max, wait).await
    }

    async fn commit(&mut self, next_offsets: &[(String, i32, i64)]) -> brewline_ports::Result<()> {
        self.inner.commit(next_offsets).await
    }

    async fn lag(&mut self) -> brewline_ports::Result<u64> {
        self.inner.lag().await
    }

    async fn rewind(&mut self) -> brewline_ports::Result<()> {
        self.inner.rewind().await
    }

    fn assignments(&self) -> u64 {
        self.assignments
    }
}

#[tokio::test]
async fn partitions_that_move_away_and_back_are_read_again_without_repeating_the_other_members_work(
) {
    // The embedded log hands out the orders topic before the lines: the moves come once
    // orders complete, at two points of the read-ahead.
    for at in [30, 41] {
        let root = tempfile::tempdir().unwrap();
        let dir = prepared(root.path()).await;
        let os = orders(300);
        write_and_capture(&dir, &os, false).await;
        let producer = dir.log.producer().unwrap();
        let mut moving = Member {
            moves_at: Some((at, &dir)),
            ..Member::new(&dir).await
        };
        let engines = Engines {
            consumer: &mut moving,
            producer: producer.as_ref(),
            orders: &dir.state,
            lookups: &dir.state,
            counters: &dir.state,
        };
        let (result, stats) = recommend_on(engines, 16, 11).await;
        result.unwrap();
        assert!(moving.polls > at, "the move came mid-run");
        assert_eq!(Stats::get(&stats.rebalances), 1, "at {at}");
        let got = suggestions(&dir).await;
        assert_eq!(
            got.keys().cloned().collect::<BTreeSet<_>>(),
            eligible_ids(&os),
            "at {at}: none lost"
        );
        let repeated: Vec<_> = got.iter().filter(|(_, c)| c.len() > 1).collect();
        assert!(
            repeated.is_empty(),
            "at {at}: {} orders suggested again after the move, e.g. {:?}",
            repeated.len(),
            repeated.first()
        );
        let counters = dir.state.get().await.unwrap();
        assert_eq!(counters["orders_completed"], 300, "each order counted once");
    }
}
