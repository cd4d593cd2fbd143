//! Change capture from a real MariaDB row binlog: snapshot, streaming, resume, types, schema
//! changes. Needs the server `scripts/test` starts (`TEST_BREWLINE_MYSQL_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use brewline_core::debezium::{ColumnType, Op};
use brewline_mysql::{CdcConfig, MysqlCapture, MysqlCheckpoints, MysqlSource};
use brewline_ports::{Capturable, ChangeFeed, CheckpointStore, RowChange};

mod common;
use common::seeded;
use serde_json::json;

async fn sql(source: &MysqlSource, statements: &[&str]) {
    let statements: Vec<String> = statements.iter().map(|s| s.to_string()).collect();
    source.execute(&statements).await.unwrap();
}

/// Reads until `n` changes came (or fails after 20 s).
async fn read(feed: &mut dyn ChangeFeed, n: usize) -> Vec<RowChange> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} changes came: {out:#?}",
            out.len()
        );
        out.extend(feed.next(1000, Duration::from_millis(200)).await.unwrap());
    }
    assert_eq!(out.len(), n, "{out:#?}");
    out
}

const ORDER: &str = "INSERT INTO orders (id, timestamp, customer_id, store_id, payment_method_id,
     num_products, status) VALUES ('o-1', '2026-11-25 10:00:00.123', 7, 1, 1, 2, 'completed')";

#[tokio::test]
#[ignore = "needs MariaDB: run scripts/test"]
async fn snapshot_then_binlog_with_debezium_types_transactions_and_resume() {
    let (source, c) = seeded("cdc_stream").await;
    sql(
        &source,
        &[
            ORDER,
            "INSERT INTO order_details VALUES ('o-1', 'CF01', 1, 0, 45000, FALSE),
                 ('o-1', 'CF02', 2, 0, 90000, FALSE)",
        ],
    )
    .await;
    let capture = MysqlCapture::new(&c, &CdcConfig::default(), "mysql").unwrap();
    capture.check_server().await.unwrap();
    let tables = capture.tables().await.unwrap();
    assert_eq!(tables[0].1, "id");
    assert_eq!(
        tables[1].1,
        "order_details".replace("order_details", "order_id")
    );
    let is_suggestion = tables[1]
        .0
        .columns
        .iter()
        .find(|col| col.name == "is_suggestion")
        .unwrap();
    assert_eq!(
        is_suggestion.kind,
        ColumnType::Int16,
        "BOOLEAN is TINYINT(1): int16, as Debezium types it"
    );

    // No position: a snapshot of the three rows, the last carrying the position.
    let mut feed = capture.follow(None).await.unwrap();
    let snap = read(feed.as_mut(), 3).await;
    assert!(snap.iter().all(|r| r.op == Op::Read));
    assert_eq!(snap[0].table, "orders");
    let order = snap[0].after.as_ref().unwrap();
    assert_eq!(order["id"], json!("o-1"));
    assert_eq!(
        order["timestamp"],
        json!(1_795_600_800_123i64),
        "DATETIME as epoch millis"
    );
    assert_eq!(order["customer_id"], json!(7));
    assert_eq!(snap[1].after.as_ref().unwrap()["is_suggestion"], json!(0));
    assert!(snap[..2].iter().all(|r| r.resume_after.is_none()));
    assert_eq!(snap[2].source.snapshot.as_deref(), Some("last"));
    let after_snapshot = snap[2].resume_after.clone().unwrap();
    assert_eq!(feed.snapshot_progress(), Some((3, 3)));

    // Streaming: a two-row transaction, an update and a delete.
    sql(
        &source,
        &[
            "START TRANSACTION",
            "INSERT INTO orders VALUES ('o-2', '2026-11-25 10:01:00', NULL, 2, 3, 1, NULL)",
            "INSERT INTO order_details VALUES ('o-2', 'CF01', 1, 0, 50000, TRUE)",
            "COMMIT",
            "UPDATE orders SET status = 'cancelled' WHERE id = 'o-1'",
            "DELETE FROM order_details WHERE order_id = 'o-1' AND product_id = 'CF02'",
        ],
    )
    .await;
    let stream = read(feed.as_mut(), 4).await;
    // Read to the server's binlog end, up to other tests' writes on the same server.
    let behind = feed.behind().await.unwrap();
    assert!(behind < 1_000_000, "{behind} bytes behind");
    assert_eq!(
        stream.iter().map(|r| r.op).collect::<Vec<_>>(),
        [Op::Create, Op::Create, Op::Update, Op::Delete]
    );
    assert!(stream[0].resume_after.is_none(), "not inside a transaction");
    assert!(stream[1].resume_after.is_some(), "at its end");
    let line = stream[1].after.as_ref().unwrap();
    assert_eq!(
        line["is_suggestion"],
        json!(1),
        "BOOLEAN as Debezium writes it"
    );
    assert_eq!(
        stream[0].after.as_ref().unwrap()["customer_id"],
        json!(null)
    );
    assert_eq!(
        stream[2].before.as_ref().unwrap()["status"],
        json!("completed")
    );
    assert_eq!(
        stream[2].after.as_ref().unwrap()["status"],
        json!("cancelled")
    );
    assert_eq!(
        stream[3].before.as_ref().unwrap()["product_id"],
        json!("CF02")
    );
    assert!(stream[3].after.is_none());
    assert_eq!(stream[0].source.db, c.database);
    assert!(stream[0].source.file.starts_with("binlog."));
    assert!(stream[0].source.ts_ms > 0);

    // From the position after the snapshot, the same four changes come again, identically.
    drop(feed);
    let mut again = capture.follow(Some(after_snapshot)).await.unwrap();
    let repeat = read(again.as_mut(), 4).await;
    assert_eq!(repeat, stream);
    // From the position after the transaction, only the update and the delete.
    let mut rest = capture
        .follow(stream[1].resume_after.clone())
        .await
        .unwrap();
    assert_eq!(read(rest.as_mut(), 2).await, stream[2..].to_vec());
    // Idle for longer than the heartbeat period: heartbeats come, nothing else does, and
    // what comes after is read on from the right place.
    let idle = rest.next(10, Duration::from_millis(2500)).await.unwrap();
    assert!(idle.is_empty(), "{idle:?}");

    // A column added mid-stream: capture goes on, and rows carry it with the new schema.
    sql(
        &source,
        &[
            "ALTER TABLE orders ADD COLUMN channel VARCHAR(16) NULL",
            "INSERT INTO orders VALUES ('o-3', '2026-11-25 10:02:00', 9, 1, 1, 1, NULL, 'app')",
        ],
    )
    .await;
    let added = read(rest.as_mut(), 1).await;
    assert_eq!(added[0].after.as_ref().unwrap()["channel"], json!("app"));
    let mut after_all = capture.follow(added[0].resume_after.clone()).await.unwrap();
    let nothing = after_all
        .next(10, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(
        nothing.is_empty(),
        "resumed past the last change: {nothing:?}"
    );
    let schema = added[0].schema.as_ref().unwrap();
    assert!(schema.columns.iter().any(|col| col.name == "channel"));
}

#[tokio::test]
#[ignore = "needs MariaDB: run scripts/test"]
async fn positions_are_kept_in_a_table_and_bad_settings_are_named() {
    let (_, c) = seeded("cdc_offsets").await;
    let store = MysqlCheckpoints::connect(&c, &format!("{}_offsets", c.database))
        .await
        .unwrap();
    assert_eq!(store.load("cdc.a").await.unwrap(), None);
    store.save("cdc.a", "binlog.000001:4").await.unwrap();
    store.save("cdc.a", "binlog.000001:999").await.unwrap();
    assert_eq!(
        store.load("cdc.a").await.unwrap().as_deref(),
        Some("binlog.000001:999")
    );

    let missing = CdcConfig {
        tables: vec!["no_such_table".into()],
        ..CdcConfig::default()
    };
    let e = MysqlCapture::new(&c, &missing, "mysql")
        .unwrap()
        .tables()
        .await
        .unwrap_err();
    assert!(e.message.contains("does not exist"), "{e}");
    let bad = CdcConfig {
        server_id: 0,
        ..CdcConfig::default()
    };
    assert!(MysqlCapture::new(&c, &bad, "mysql").is_err());
    let e = MysqlCapture::new(&c, &CdcConfig::default(), "mysql")
        .unwrap()
        .follow(Some("nonsense".into()))
        .await
        .err()
        .unwrap();
    assert!(e.message.contains("file:position"), "{e}");
}

/// A column changed by `ALTER TABLE ... MODIFY` while the capture lags: the rows written before
/// the change are converted with the type the binlog gives them, not refused at the same
/// position on every restart.
#[tokio::test]
#[ignore = "needs MariaDB: run scripts/test"]
async fn rows_written_before_a_column_changed_type_convert_as_they_were_written() {
    let (source, c) = seeded("cdc_modify").await;
    let capture = MysqlCapture::new(&c, &CdcConfig::default(), "mysql").unwrap();
    // A position before anything is written: the capture lags behind all that follows.
    let position = capture.end().await.unwrap();
    sql(
        &source,
        &[
            "ALTER TABLE orders ADD COLUMN note VARCHAR(16) NULL",
            "INSERT INTO orders (id, timestamp, customer_id, store_id, payment_method_id, num_products, note)
             VALUES ('m-1', '2026-11-25 10:00:00', 7, 1, 1, 1, 'abc')",
            "UPDATE orders SET note = NULL WHERE id = 'm-1'",
            "ALTER TABLE orders MODIFY note INT NULL",
            "UPDATE orders SET note = 42 WHERE id = 'm-1'",
        ],
    )
    .await;
    let mut feed = capture.follow(Some(position)).await.unwrap();
    let changes = read(feed.as_mut(), 3).await;
    assert_eq!(
        changes[0].after.as_ref().unwrap()["note"],
        json!("abc"),
        "written as VARCHAR, read as such though the column is INT now"
    );
    assert_eq!(changes[1].before.as_ref().unwrap()["note"], json!("abc"));
    assert_eq!(changes[2].after.as_ref().unwrap()["note"], json!(42));
}

/// A row's table and primary key as the events carry it.
fn row_key(change: &RowChange) -> (String, String) {
    let image = change.after.as_ref().or(change.before.as_ref()).unwrap();
    let key = match change.table.as_str() {
        "orders" => image["id"].to_string(),
        _ => format!("{}/{}", image["order_id"], image["product_id"]),
    };
    (change.table.clone(), key)
}

/// Reads until nothing more comes for a second.
async fn read_all(feed: &mut dyn ChangeFeed) -> Vec<RowChange> {
    let mut out = Vec::new();
    loop {
        let got = feed.next(1000, Duration::from_millis(1000)).await.unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

/// The rows the events leave, applied in order: table and key → row.
fn applied(
    changes: &[RowChange],
) -> std::collections::BTreeMap<(String, String), serde_json::Map<String, serde_json::Value>> {
    let mut rows = std::collections::BTreeMap::new();
    for c in changes {
        match &c.after {
            Some(after) => rows.insert(row_key(c), after.clone()),
            None => rows.remove(&row_key(c)),
        };
    }
    rows
}

/// A capture killed in the middle of its snapshot goes on after the last row it handed out, in
/// a new snapshot, and then follows the binlog from the first one's position, handing out only
/// the changes its rows' reads do not hold: every row once, no change lost, none twice; keys
/// are placed as the server orders them (`Cf00` before `CF01` by the column's collation,
/// after it byte by byte).
#[tokio::test]
#[ignore = "needs MariaDB: run scripts/test"]
async fn a_snapshot_cut_short_goes_on_after_its_last_row_and_repeats_nothing() {
    let (source, c) = seeded("cdc_cut_snapshot").await;
    let mut seed =
        vec!["INSERT INTO products VALUES ('Cf00', 'Test Coffee', 1, 1000, NOW())".to_string()];
    for i in 1..=10 {
        seed.push(format!(
            "INSERT INTO orders VALUES ('o-{i:02}', '2026-11-25 10:00:00', NULL, 1, 1, 2, NULL)"
        ));
        seed.push(format!(
            "INSERT INTO order_details VALUES ('o-{i:02}', 'CF01', 1, 0, 30000, FALSE), ('o-{i:02}', 'CF02', 1, 0, 35000, FALSE)"
        ));
    }
    source.execute(&seed).await.unwrap();
    let config = CdcConfig {
        snapshot_batch: 4,
        server_id: 5461,
        ..CdcConfig::default()
    };
    let capture = MysqlCapture::new(&c, &config, "mysql").unwrap();

    // The 10 orders and 3 lines, the last of them carrying the snapshot's progress; then the
    // capture is gone.
    let mut feed = capture.follow(None).await.unwrap();
    let first = feed.next(13, Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.len(), 13);
    assert!(first.iter().all(|r| r.op == Op::Read));
    assert_eq!(
        row_key(&first[12]),
        ("order_details".into(), "\"o-02\"/\"CF01\"".into())
    );
    let progress = first[12].resume_after.clone().unwrap();
    assert!(progress.starts_with('{'), "{progress}");
    assert!(first[..12].iter().all(|r| r.resume_after.is_none()));
    drop(feed);

    // While it is down: changes to rows already handed out (kept), to rows not yet read (their
    // read holds them), new rows on both sides of where it stopped, a delete of a row not yet
    // read.
    sql(
        &source,
        &[
            "UPDATE orders SET status = 'late' WHERE id = 'o-03'",
            "UPDATE order_details SET quantity = 5 WHERE order_id = 'o-01' AND product_id = 'CF01'",
            "UPDATE order_details SET quantity = 9 WHERE order_id = 'o-09' AND product_id = 'CF01'",
            "START TRANSACTION",
            "INSERT INTO orders VALUES ('o-00', '2026-11-25 11:00:00', NULL, 1, 1, 1, NULL)",
            "INSERT INTO order_details VALUES ('o-00', 'CF01', 1, 0, 30000, FALSE)",
            "COMMIT",
            "START TRANSACTION",
            "INSERT INTO orders VALUES ('o-11', '2026-11-25 11:00:00', NULL, 1, 1, 1, NULL)",
            "INSERT INTO order_details VALUES ('o-11', 'CF01', 1, 0, 30000, FALSE)",
            "COMMIT",
            "INSERT INTO order_details VALUES ('o-02', 'Cf00', 1, 0, 1000, FALSE)",
            "DELETE FROM order_details WHERE order_id = 'o-10' AND product_id = 'CF02'",
        ],
    )
    .await;

    let mut resumed = capture.follow(Some(progress.clone())).await.unwrap();
    let rest = read_all(resumed.as_mut()).await;
    let reads: Vec<_> = rest.iter().filter(|r| r.op == Op::Read).collect();
    // 20 lines, 3 read before, one deleted, one new after the cut: 17.
    assert_eq!(reads.len(), 17, "{reads:#?}");
    assert!(reads.iter().all(|r| r.table == "order_details"));
    let nine = reads
        .iter()
        .find(|r| row_key(r).1 == "\"o-09\"/\"CF01\"")
        .unwrap();
    assert_eq!(
        nine.after.as_ref().unwrap()["quantity"],
        json!(9),
        "read as it is now"
    );
    assert_eq!(
        reads[0].source.snapshot.as_deref(),
        Some("true"),
        "not a new first"
    );
    let changes: Vec<_> = rest.iter().filter(|r| r.op != Op::Read).collect();
    let described: Vec<(Op, (String, String))> =
        changes.iter().map(|c| (c.op, row_key(c))).collect();
    assert_eq!(
        described,
        [
            (Op::Update, ("orders".into(), "\"o-03\"".into())),
            (
                Op::Update,
                ("order_details".into(), "\"o-01\"/\"CF01\"".into())
            ),
            (Op::Create, ("orders".into(), "\"o-00\"".into())),
            (
                Op::Create,
                ("order_details".into(), "\"o-00\"/\"CF01\"".into())
            ),
            (Op::Create, ("orders".into(), "\"o-11\"".into())),
            (
                Op::Create,
                ("order_details".into(), "\"o-02\"/\"Cf00\"".into())
            ),
        ],
        "only changes the reads of their part do not hold"
    );
    // Every row read once.
    let mut seen = std::collections::HashSet::new();
    for r in first.iter().chain(reads.iter().copied()) {
        assert!(seen.insert(row_key(r)), "read twice: {:?}", row_key(r));
    }

    // A change after both parts is handed out as always, with a plain position again.
    sql(
        &source,
        &["UPDATE orders SET status = 'done' WHERE id = 'o-05'"],
    )
    .await;
    let after = read(resumed.as_mut(), 1).await;
    assert_eq!(after[0].op, Op::Update);
    let plain = after[0].resume_after.clone().unwrap();
    assert!(!plain.starts_with('{'), "{plain}");

    // Killed again while catching up: from the progress stored with the first change, the
    // same changes come after it.
    let caught_up_at = changes[0].resume_after.clone().unwrap();
    assert!(caught_up_at.starts_with('{'), "{caught_up_at}");
    drop(resumed);
    let mut again = capture.follow(Some(caught_up_at)).await.unwrap();
    let tail = read(again.as_mut(), 6).await;
    let expected: Vec<RowChange> = changes[1..]
        .iter()
        .map(|c| (*c).clone())
        .chain(after.clone())
        .collect();
    assert_eq!(tail, expected);
    drop(again);

    // What the events leave is what the tables hold now, as a new snapshot reads them.
    let all: Vec<RowChange> = first.iter().chain(&rest).chain(&after).cloned().collect();
    let mut fresh = capture.follow(None).await.unwrap();
    let now = read_all(fresh.as_mut()).await;
    let now_reads: Vec<RowChange> = now.into_iter().filter(|r| r.op == Op::Read).collect();
    assert_eq!(applied(&all), applied(&now_reads));
}
