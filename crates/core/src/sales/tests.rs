use super::*;
use proptest::prelude::*;

const DAY_MS: i64 = 86_400_000;
/// 2026-11-25 00:00 UTC.
const NOV_25: i64 = 1_795_564_800_000;

fn header(at_ms: i64, store_id: i64) -> Header {
    Header {
        ordered_at_ms: at_ms,
        store_id,
        payment_method_id: 1,
    }
}

fn line(quantity: i64, subtotal: i64, is_suggestion: bool) -> Line {
    Line {
        quantity,
        subtotal,
        is_suggestion,
    }
}

fn cities() -> StoreCities {
    StoreCities::from([(1, "Hanoi".to_string()), (2, "Can Tho".to_string())])
}

fn day(ms: i64) -> Day {
    calendar::date_of_millis(ms)
}

#[test]
fn an_order_counts_in_every_view_by_the_marts_definitions() {
    let order = OrderRows {
        header: Some(header(NOV_25 + 9 * 3_600_000, 1)),
        lines: BTreeMap::from([
            ("CF01".to_string(), line(2, 50_000, false)),
            ("TE02".to_string(), line(1, 20_000, true)),
        ]),
        suggested: Some(20_000),
    };
    let mut book = SalesBook::default();
    book.add_order(&order, &cities(), 1);
    let d = day(NOV_25);
    assert_eq!(
        book.daily[&d],
        Sales {
            orders: 1,
            lines: 2,
            quantity: 3,
            revenue: 70_000,
            accepted: 1,
            accepted_revenue: 20_000,
            suggestions: 1,
            offered_revenue: 20_000,
        }
    );
    assert_eq!(book.hourly[&(d.clone(), 9)].revenue, 70_000);
    assert_eq!(book.stores[&(d.clone(), 1)].orders, 1);
    assert_eq!(
        book.cities[&(d.clone(), "Hanoi".to_string())].revenue,
        70_000
    );
    assert_eq!(book.products[&(d.clone(), "CF01".to_string())].quantity, 2);
    assert_eq!(
        book.products[&(d.clone(), "TE02".to_string())].revenue,
        20_000
    );

    book.add_order(&order, &cities(), -1);
    assert_eq!(book.without_zeros(), SalesBook::default());
}

#[test]
fn an_order_without_lines_counts_only_in_its_city_and_one_without_header_nowhere() {
    let mut book = SalesBook::default();
    book.add_order(
        &OrderRows {
            header: Some(header(NOV_25, 2)),
            ..OrderRows::default()
        },
        &cities(),
        1,
    );
    let d = day(NOV_25);
    assert_eq!(book.daily[&d].orders, 0);
    assert!(book.stores.is_empty() && book.hourly.is_empty());
    assert_eq!(book.cities[&(d, "Can Tho".to_string())].orders, 1);

    let mut none = SalesBook::default();
    none.add_order(
        &OrderRows {
            header: None,
            lines: BTreeMap::from([("CF01".to_string(), line(1, 10, false))]),
            suggested: Some(5),
        },
        &cities(),
        1,
    );
    assert_eq!(none, SalesBook::default());
}

#[test]
fn a_store_of_no_known_city_is_left_out_of_the_cities_only() {
    let mut book = SalesBook::default();
    let order = OrderRows {
        header: Some(header(NOV_25, 77)),
        lines: BTreeMap::from([("CF01".to_string(), line(1, 10, false))]),
        suggested: None,
    };
    book.add_order(&order, &cities(), 1);
    assert!(book.cities.is_empty());
    assert_eq!(book.stores[&(day(NOV_25), 77)].revenue, 10);
}

fn inserted(order_id: &str, h: Header) -> SalesChange {
    SalesChange::Header {
        order_id: order_id.to_string(),
        inserted: true,
        after: Some(h),
    }
}

fn line_change(order_id: &str, product: &str, after: Option<Line>) -> SalesChange {
    SalesChange::Line {
        order_id: order_id.to_string(),
        product_id: product.to_string(),
        after,
    }
}

#[test]
fn a_new_order_counts_at_once_whichever_topic_arrives_first() {
    let mut speed = SpeedSales::new(cities(), HashMap::new(), HeldOrders::default());
    speed.apply(line_change("o1", "CF01", Some(line(1, 30, false))), 0);
    assert_eq!(speed.unresolved_count(), 1);
    assert!(speed.book().clone().without_zeros().daily.is_empty());
    speed.apply(inserted("o1", header(NOV_25, 1)), 0);
    assert_eq!(speed.unresolved_count(), 0);
    assert_eq!(speed.book().daily[&day(NOV_25)].revenue, 30);
}

#[test]
fn a_full_view_keeps_counting_the_orders_it_holds_and_drops_the_others() {
    let mut speed =
        SpeedSales::new(cities(), HashMap::new(), HeldOrders::default()).with_capacity(2);
    for o in ["o1", "o2"] {
        speed.apply(inserted(o, header(NOV_25, 1)), 0);
        speed.apply(line_change(o, "CF01", Some(line(1, 30, false))), 0);
    }
    assert!(speed.is_full());
    speed.apply(inserted("o3", header(NOV_25, 1)), 0);
    speed.apply(line_change("o3", "CF01", Some(line(1, 30, false))), 0);
    assert_eq!(speed.dropped(), 2);
    assert_eq!(speed.orders_read(), 2);
    // An order held still changes.
    speed.apply(line_change("o1", "CF02", Some(line(1, 45, false))), 0);
    assert_eq!(speed.book().daily[&day(NOV_25)].revenue, 30 + 30 + 45);
    assert_eq!(speed.dropped(), 2);
}

#[test]
fn an_order_from_before_the_watermark_counts_its_change_once_resolved() {
    let base = OrderRows {
        header: Some(header(NOV_25 - DAY_MS, 1)),
        lines: BTreeMap::from([("CF01".to_string(), line(1, 30, false))]),
        suggested: Some(40),
    };
    let mut speed = SpeedSales::new(cities(), HashMap::new(), HeldOrders::default());
    // The customer took the suggestion: a line inserted into an order the batch holds.
    speed.apply(line_change("o1", "TE02", Some(line(1, 40, true))), 1_000);
    assert_eq!(speed.unresolved(1_000), Vec::<String>::new());
    assert_eq!(speed.unresolved(1_001), vec!["o1".to_string()]);
    speed.resolve("o1", base);
    let yesterday = &speed.book().daily[&day(NOV_25 - DAY_MS)];
    assert_eq!(
        (yesterday.orders, yesterday.revenue, yesterday.accepted),
        (0, 40, 1)
    );
    // Resolving twice changes nothing.
    let before = speed.book().clone();
    speed.resolve("o1", OrderRows::default());
    assert_eq!(speed.book(), &before);
}

#[test]
fn an_insert_whose_lines_the_batch_landed_already_counts_them() {
    let orphan = OrderRows {
        header: None,
        lines: BTreeMap::from([("CF01".to_string(), line(2, 60, false))]),
        suggested: None,
    };
    let mut speed = SpeedSales::new(
        cities(),
        HashMap::from([("o1".to_string(), orphan)]),
        HeldOrders::default(),
    );
    speed.apply(inserted("o1", header(NOV_25, 1)), 0);
    let today = &speed.book().daily[&day(NOV_25)];
    assert_eq!((today.orders, today.revenue), (1, 60));
}

// The property: for any history of any orders, any watermark (a cut of each topic) and any
// interleaving of the topics after it, the batch view at the watermark plus the speed layer's
// increments equals the figures of the whole history.

/// One event of a topic: the topic (0 orders, 1 order_details, 2 suggestions) and the change.
type Event = (u8, SalesChange);

/// A valid history of one order's rows, from random choices (as the source database would
/// allow: lines only under an existing header, a header deleted only without lines).
fn history(order_id: &str, choices: &[(u8, u8, u8)]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut has_header = false;
    let mut lines: BTreeMap<String, Line> = BTreeMap::new();
    let mut first_insert: Option<Event> = None;
    for &(what, a, b) in choices {
        let product = ["CF01", "TE02", "JU03"][usize::from(a % 3)].to_string();
        let h = header(
            NOV_25 + i64::from(b % 3) * DAY_MS + i64::from(a) * 60_000,
            i64::from(b % 3) + 1,
        );
        match what % 7 {
            0 if !has_header => {
                has_header = true;
                events.push((0, inserted(order_id, h)));
                first_insert.get_or_insert_with(|| events[events.len() - 1].clone());
            }
            // The capture sends an insert again (a retry after a crash).
            6 if has_header => {
                if let Some(again) = &first_insert {
                    events.push(again.clone());
                }
            }
            1 if has_header => events.push((
                0,
                SalesChange::Header {
                    order_id: order_id.to_string(),
                    inserted: false,
                    after: Some(h),
                },
            )),
            2 if has_header && lines.is_empty() => {
                has_header = false;
                events.push((
                    0,
                    SalesChange::Header {
                        order_id: order_id.to_string(),
                        inserted: false,
                        after: None,
                    },
                ));
            }
            3 | 4 if has_header => {
                let l = line(i64::from(b % 3) + 1, i64::from(b) * 100, a % 2 == 0);
                lines.insert(product.clone(), l);
                events.push((1, line_change(order_id, &product, Some(l))));
            }
            5 if lines.remove(&product).is_some() => {
                events.push((1, line_change(order_id, &product, None)));
            }
            5 if has_header => events.push((
                2,
                SalesChange::Suggested {
                    order_id: order_id.to_string(),
                    subtotal: i64::from(b) * 10,
                },
            )),
            _ => {}
        }
    }
    events
}

/// The rows after `events` (what the batch's silver layer computes from them).
fn fold(events: &[&Event]) -> OrderRows {
    let mut rows = OrderRows::default();
    for (_, change) in events {
        match change {
            SalesChange::Header { after, .. } => rows.header = after.clone(),
            SalesChange::Line {
                product_id, after, ..
            } => match after {
                Some(l) => {
                    rows.lines.insert(product_id.clone(), *l);
                }
                None => {
                    rows.lines.remove(product_id);
                }
            },
            SalesChange::Suggested { subtotal, .. } => rows.suggested = Some(*subtotal),
        }
    }
    rows
}

/// Each order's choices, each order's cut of each topic, the interleaving's choices, and
/// whether the filter of held orders says "maybe" of every order.
type Scenario = (Vec<Vec<(u8, u8, u8)>>, Vec<[u8; 3]>, Vec<u8>, bool);

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(prop::collection::vec(any::<(u8, u8, u8)>(), 0..12), 1..6),
        prop::collection::vec(any::<[u8; 3]>(), 6),
        prop::collection::vec(any::<u8>(), 0..80),
        any::<bool>(),
    )
}

proptest! {
    #[test]
    fn batch_view_plus_speed_increments_equals_the_whole_history(
        (orders, cuts, interleaving, saturated) in scenario()
    ) {
        let mut held = HeldOrders::with_capacity(orders.len());
        let mut expected = SalesBook::default();
        let mut batch = SalesBook::default();
        let mut orphans = HashMap::new();
        let mut bases = HashMap::new();
        // After the watermark: each order's events of each topic, in their order.
        let mut queues: Vec<std::collections::VecDeque<Event>> = Vec::new();
        for (i, choices) in orders.iter().enumerate() {
            let id = format!("o{i}");
            let events = history(&id, choices);
            expected.add_order(&fold(&events.iter().collect::<Vec<_>>()), &cities(), 1);
            let mut landed = Vec::new();
            for topic in 0..3u8 {
                let of_topic: Vec<&Event> = events.iter().filter(|(t, _)| *t == topic).collect();
                let cut = usize::from(cuts[i][usize::from(topic)]) % (of_topic.len() + 1);
                landed.extend_from_slice(&of_topic[..cut]);
                queues.push(of_topic[cut..].iter().map(|e| (*e).clone()).collect());
            }
            // Events of different topics fold independently: their order does not matter.
            let base = fold(&landed);
            batch.add_order(&base, &cities(), 1);
            if base.header.is_none() && base != OrderRows::default() {
                orphans.insert(id.clone(), base.clone());
            }
            if base.header.is_some() || saturated {
                held.insert(&id);
            }
            bases.insert(id, base);
        }
        let mut speed = SpeedSales::new(cities(), orphans, held);
        let mut pick = interleaving.into_iter().cycle();
        while queues.iter().any(|q| !q.is_empty()) {
            let open: Vec<usize> = (0..queues.len()).filter(|q| !queues[*q].is_empty()).collect();
            let q = open[usize::from(pick.next().unwrap_or(0)) % open.len()];
            if let Some((_, change)) = queues[q].pop_front() {
                speed.apply(change, 0);
            }
            // Some orders are looked up along the way, the rest at the end.
            if pick.next().unwrap_or(0) % 4 == 0 {
                for id in speed.unresolved(1) {
                    speed.resolve(&id, bases[&id].clone());
                }
            }
        }
        for id in speed.unresolved(1) {
            speed.resolve(&id, bases[&id].clone());
        }
        prop_assert_eq!(speed.unresolved_count(), 0);
        batch.merge(speed.book());
        prop_assert_eq!(batch.without_zeros(), expected.without_zeros());
    }
}

#[test]
fn the_filter_of_held_orders_never_forgets_and_rarely_imagines() {
    let mut held = HeldOrders::with_capacity(10_000);
    for i in 0..10_000 {
        held.insert(&format!("order-{i}"));
    }
    assert!((0..10_000).all(|i| held.may_hold(&format!("order-{i}"))));
    let imagined = (0..10_000)
        .filter(|i| held.may_hold(&format!("other-{i}")))
        .count();
    assert!(imagined < 300, "{imagined} false positives in 10 000");
    assert!(!HeldOrders::default().may_hold("order-1"));
}
