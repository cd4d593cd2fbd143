use super::*;
use brewline_core::assembly::{EventRef, OrderChange};
use brewline_core::order::OrderHeader;
use brewline_core::ReferenceData;

fn at(offset: i64) -> EventRef {
    EventRef {
        topic: "t".into(),
        partition: 0,
        offset,
    }
}

fn placed(order: &str, n: i64) -> OrderChange {
    OrderChange::Placed(OrderHeader {
        order_id: order.into(),
        customer_id: Some(1),
        store_id: 1,
        payment_method_id: 9,
        num_products: n,
    })
}

fn line(order: &str, p: &str) -> OrderChange {
    OrderChange::LineAdded {
        order_id: order.into(),
        product_id: p.into(),
    }
}

fn applied(change: OrderChange, offset: i64) -> Applied {
    Applied {
        change,
        at: at(offset),
    }
}

fn open(dir: &Path, ttl: Duration) -> EmbeddedState {
    EmbeddedState::open(&dir.join("state.sqlite"), ttl).unwrap()
}

#[tokio::test]
async fn state_carries_over_between_batches_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Duration::from_secs(90));
    let steps = s
        .apply(&[applied(placed("o1", 2), 0), applied(line("o1", "A"), 1)])
        .await
        .unwrap();
    assert_eq!(steps, vec![Step::Pending, Step::Pending]);
    drop(s);
    let s = open(dir.path(), Duration::from_secs(90));
    let steps = s.apply(&[applied(line("o1", "B"), 2)]).await.unwrap();
    assert!(matches!(&steps[0], Step::Completed(o) if o.products == ["A", "B"]));
    let state = s.order("o1").await.unwrap().unwrap();
    assert_eq!(state.message_count, 3);
    assert!(state.is_complete());
    // The completing record again: replayed; a duplicate at another offset: nothing.
    let steps = s
        .apply(&[applied(line("o1", "B"), 2), applied(line("o1", "B"), 9)])
        .await
        .unwrap();
    assert!(matches!(steps[0], Step::Replayed(_, None)));
    assert_eq!(steps[1], Step::AlreadyComplete);
}

#[tokio::test]
async fn two_workers_on_one_store_complete_an_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), Duration::from_secs(90));
    let b = open(dir.path(), Duration::from_secs(90));
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let order = format!("o{}", i / 4);
        tasks.push(tokio::spawn(async move {
            let change = match i % 4 {
                0 => placed(&order, 3),
                k => line(&order, &format!("P{k}")),
            };
            store.apply(&[applied(change, i)]).await.unwrap()
        }));
    }
    let mut completed = 0;
    for t in tasks {
        completed += t
            .await
            .unwrap()
            .iter()
            .filter(|s| matches!(s, Step::Completed(_)))
            .count();
    }
    assert_eq!(
        completed, 50,
        "each of the 50 orders completes exactly once"
    );
}

#[tokio::test]
async fn expired_state_is_dropped_and_incomplete_orders_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Duration::from_millis(50));
    s.apply(&[
        applied(placed("done", 1), 0),
        applied(line("done", "A"), 1),
        applied(placed("open", 2), 2),
        applied(line("open", "A"), 3),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.expire().await.unwrap(),
        Vec::<String>::new(),
        "nothing is old yet"
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(
        s.order("open").await.unwrap(),
        None,
        "expired state is not visible"
    );
    assert_eq!(s.expire().await.unwrap(), vec!["open".to_string()]);
    assert_eq!(
        s.expire().await.unwrap(),
        Vec::<String>::new(),
        "reported once"
    );
    // A late line starts afresh, as it would on a Redis key that expired.
    let steps = s.apply(&[applied(line("open", "B"), 4)]).await.unwrap();
    assert_eq!(steps, vec![Step::Pending]);
}

#[tokio::test]
async fn orders_that_expired_while_no_process_ran_are_still_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path(), Duration::from_millis(50));
        s.apply(&[applied(placed("left-open", 2), 0)])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(80)).await;
    let s = open(dir.path(), Duration::from_millis(50));
    assert_eq!(s.expire().await.unwrap(), vec!["left-open".to_string()]);
    drop(s);
    let s = open(dir.path(), Duration::from_millis(50));
    assert!(
        s.expire().await.unwrap().is_empty(),
        "trimmed from the journal: reported once"
    );
}

#[tokio::test]
async fn lookups_are_replaced_whole_with_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Duration::from_secs(90));
    assert_eq!(s.version().await.unwrap(), 0);
    assert_eq!(s.load().await.unwrap(), (Lookups::default(), 0));
    let l = Lookups::from_reference(&ReferenceData::bundled().unwrap(), "ACB");
    assert_eq!(s.publish(&l).await.unwrap(), 1);
    let mut fewer = l.clone();
    fewer.diamond_customers.clear();
    assert_eq!(s.publish(&fewer).await.unwrap(), 2);
    assert_eq!(s.load().await.unwrap(), (fewer, 2));
    assert_eq!(s.version().await.unwrap(), 2);
}

#[tokio::test]
async fn counters_add_up_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Duration::from_secs(90));
    s.add(&[("a", 2), ("b", 0)]).await.unwrap();
    s.add(&[("a", 3)]).await.unwrap();
    drop(s);
    let s = open(dir.path(), Duration::from_secs(90));
    let got = s.get().await.unwrap();
    assert_eq!(got.get("a"), Some(&5));
    assert_eq!(got.get("b"), None, "zero deltas write nothing");
}
