use super::*;
use brewline_core::assembly::{EventRef, OrderChange};
use brewline_core::order::{CompletedOrder, OrderHeader};
use brewline_core::suggestion::Suggestion;
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

fn none(_: &CompletedOrder) -> Option<Suggestion> {
    None
}

fn open(dir: &Path, ttl: Duration) -> EmbeddedState {
    EmbeddedState::open(&dir.join("state.sqlite"), ttl).unwrap()
}

#[tokio::test]
async fn state_carries_over_between_batches_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Duration::from_secs(90));
    let steps = s
        .apply(
            &[applied(placed("o1", 2), 0), applied(line("o1", "A"), 1)],
            &none,
        )
        .await
        .unwrap();
    assert_eq!(steps, vec![Step::Pending, Step::Pending]);
    drop(s);
    let s = open(dir.path(), Duration::from_secs(90));
    let steps = s
        .apply(&[applied(line("o1", "B"), 2)], &none)
        .await
        .unwrap();
    assert!(matches!(&steps[0], Step::Completed(o, None) if o.products == ["A", "B"]));
    let state = s.order("o1").await.unwrap().unwrap();
    assert_eq!(state.message_count, 3);
    assert!(state.is_complete());
    // The completing record again: replayed; a duplicate at another offset: nothing.
    let steps = s
        .apply(
            &[applied(line("o1", "B"), 2), applied(line("o1", "B"), 9)],
            &none,
        )
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
            store.apply(&[applied(change, i)], &none).await.unwrap()
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

#[tokio::test]
async fn expired_state_is_dropped_and_incomplete_orders_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Duration::from_millis(50));
    s.apply(
        &[
            applied(placed("done", 1), 0),
            applied(line("done", "A"), 1),
            applied(placed("open", 2), 2),
            applied(line("open", "A"), 3),
        ],
        &none,
    )
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
    let steps = s
        .apply(&[applied(line("open", "B"), 4)], &none)
        .await
        .unwrap();
    assert_eq!(steps, vec![Step::Pending]);
}

#[tokio::test]
async fn orders_that_expired_while_no_process_ran_are_still_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path(), Duration::from_millis(50));
        s.apply(&[applied(placed("left-open", 2), 0)], &none)
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

fn suggestion_for(order: &CompletedOrder) -> Option<Suggestion> {
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

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("state.journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn the_suggestion_recorded_at_completion_is_replayed_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Duration::from_secs(90));
    let steps = s
        .apply(
            &[applied(placed("o1", 1), 0), applied(line("o1", "A"), 1)],
            &suggestion_for,
        )
        .await
        .unwrap();
    let Step::Completed(_, Some(made)) = &steps[1] else {
        panic!("completes with a suggestion: {steps:?}");
    };
    drop(s);
    let s = open(dir.path(), Duration::from_secs(90));
    // A suggester that now makes nothing: the replay still repeats the recorded suggestion.
    let steps = s
        .apply(&[applied(line("o1", "A"), 1)], &none)
        .await
        .unwrap();
    assert!(matches!(&steps[0], Step::Replayed(_, Some(again)) if again == made));
}

#[tokio::test]
async fn a_record_cut_short_by_a_crash_is_dropped_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path(), Duration::from_secs(90));
        s.apply(&[applied(placed("o1", 2), 0)], &none)
            .await
            .unwrap();
        s.apply(&[applied(line("o1", "A"), 1)], &none)
            .await
            .unwrap();
    }
    // A crash in the middle of the next append: its header and part of its payload.
    let last = segments(dir.path()).pop().unwrap();
    let whole = std::fs::metadata(&last).unwrap().len();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    std::io::Write::write_all(&mut file, &[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
    drop(file);
    let s = open(dir.path(), Duration::from_secs(90));
    assert_eq!(std::fs::metadata(&last).unwrap().len(), whole, "truncated");
    let state = s.order("o1").await.unwrap().unwrap();
    assert_eq!((state.message_count, state.products.len()), (2, 1));
}

#[tokio::test]
async fn a_corrupt_record_before_the_end_fails_the_open_with_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path(), Duration::from_secs(90));
        s.apply(&[applied(placed("o1", 2), 0)], &none)
            .await
            .unwrap();
        s.apply(&[applied(line("o1", "A"), 1)], &none)
            .await
            .unwrap();
    }
    let last = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    bytes[10] ^= 0xff; // inside the first record's payload
    std::fs::write(&last, bytes).unwrap();
    let e = EmbeddedState::open(&dir.path().join("state.sqlite"), Duration::from_secs(90))
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("corrupt at byte 0: checksum mismatch"),
        "{e}"
    );
}

#[tokio::test]
async fn segments_older_than_the_ttl_are_deleted_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Duration::from_millis(200));
    s.apply(&[applied(placed("old", 2), 0)], &none)
        .await
        .unwrap();
    // Older than a quarter of the TTL: the next append closes the segment.
    tokio::time::sleep(Duration::from_millis(60)).await;
    s.apply(&[applied(placed("old2", 2), 1)], &none)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(220)).await;
    s.apply(&[applied(placed("new", 2), 2)], &none)
        .await
        .unwrap();
    let before = segments(dir.path()).len();
    assert_eq!(
        s.expire().await.unwrap(),
        vec!["old".to_string(), "old2".to_string()]
    );
    let after = segments(dir.path());
    assert!(after.len() < before, "{before} segments, then {after:?}");
    drop(s);
    let s = open(dir.path(), Duration::from_millis(200));
    assert!(s.order("new").await.unwrap().is_some(), "kept");
    assert!(s.expire().await.unwrap().is_empty(), "reported once");
}
