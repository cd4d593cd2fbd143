use super::*;
use brewline_core::generator::Tills;

fn reference() -> ReferenceData {
    ReferenceData::bundled().unwrap()
}

async fn seeded(dir: &Path) -> EmbeddedSource {
    let s = EmbeddedSource::open(&dir.join("source.sqlite")).unwrap();
    s.seed_reference(&reference()).await.unwrap();
    s
}

fn orders(n: u64) -> Vec<NewOrder> {
    Tills::new(&reference(), 1).unwrap().orders(0, n).collect()
}

#[tokio::test]
async fn reference_data_round_trips_and_seeding_twice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(dir.path()).await;
    s.init_schema().await.unwrap();
    let stamp = "SELECT SUM(updated_at) FROM products";
    let before = s.query_i64(stamp).await.unwrap();
    s.seed_reference(&reference()).await.unwrap();
    assert_eq!(
        s.query_i64(stamp).await.unwrap(),
        before,
        "unchanged rows keep updated_at"
    );
    let back = s.load_reference().await.unwrap();
    assert!(
        back == reference(),
        "reference data reads back as it was written"
    );
    assert_eq!(
        s.query_i64("SELECT COUNT(*) FROM customers WHERE phone_number LIKE '0%'")
            .await
            .unwrap(),
        15_000,
        "phone numbers are text and keep their leading zero"
    );
}

#[tokio::test]
async fn a_changed_price_is_updated_with_a_new_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(dir.path()).await;
    let mut r = reference();
    r.products[0].unit_price += 1000;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    s.seed_reference(&r).await.unwrap();
    let changed = s
        .query_i64("SELECT COUNT(DISTINCT updated_at) FROM products")
        .await
        .unwrap();
    assert_eq!(changed, 2, "only the changed product has a new updated_at");
    assert_eq!(
        s.load_reference().await.unwrap().products[0].unit_price,
        r.products[0].unit_price
    );
}

#[tokio::test]
async fn every_change_reaches_the_feed_in_whole_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(dir.path()).await;
    let os = orders(50);
    s.insert_orders(&os).await.unwrap();
    let counts = s.counts().await.unwrap();
    assert_eq!(counts.orders, 50);
    let lines: usize = os.iter().map(|o| o.lines.len()).sum();
    assert_eq!(counts.order_lines, lines as u64);

    let mut feed = s.follow(None).await.unwrap();
    assert_eq!(feed.behind().await.unwrap(), (50 + lines) as u64);
    // A batch limit of 1 still yields whole transactions (an order and all its lines).
    let mut all = Vec::new();
    loop {
        let batch = feed.next(1, Duration::ZERO).await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(
            batch.last().unwrap().resume_after.is_some(),
            "a batch ends a transaction"
        );
        assert_eq!(batch[0].table, "orders");
        assert_eq!(
            batch.len(),
            1 + batch[0].after.as_ref().unwrap()["num_products"]
                .as_u64()
                .unwrap() as usize
        );
        all.extend(batch);
    }
    assert_eq!(all.len(), 50 + lines);
    assert_eq!(feed.behind().await.unwrap(), 0);
    let first = &all[0];
    assert_eq!(first.op, Op::Create);
    assert_eq!(first.after.as_ref().unwrap()["id"], os[0].id.as_str());
    assert!(first.source.ts_us.unwrap() > 1_600_000_000_000_000);
    assert_eq!(first.source.table.as_deref(), Some("orders"));
}

#[tokio::test]
async fn updates_and_deletes_carry_before_and_after_and_resume_from_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(dir.path()).await;
    let os = orders(2);
    s.insert_orders(&os).await.unwrap();
    let mut feed = s.follow(None).await.unwrap();
    let first = feed.next(1000, Duration::ZERO).await.unwrap();
    let position = first.last().unwrap().resume_after.clone();
    s.execute(&format!(
        "UPDATE orders SET status = 'cancelled' WHERE id = '{0}';
         DELETE FROM order_details WHERE order_id = '{0}';
         DELETE FROM orders WHERE id = '{0}';",
        os[0].id
    ))
    .await
    .unwrap();
    // A new follower resumes after the stored position and sees only the new transaction.
    let mut resumed = s.follow(position).await.unwrap();
    let changes = resumed
        .next(1000, Duration::from_millis(200))
        .await
        .unwrap();
    let ops: Vec<_> = changes.iter().map(|c| (c.table.as_str(), c.op)).collect();
    let mut expected = vec![("orders", Op::Update)];
    expected.extend(os[0].lines.iter().map(|_| ("order_details", Op::Delete)));
    expected.push(("orders", Op::Delete));
    assert_eq!(ops, expected);
    let update = &changes[0];
    assert_eq!(update.before.as_ref().unwrap()["status"], "completed");
    assert_eq!(update.after.as_ref().unwrap()["status"], "cancelled");
    let delete = changes.last().unwrap();
    assert!(delete.after.is_none());
    assert_eq!(delete.before.as_ref().unwrap()["id"], os[0].id.as_str());
    assert!(changes[..changes.len() - 1]
        .iter()
        .all(|c| c.resume_after.is_none()));
    assert!(changes.last().unwrap().resume_after.is_some());
}

#[tokio::test]
async fn the_feed_wakes_on_a_commit_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(dir.path()).await;
    let mut feed = s.follow(None).await.unwrap();
    let writer = s.clone();
    let os = orders(1);
    let write = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        writer.insert_orders(&os).await.unwrap();
    });
    let got = feed.next(100, Duration::from_secs(5)).await.unwrap();
    assert!(!got.is_empty());
    write.await.unwrap();
    drop(feed);
    drop(s);
    let reopened = EmbeddedSource::open(&dir.path().join("source.sqlite")).unwrap();
    reopened.insert_orders(&orders(3)[1..]).await.unwrap();
    assert_eq!(reopened.counts().await.unwrap().orders, 3);
    let txns = reopened
        .query_i64("SELECT COUNT(DISTINCT txn) FROM changelog")
        .await
        .unwrap();
    assert_eq!(txns, 3, "transaction numbers continue after a reopen");
    assert!(
        reopened.follow(Some("not-a-number".into())).await.is_err(),
        "a bad position is an error, not a restart from zero"
    );
}

#[tokio::test]
async fn dimensions_are_extracted_with_when_they_changed() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(dir.path()).await;
    brewline_ports::conformance::dimensions_are_extracted_with_when_they_changed(&s).await;
}
