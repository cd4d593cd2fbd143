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
use brewline_core::suggestion::{Lookups, ProductInfo, Suggestion};

use crate::{Applied, Counters, LookupStore, OrderStore};

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
    }
}

/// Lookups are replaced whole, with a new version each time: products dropped from the menu
/// and emptied sets are gone after the next publish.
pub async fn lookups_are_replaced_whole_with_a_new_version<S: LookupStore>(store: &S) {
    let start = store.version().await.unwrap();
    let first = lookups(&[1, 2, 3], &[("P1", 100), ("P2", 250)]);
    let v1 = store.publish(&first).await.unwrap();
    assert!(v1 > start);
    assert_eq!(store.load().await.unwrap(), (first, v1));
    let second = lookups(&[], &[("P2", 300), ("P3", 50)]);
    let v2 = store.publish(&second).await.unwrap();
    assert_eq!(v2, v1 + 1);
    assert_eq!(store.version().await.unwrap(), v2);
    assert_eq!(store.load().await.unwrap(), (second, v2));
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
