//! The source database on a real MariaDB (with the row binlog the CDC reads). Needs the server
//! `scripts/test` starts (`TEST_BREWLINE_MYSQL_URL`); run with `scripts/test`, or
//! `cargo test -- --ignored` with that variable set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use brewline_core::generator::Tills;
use brewline_core::suggestion::Suggestion;
use brewline_core::ReferenceData;
use brewline_mysql::{MysqlConfig, MysqlSource};
use brewline_ports::SourceDb;
use mysql_async::prelude::Queryable;

mod common;
use common::seeded;

async fn query_one(c: &MysqlConfig, sql: &str) -> i64 {
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&c.url).unwrap())
        .db_name(Some(c.database.clone()));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    let v: Option<i64> = conn.query_first(sql).await.unwrap();
    conn.disconnect().await.unwrap();
    v.unwrap()
}

#[tokio::test]
#[ignore = "needs MariaDB: run scripts/test"]
async fn dimensions_are_extracted_with_when_they_changed() {
    let (s, _) = seeded("dims").await;
    brewline_ports::conformance::dimensions_are_extracted_with_when_they_changed(&s).await;
}

#[tokio::test]
#[ignore = "needs MariaDB: run scripts/test"]
async fn init_and_seed_are_idempotent_and_reference_data_round_trips() {
    let (s, c) = seeded("seed").await;
    let stamp = "SELECT CAST(SUM(UNIX_TIMESTAMP(updated_at) * 1000) AS SIGNED) FROM customers";
    let before = query_one(&c, stamp).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    s.init_schema().await.unwrap();
    s.seed_reference(&ReferenceData::bundled().unwrap())
        .await
        .unwrap();
    assert_eq!(
        query_one(&c, stamp).await,
        before,
        "unchanged rows keep updated_at"
    );
    let back = s.load_reference().await.unwrap();
    let mut bundled = ReferenceData::bundled().unwrap();
    bundled.products.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(back.stores, bundled.stores);
    assert_eq!(back.payment_methods, bundled.payment_methods);
    assert_eq!(back.categories, bundled.categories);
    assert_eq!(back.products, bundled.products);
    assert!(
        back.customers == bundled.customers,
        "customers read back as written"
    );
    assert_eq!(
        query_one(
            &c,
            "SELECT COUNT(*) FROM customers WHERE tier = 'diamond' AND phone_number LIKE '0%'"
        )
        .await,
        15_000,
        "every diamond customer, phone numbers as text with their leading zero"
    );
    let mut changed = ReferenceData::bundled().unwrap();
    changed.products[0].unit_price += 1000;
    s.seed_reference(&changed).await.unwrap();
    assert_eq!(
        query_one(&c, "SELECT COUNT(DISTINCT updated_at) FROM products").await,
        2,
        "only the changed product has a new updated_at"
    );
}

#[tokio::test]
#[ignore = "needs MariaDB: run scripts/test"]
async fn orders_are_written_whole_and_accepted_suggestions_once() {
    let (s, c) = seeded("orders").await;
    let reference = s.load_reference().await.unwrap();
    let orders: Vec<_> = Tills::new(&reference, 3).unwrap().orders(0, 200).collect();
    s.insert_orders(&orders).await.unwrap();
    let lines: u64 = orders.iter().map(|o| o.lines.len() as u64).sum();
    let counts = s.counts().await.unwrap();
    assert_eq!((counts.orders, counts.order_lines), (200, lines));
    assert_eq!(
        query_one(&c, "SELECT COUNT(*) FROM orders o WHERE num_products <> (SELECT COUNT(*) FROM order_details d WHERE d.order_id = o.id)").await,
        0,
        "every order has its num_products lines"
    );
    // The first product of the menu not in the order, at half price.
    let suggestions: Vec<Suggestion> = orders
        .iter()
        .take(5)
        .map(|o| {
            let p = reference
                .products
                .iter()
                .find(|p| o.lines.iter().all(|l| l.product_id != p.id))
                .unwrap();
            Suggestion {
                order_id: o.id.clone(),
                product_id: p.id.clone(),
                product_name: p.name.clone(),
                quantity: 1,
                unit_price: p.unit_price,
                discount_percent: 50,
                subtotal: p.unit_price / 2,
                is_suggestion: true,
                customer_id: Some(o.customer_id),
                store_id: o.store_id,
                payment_method_id: o.payment_method_id,
                order_products: vec![],
                strategy: "random".into(),
            }
        })
        .collect();
    assert_eq!(suggestions.len(), 5);
    assert_eq!(s.accept_suggestions(&suggestions).await.unwrap(), 5);
    assert_eq!(
        s.accept_suggestions(&suggestions).await.unwrap(),
        0,
        "accepted once"
    );
    assert_eq!(
        s.counts().await.unwrap().order_lines,
        lines,
        "suggested lines are not items"
    );
    assert_eq!(
        query_one(&c, "SELECT COUNT(*) FROM order_details WHERE is_suggestion").await,
        5
    );
}

/// The URL a user naturally writes names the database that `db init` is to create: every
/// client ignores it in favour of `mysql.database`, so nothing fails on "Unknown database".
#[tokio::test]
#[ignore = "needs MariaDB: run scripts/test"]
async fn a_database_named_in_the_url_does_not_have_to_exist() {
    let mut c = common::config("url_db");
    c.url = format!("{}/{}", c.url.trim_end_matches('/'), c.database);
    let s = MysqlSource::new(&c).unwrap();
    s.init_schema().await.unwrap();
    s.seed_reference(&brewline_core::ReferenceData::bundled().unwrap())
        .await
        .unwrap();
    assert!(query_one(&c, "SELECT COUNT(*) FROM stores").await > 0);
    let offsets = format!("{}_offsets", c.database);
    let checkpoints = brewline_mysql::MysqlCheckpoints::connect(&c, &offsets)
        .await
        .unwrap();
    brewline_ports::CheckpointStore::save(&checkpoints, "p", "binlog.000001:4")
        .await
        .unwrap();
}
