//! The behaviour every implementation of the state ports must show, as test functions that an
//! engine's test suite calls with its own store: the embedded store and Redis run the same
//! cases. Order ids and key names start with `scope`, so runs against a shared server do not
//! see each other.
//!
//! These functions panic on a failed expectation, as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use brewline_core::assembly::{EventRef, OrderChange, Step};
use brewline_core::order::{CompletedOrder, OrderHeader};
use brewline_core::suggestion::{AffinityTable, Lookups, ProductInfo, Suggestion};

use crate::{Applied, Counters, LookupStore, OrderStore, SourceDb};

fn at(offset: i64) -> EventRef {
    EventRef {
        topic: "t".into(),
        partition: 0,
        offset,
    }
}

pub fn placed(order: &str, n: i64) -> OrderChange {
    OrderChange::Placed(OrderHeader {
        order_id: order.into(),
        customer_id: Some(1),
        store_id: 1,
        payment_method_id: 9,
        num_products: n,
    })
}

pub fn line(order: &str, p: &str) -> OrderChange {
    OrderChange::LineAdded {
        order_id: order.into(),
        product_id: p.into(),
    }
}

pub fn applied(change: OrderChange, offset: i64) -> Applied {
    Applied {
        change,
        at: at(offset),
    }
}

/// Makes no suggestion.
pub fn none(_: &CompletedOrder) -> Option<Suggestion> {
    None
}

/// Suggests product `X` to every order.
pub fn suggest_x(order: &CompletedOrder) -> Option<Suggestion> {
    Some(Suggestion {
        order_id: order.id().to_string(),
        product_id: "X".into(),
        product_name: "X".into(),
        quantity: 1,
        unit_price: 100,
        discount_percent: 10,
        subtotal: 90,
        is_suggestion: true,
        customer_id: order.header.customer_id,
        store_id: order.header.store_id,
        payment_method_id: order.header.payment_method_id,
        order_products: order.products.clone(),
        strategy: "random".into(),
    })
}

/// State carries over between batches (and between handles, made by `reopen`); the completing
/// change completes once with its suggestion; its redelivery replays that suggestion even
/// when the suggester would now make another; a duplicate elsewhere does nothing.
pub async fn completes_once_and_replays_the_recorded_suggestion<S: OrderStore>(
    scope: &str,
    reopen: impl Fn() -> S,
) {
    let o = format!("{scope}-o1");
    let s = reopen();
    let steps = s
        .apply(
            &[applied(placed(&o, 2), 0), applied(line(&o, "A"), 1)],
            &none,
        )
        .await
        .unwrap();
    assert_eq!(steps, vec![Step::Pending, Step::Pending]);
    drop(s);
    let s = reopen();
    let steps = s
        .apply(&[applied(line(&o, "B"), 2)], &suggest_x)
        .await
        .unwrap();
    let Step::Completed(order, Some(made)) = &steps[0] else {
        panic!("completes with a suggestion: {steps:?}");
    };
    assert_eq!(order.products, ["A", "B"]);
    drop(s);
    let s = reopen();
    let steps = s
        .apply(
            &[applied(line(&o, "B"), 2), applied(line(&o, "B"), 9)],
            &none,
        )
        .await
        .unwrap();
    assert!(
        matches!(&steps[0], Step::Replayed(again, Some(s)) if again == order && s == made),
        "{steps:?}"
    );
    assert_eq!(steps[1], Step::AlreadyComplete);
}

/// Two handles applying the changes of the same orders concurrently: each order completes
/// exactly once.
pub async fn concurrent_workers_complete_each_order_once<S: OrderStore + Clone + 'static>(
    scope: &str,
    a: S,
    b: S,
) {
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let order = format!("{scope}-o{}", i / 4);
        tasks.push(tokio::spawn(async move {
            let change = match i % 4 {
                0 => placed(&order, 3),
                k => line(&order, &format!("P{k}")),
            };
            store
                .apply(&[applied(change, i)], &suggest_x)
                .await
                .unwrap()
        }));
    }
    let mut completed = 0;
    for t in tasks {
        completed += t
            .await
            .unwrap()
            .iter()
            .filter(|s| matches!(s, Step::Completed(..)))
            .count();
    }
    assert_eq!(
        completed, 50,
        "each of the 50 orders completes exactly once"
    );
}

/// With a TTL of `ttl`: an order left open is reported by `expire` once, after the TTL; a
/// complete one never; a late line after expiry starts afresh.
pub async fn open_orders_that_expire_are_reported_once<S: OrderStore>(
    scope: &str,
    store: &S,
    ttl: Duration,
) {
    let (done, open) = (format!("{scope}-done"), format!("{scope}-open"));
    store
        .apply(
            &[
                applied(placed(&done, 1), 0),
                applied(line(&done, "A"), 1),
                applied(placed(&open, 2), 2),
                applied(line(&open, "A"), 3),
            ],
            &none,
        )
        .await
        .unwrap();
    assert!(
        store.expire().await.unwrap().is_empty(),
        "nothing is old yet"
    );
    tokio::time::sleep(ttl + ttl / 2).await;
    assert_eq!(store.expire().await.unwrap(), vec![open.clone()]);
    assert!(store.expire().await.unwrap().is_empty(), "reported once");
    let steps = store
        .apply(&[applied(line(&open, "B"), 4)], &none)
        .await
        .unwrap();
    assert_eq!(steps, vec![Step::Pending], "a late line starts afresh");
}

fn lookups(customers: &[i64], products: &[(&str, i64)]) -> Lookups {
    Lookups {
        diamond_customers: customers.iter().copied().collect(),
        acb_payment_methods: [9, 11].into_iter().collect(),
        products: products
            .iter()
            .map(|(id, price)| {
                let info = ProductInfo {
                    name: format!("name of {id}"),
                    unit_price: *price,
                };
                (id.to_string(), info)
            })
            .collect(),
        affinity: AffinityTable::default(),
    }
}

/// Lookups are replaced whole, with a new version each time: products dropped from the menu
/// and emptied sets are gone after the next publish.
pub async fn lookups_are_replaced_whole_with_a_new_version<S: LookupStore>(store: &S) {
    let start = store.version().await.unwrap();
    let first = lookups(&[1, 2, 3], &[("P1", 100), ("P2", 250)]);
    let before = crate::now_ms() as u64;
    let v1 = store.publish(&first).await.unwrap();
    assert!(v1 > start);
    assert!(
        v1 >= before,
        "a version is at least its publication's time, so it outgrows versions a store lost"
    );
    assert_eq!(store.load().await.unwrap(), (first.clone(), v1));
    let mut second = lookups(&[], &[("P2", 300), ("P3", 50)]);
    second.affinity.related = [
        (
            "P2".to_string(),
            vec![("P3".to_string(), 1.75), ("P1".to_string(), 0.5)],
        ),
        ("P3".to_string(), vec![("P2".to_string(), 1.75)]),
    ]
    .into_iter()
    .collect();
    let v2 = store.publish(&second).await.unwrap();
    assert!(v2 > v1);
    assert_eq!(store.version().await.unwrap(), v2);
    assert_eq!(
        store.load().await.unwrap(),
        (second, v2),
        "affinity included"
    );
    let v3 = store.publish(&first).await.unwrap();
    assert_eq!(store.load().await.unwrap(), (first, v3), "and removed");
}

/// A reader loading while lookups are published sees one whole version or the next, never a
/// mix.
pub async fn a_reader_never_sees_half_published_lookups<S: LookupStore + Clone + 'static>(
    store: S,
) {
    let many: Vec<i64> = (0..20_000).collect();
    let a = lookups(&many, &[("P1", 100), ("P2", 250)]);
    let b = lookups(&[7], &[("P3", 50)]);
    store.publish(&a).await.unwrap();
    let writer = {
        let (store, a, b) = (store.clone(), a.clone(), b.clone());
        tokio::spawn(async move {
            for i in 0..10 {
                store
                    .publish(if i % 2 == 0 { &b } else { &a })
                    .await
                    .unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        let (seen, _) = store.load().await.unwrap();
        assert!(seen == a || seen == b, "a mix of two versions");
        reads += 1;
    }
    writer.await.unwrap();
}

/// Counters add up; zero deltas write nothing.
pub async fn counters_add_up<S: Counters>(scope: &str, store: &S) {
    let (a, b) = (format!("{scope}-a"), format!("{scope}-b"));
    store.add(&[(&a, 2), (&b, 0)]).await.unwrap();
    store.add(&[(&a, 3)]).await.unwrap();
    let got = store.get().await.unwrap();
    assert_eq!(got.get(&a), Some(&5));
    assert_eq!(got.get(&b), None, "zero deltas write nothing");
}

/// Counts of records are added once per record, however the batches that carry them are cut
/// when they are delivered again; scopes count apart.
pub async fn records_are_counted_once<S: Counters>(scope: &str, store: &S) {
    let name: &'static str = Box::leak(format!("{scope}-counted").into_boxed_str());
    let topic: std::sync::Arc<str> = format!("{scope}-t").into();
    let at = |p: i32, offset: i64| EventRef {
        topic: topic.clone(),
        partition: p,
        offset,
    };
    let count = |p, o| crate::Counted {
        at: at(p, o),
        counter: name,
        delta: 1,
    };
    let through = |p: i32, o: i64| vec![(topic.to_string(), p, o)];
    let total = || async { store.get().await.unwrap().get(name).copied().unwrap_or(0) };
    // Offsets 0..5 of partition 0, counted; then delivered again whole: nothing more.
    let first: Vec<_> = (0..5).map(|o| count(0, o)).collect();
    store
        .add_counted("g", &first, &through(0, 5))
        .await
        .unwrap();
    assert_eq!(total().await, 5);
    store
        .add_counted("g", &first, &through(0, 5))
        .await
        .unwrap();
    assert_eq!(total().await, 5, "a batch delivered again adds nothing");
    // Cut otherwise: 3..8 adds only 5..8.
    let overlapping: Vec<_> = (3..8).map(|o| count(0, o)).collect();
    store
        .add_counted("g", &overlapping, &through(0, 8))
        .await
        .unwrap();
    assert_eq!(total().await, 8);
    // Another partition, and another scope, count on their own.
    store
        .add_counted("g", &[count(1, 0)], &through(1, 1))
        .await
        .unwrap();
    store
        .add_counted("other", &first, &through(0, 5))
        .await
        .unwrap();
    assert_eq!(total().await, 8 + 1 + 5);
    let got = store
        .counted_through("g", &[(topic.to_string(), 0), (topic.to_string(), 7)])
        .await
        .unwrap();
    assert_eq!(got, [8, 0], "where counting got to; 0 where it never began");
    // A batch that counted nothing still moves the offset on: its records are not counted later.
    store.add_counted("g", &[], &through(0, 10)).await.unwrap();
    store
        .add_counted("g", &[count(0, 9)], &through(0, 10))
        .await
        .unwrap();
    assert_eq!(total().await, 14);
}

// ---- the event log ----

use crate::{Consumed, Consumer, EventLog, Record, Subscription};

pub fn record(key: &str, value: &str) -> Record {
    Record::keyed(key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
}

pub fn subscription(topics: &[&str], group: Option<&str>) -> Subscription {
    Subscription {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        group: group.map(str::to_string),
        from: Vec::new(),
    }
}

/// Reads until `n` records came, failing after 60 s.
pub async fn read(c: &mut dyn Consumer, n: usize) -> Vec<Consumed> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut all = Vec::new();
    while all.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} records came within 60 s",
            all.len()
        );
        all.extend(
            c.poll(n - all.len(), Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
    all
}

/// A member that rewinds reads again from the group's committed offsets: what it read past
/// them comes again, what is before them does not.
pub async fn a_member_rewinds_to_its_committed_offsets(
    log: &dyn EventLog,
    topic: &str,
    group: &str,
) {
    log.create_topic(topic, 1).await.unwrap();
    let values: Vec<Record> = (0..20).map(|i| record("k", &i.to_string())).collect();
    log.producer().unwrap().send(topic, values).await.unwrap();
    let mut c = log
        .consumer(subscription(&[topic], Some(group)))
        .await
        .unwrap();
    let first = read(c.as_mut(), 20).await;
    c.commit(&[(topic.to_string(), 0, 8)]).await.unwrap();
    c.rewind().await.unwrap();
    let again = read(c.as_mut(), 12).await;
    let offsets: Vec<i64> = again.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (8..20).collect::<Vec<_>>());
    assert_eq!(again[0].record, first[8].record);
    let mut reader = log.consumer(subscription(&[topic], None)).await.unwrap();
    assert!(
        reader.rewind().await.is_err(),
        "no group, nothing to go back to"
    );
}

/// Keyed records land in the partition Kafka's partitioner gives their key, with
/// consecutive offsets from 0, and in the order sent per key.
pub async fn keys_land_in_kafkas_partition_in_order(log: &dyn EventLog, topic: &str) {
    log.create_topic(topic, 3).await.unwrap();
    let p = log.producer().unwrap();
    let records: Vec<_> = (0..60)
        .map(|i| record(&format!("k{}", i % 10), &i.to_string()))
        .collect();
    p.send(topic, records[..30].to_vec()).await.unwrap();
    p.send(topic, records[30..].to_vec()).await.unwrap();
    assert_eq!(
        log.earliest(topic).await.unwrap(),
        [(0, 0), (1, 0), (2, 0)],
        "nothing deleted: every partition starts at 0"
    );
    let mut c = log.consumer(subscription(&[topic], None)).await.unwrap();
    let all = read(c.as_mut(), 60).await;
    let mut per_partition: std::collections::BTreeMap<i32, Vec<i64>> = Default::default();
    for r in &all {
        let key = r.record.key.as_ref().unwrap();
        assert_eq!(
            r.partition,
            brewline_core::partition::partition_for_key(key, 3)
        );
        assert_eq!(&*r.topic, topic);
        per_partition.entry(r.partition).or_default().push(r.offset);
    }
    for offsets in per_partition.values() {
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, &expected, "offsets start at 0 and have no gaps");
    }
    let values_of_k3: Vec<String> = all
        .iter()
        .filter(|r| r.record.key.as_deref() == Some(b"k3"))
        .map(|r| String::from_utf8(r.record.value.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(values_of_k3, ["3", "13", "23", "33", "43", "53"]);
}

/// A record larger than the log takes is refused alone, with its place and the log's reason;
/// the records around it are acknowledged and read in order.
pub async fn an_oversized_record_is_refused_alone(log: &dyn EventLog, topic: &str) {
    log.create_topic(topic, 1).await.unwrap();
    let p = log.producer().unwrap();
    let huge = Record::keyed("k", Some(vec![b'x'; 2 * crate::MAX_RECORD_BYTES]));
    let err = p
        .send(topic, vec![record("k", "1"), huge, record("k", "2")])
        .await
        .unwrap_err();
    assert!(!err.retryable, "{err}");
    assert_eq!(err.refused.len(), 1, "{err}");
    assert_eq!(err.refused[0].index, 1);
    assert!(
        err.refused[0].reason.to_lowercase().contains("too large"),
        "{}",
        err.refused[0].reason
    );
    let mut c = log.consumer(subscription(&[topic], None)).await.unwrap();
    let values: Vec<Vec<u8>> = read(c.as_mut(), 2)
        .await
        .into_iter()
        .map(|r| r.record.value.unwrap())
        .collect();
    assert_eq!(values, [b"1".to_vec(), b"2".to_vec()]);
}

/// A group member that crashes after committing half of what it read, in the middle of what
/// one `send` wrote: the next member of the group gets exactly the uncommitted records; another
/// group starts from the earliest.
pub async fn a_group_resumes_from_its_committed_offsets<L: EventLog>(
    reopen: impl Fn() -> L,
    topic: &str,
    group: &str,
) {
    let log = reopen();
    log.create_topic(topic, 2).await.unwrap();
    log.producer()
        .unwrap()
        .send(
            topic,
            (0..40).map(|i| record(&format!("k{i}"), "v")).collect(),
        )
        .await
        .unwrap();
    let mut c = log
        .consumer(subscription(&[topic], Some(group)))
        .await
        .unwrap();
    let first = read(c.as_mut(), 40).await;
    let mut count: std::collections::BTreeMap<i32, i64> = Default::default();
    for r in &first {
        *count.entry(r.partition).or_insert(0) += 1;
    }
    // Half of each partition, then "crash".
    let next: std::collections::BTreeMap<i32, i64> =
        count.iter().map(|(p, n)| (*p, n / 2)).collect();
    let commits: Vec<_> = next
        .iter()
        .map(|(p, o)| (topic.to_string(), *p, *o))
        .collect();
    c.commit(&commits).await.unwrap();
    drop(c);
    drop(log);
    let log = reopen();
    let mut c = log
        .consumer(subscription(&[topic], Some(group)))
        .await
        .unwrap();
    let committed: i64 = next.values().sum();
    let rest = read(c.as_mut(), (40 - committed) as usize).await;
    for r in &rest {
        assert!(
            r.offset >= next[&r.partition],
            "a committed record came again: {}/{}",
            r.partition,
            r.offset
        );
    }
    let again = c.poll(10, Duration::from_millis(1500)).await.unwrap();
    assert!(again.is_empty(), "nothing more: {again:?}");
    let mut other = log
        .consumer(subscription(&[topic], Some(&format!("{group}-other"))))
        .await
        .unwrap();
    assert_eq!(
        read(other.as_mut(), 40).await.len(),
        40,
        "another group starts from the earliest"
    );
}

/// Headers, tombstones and unkeyed records come back as they were sent.
pub async fn headers_tombstones_and_unkeyed_records_survive(log: &dyn EventLog, topic: &str) {
    log.create_topic(topic, 2).await.unwrap();
    let with_headers = Record {
        key: None,
        value: Some(vec![0xff, 0x00, 0x01]),
        headers: vec![("reason".into(), b"bad".to_vec()), ("empty".into(), vec![])],
    };
    let mut records = vec![with_headers.clone(), Record::keyed("k", None)];
    records.extend((0..20).map(|i| Record {
        key: None,
        value: Some(format!("u{i}").into_bytes()),
        headers: vec![],
    }));
    log.producer().unwrap().send(topic, records).await.unwrap();
    let mut c = log.consumer(subscription(&[topic], None)).await.unwrap();
    let all = read(c.as_mut(), 22).await;
    assert!(all.iter().any(|r| r.record == with_headers), "{all:?}");
    assert!(all
        .iter()
        .any(|r| r.record.key.as_deref() == Some(b"k") && r.record.value.is_none()));
    // Where unkeyed records go is the partitioner's choice (Kafka's sticky partitioner puts
    // a whole batch in one partition): what matters is that each arrives, intact.
    let mut unkeyed: Vec<String> = all
        .iter()
        .filter(|r| r.record.key.is_none() && r.record.headers.is_empty())
        .map(|r| String::from_utf8(r.record.value.clone().unwrap()).unwrap())
        .collect();
    unkeyed.sort();
    let mut sent: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
    sent.sort();
    assert_eq!(unkeyed, sent, "every unkeyed record arrives, once");
    log.create_topic(topic, 5).await.unwrap();
}

/// `source` holds the bundled reference data. The extract has every dimension row with an
/// `updated_at`; after a price change and a new store are seeded, only those two rows have a
/// later one.
pub async fn dimensions_are_extracted_with_when_they_changed<S: SourceDb>(source: &S) {
    use brewline_core::reference::{ReferenceData, Store};
    let reference = ReferenceData::bundled().unwrap();
    let before = source.extract_dimensions().await.unwrap();
    let by_id = |e: &brewline_core::DimensionExtract| {
        let mut products: Vec<_> = e
            .products
            .iter()
            .map(|v| (v.row.clone(), v.updated_at_ms))
            .collect();
        products.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        products
    };
    let mut expected = reference.products.clone();
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    let products = by_id(&before);
    assert_eq!(
        products.iter().map(|p| p.0.clone()).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(before.stores.len(), reference.stores.len());
    assert_eq!(
        before.payment_methods.len(),
        reference.payment_methods.len()
    );
    assert_eq!(before.categories.len(), reference.categories.len());
    let now = crate::now_ms();
    for stamp in before
        .stores
        .iter()
        .map(|v| v.updated_at_ms)
        .chain(products.iter().map(|p| p.1))
    {
        assert!(
            (now - 86_400_000..=now + 86_400_000).contains(&stamp),
            "updated_at {stamp} is epoch ms near now ({now})"
        );
    }

    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut changed = reference.clone();
    changed.products[0].unit_price += 1000;
    changed.stores.push(Store {
        id: 100_000,
        name: "Kofi New".into(),
        address: "1 New Street".into(),
        district: "District 1".into(),
        city: "Ho Chi Minh".into(),
    });
    source.seed_reference(&changed).await.unwrap();
    let after = source.extract_dimensions().await.unwrap();
    let moved: Vec<_> = by_id(&after)
        .into_iter()
        .zip(products)
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, b)| {
            assert!(a.1 > b.1, "updated_at only moves forward");
            a.0
        })
        .collect();
    assert_eq!(
        moved,
        vec![changed.products[0].clone()],
        "only the changed product moved"
    );
    let new_store = after.stores.iter().find(|s| s.row.id == 100_000).unwrap();
    assert_eq!(new_store.row.name, "Kofi New");
    assert!(new_store.updated_at_ms > before.stores[0].updated_at_ms);
    assert_eq!(after.stores.len(), reference.stores.len() + 1);
}

/// A reader without a group starts at the offsets it is given (other partitions at the
/// beginning); the log says how many partitions a topic has, and that a missing one is missing.
pub async fn a_reader_starts_where_it_is_told(log: &dyn EventLog, topic: &str) {
    log.create_topic(topic, 2).await.unwrap();
    assert_eq!(log.partitions(topic).await.unwrap(), 2);
    assert!(log.partitions(&format!("{topic}-missing")).await.is_err());
    let records: Vec<Record> = (0..20)
        .map(|i| Record::keyed(format!("k{i}"), Some(format!("v{i}").into_bytes())))
        .collect();
    log.producer().unwrap().send(topic, records).await.unwrap();
    let mut c = log.consumer(subscription(&[topic], None)).await.unwrap();
    let all = read(c.as_mut(), 20).await;
    let in_0 = all.iter().filter(|r| r.partition == 0).count() as i64;
    assert!(in_0 >= 2, "both partitions hold records: {all:?}");
    let mut from = subscription(&[topic], None);
    from.from = vec![(topic.to_string(), 0, 2)];
    let mut c = log.consumer(from).await.unwrap();
    let rest = read(c.as_mut(), 18).await;
    let mut expected: Vec<_> = all
        .iter()
        .filter(|r| r.partition == 1 || r.offset >= 2)
        .map(|r| (r.partition, r.offset))
        .collect();
    let mut got: Vec<_> = rest.iter().map(|r| (r.partition, r.offset)).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
}
