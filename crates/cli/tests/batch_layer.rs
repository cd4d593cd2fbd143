//! `brewline batch run` as an operator runs it: on the embedded engines with a run killed
//! mid-write, and on the real ones (CDC topics on Kafka, dimensions from MariaDB, the lake on
//! an S3 server) reconciled with the source database to the unit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use brewline_batch::{Lake, S3Settings};
use mysql_async::prelude::Queryable;

mod common;
use common::{daily_revenue, database, env, revenue_by_sql, rows_of, Deployment};

fn brewline(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_brewline"));
    cmd.args(args).env_remove("BREWLINE_CONFIG");
    cmd.output().unwrap()
}

/// A run killed with SIGKILL while it writes leaves every table readable at a committed
/// version; the next run completes the lake, landing each event once, to the same marts as a
/// run that was never interrupted.
#[test]
fn a_batch_run_killed_mid_write_leaves_the_lake_readable_and_the_next_run_completes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let out = brewline(&["demo", "--orders", "3000", "--seed", "11", "--data-dir", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whole = tmp.path().join("lake-whole");
    let killed = tmp.path().join("lake-killed");
    let k = killed.to_str().unwrap();

    let mut run = Command::new(env!("CARGO_BIN_EXE_brewline"))
        .args(["batch", "run", "--data-dir", d, "--lake", k])
        .env_remove("BREWLINE_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed right after its first commit: bronze landed in part, nothing else.
    let first = killed.join("bronze/orders_cdc/_delta_log/00000000000000000000.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !first.exists() {
        assert!(Instant::now() < deadline, "the run never committed");
        assert!(
            run.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    run.kill().unwrap();
    run.wait().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let lake = Lake::at(k);
        // Every table there is reads at its last commit.
        for table in [
            "bronze/orders_cdc",
            "bronze/order_details_cdc",
            "silver/orders",
        ] {
            lake.read(table).await.unwrap();
        }
        assert_eq!(lake.version("mart/revenue_daily").await.unwrap(), None);
    });

    let out = brewline(&["batch", "run", "--data-dir", d, "--lake", k]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = brewline(&[
        "batch",
        "run",
        "--data-dir",
        d,
        "--lake",
        whole.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rt.block_on(async {
        let (killed, whole) = (Lake::at(k), Lake::at(whole.to_str().unwrap()));
        for table in ["bronze/orders_cdc", "bronze/order_details_cdc"] {
            let cols = ["kafka_topic", "kafka_partition", "kafka_offset"];
            let a = rows_of(&killed.read(table).await.unwrap(), &cols);
            let b = rows_of(&whole.read(table).await.unwrap(), &cols);
            assert_eq!(a.len(), b.len(), "{table}: each event landed once");
            assert_eq!(a, b, "{table}");
        }
        assert_eq!(daily_revenue(&killed).await, daily_revenue(&whole).await);
        let affinity = ["product_id", "other_product_id", "together"];
        assert_eq!(
            rows_of(
                &killed.read("mart/product_affinity").await.unwrap(),
                &affinity
            ),
            rows_of(
                &whole.read("mart/product_affinity").await.unwrap(),
                &affinity
            )
        );
    });
}

/// The test S3 server's settings, as config and as the environment `brewline` reads.
fn s3() -> (S3Settings, Vec<(&'static str, String)>) {
    let settings = S3Settings {
        endpoint: Some(env("TEST_BREWLINE_S3")),
        region: Some("us-east-1".into()),
        access_key_id: Some(env("TEST_BREWLINE_S3_KEY")),
        secret_access_key: Some(env("TEST_BREWLINE_S3_SECRET")),
        allow_http: true,
    };
    let environment = vec![
        ("BREWLINE_BATCH__S3__ENDPOINT", env("TEST_BREWLINE_S3")),
        ("BREWLINE_BATCH__S3__REGION", "us-east-1".into()),
        (
            "BREWLINE_BATCH__S3__ACCESS_KEY_ID",
            env("TEST_BREWLINE_S3_KEY"),
        ),
        (
            "BREWLINE_BATCH__S3__SECRET_ACCESS_KEY",
            env("TEST_BREWLINE_S3_SECRET"),
        ),
        ("BREWLINE_BATCH__S3__ALLOW_HTTP", "true".into()),
    ];
    (settings, environment)
}

fn batch_run(d: &Deployment, lake: &str, environment: &[(&str, String)]) -> String {
    batch(
        d,
        &["batch", "run", "--servers", "--lake", lake],
        environment,
    )
}

/// `brewline ARGS` of the deployment with `environment` and its run history in its folder.
fn batch(d: &Deployment, args: &[&str], environment: &[(&str, String)]) -> String {
    let mut cmd = d.command(args);
    cmd.env(
        "BREWLINE_BATCH__HISTORY",
        d.dir.path().join("history.sqlite"),
    );
    for (k, v) in environment {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "brewline {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Orders written to MariaDB, captured by `brewline cdc` into Kafka, landed by `brewline batch
/// run --servers` in a lake on S3: gold revenue per day equals the source's subtotals per
/// day to the unit; a second run lands nothing twice; a price change and a new store between
/// runs version the dimensions, and the run report is in the lake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MariaDB, a Kafka broker and an S3 server: run scripts/test"]
async fn batch_runs_on_kafka_and_mysql_into_s3_and_reconciles_with_the_source() {
    let d = Deployment::with_cdc("lake", (6, 7));
    d.set_up();
    d.run(&["simulate", "--orders", "300", "--seed", "31"]);
    d.run(&["cdc", "--until-caught-up"]);
    let (settings, environment) = s3();
    let root = format!("s3://lake/{}", d.prefix);
    let summary = batch_run(&d, &root, &environment);
    assert!(summary.contains("every gate passed"), "{summary}");
    let lake = Lake::with_s3(&root, &settings);

    let mut db = database(&d).await;
    let source = revenue_by_sql(&mut db).await;
    assert_eq!(daily_revenue(&lake).await, source, "to the unit, per day");
    let events = |lake: &Lake| {
        let lake = lake.clone();
        async move {
            let orders = lake.read("bronze/orders_cdc").await.unwrap();
            let lines = lake.read("bronze/order_details_cdc").await.unwrap();
            (
                brewline_batch::lake::rows(&orders),
                brewline_batch::lake::rows(&lines),
            )
        }
    };
    let landed = events(&lake).await;
    let lines: i64 = db
        .query_first("SELECT COUNT(*) FROM order_details")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(landed, (300, lines as usize));

    // Again with nothing new: nothing landed twice.
    batch_run(&d, &root, &environment);
    assert_eq!(events(&lake).await, landed);

    // A price change and a new store, then more orders.
    db.query_drop(
        "UPDATE products SET unit_price = unit_price + 1000, updated_at = NOW(3) WHERE id = 'CF01'",
    )
    .await
    .unwrap();
    db.query_drop(
        "INSERT INTO stores (id, name, address, district, city, updated_at) \
         VALUES (7000, 'Kofi Harbour', '7 Harbour Road', 'District 4', 'Ho Chi Minh', NOW(3))",
    )
    .await
    .unwrap();
    d.run(&["simulate", "--orders", "100", "--seed", "32"]);
    d.run(&["cdc", "--until-caught-up"]);
    batch_run(&d, &root, &environment);
    assert_eq!(daily_revenue(&lake).await, revenue_by_sql(&mut db).await);
    let dims = lake.read("gold/dim_products").await.unwrap();
    let cf01: Vec<_> = rows_of(&dims, &["product_id", "version", "is_current"])
        .into_iter()
        .filter(|r| r[0] == "CF01")
        .collect();
    assert_eq!(
        cf01,
        vec![
            vec!["CF01".to_string(), "1".into(), "false".into()],
            vec!["CF01".to_string(), "2".into(), "true".into()],
        ]
    );
    let stores = rows_of(
        &lake.read("gold/dim_stores").await.unwrap(),
        &["store_id", "name", "is_current"],
    );
    assert!(stores.contains(&vec![
        "7000".to_string(),
        "Kofi Harbour".into(),
        "true".into()
    ]));

    // More orders after the last run: `brewline serve --servers` adds them, read from Kafka
    // from the offsets the run landed, to the lake's marts on S3 — equal to the source again.
    d.run(&["simulate", "--orders", "80", "--seed", "33"]);
    d.run(&["cdc", "--until-caught-up"]);
    let source = revenue_by_sql(&mut db).await;
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut cmd = d.command(&["serve", "--servers", "--lake", &root, "--addr", &addr]);
    cmd.env(
        "BREWLINE_BATCH__HISTORY",
        d.dir.path().join("history.sqlite"),
    );
    for (k, v) in &environment {
        cmd.env(k, v);
    }
    let log = d.dir.path().join("serve.log");
    let mut serve = common::Process(
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            serve.0.try_wait().unwrap().is_none(),
            "serve ended: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if std::net::TcpStream::connect(&addr).is_ok() {
            let (status, body) = common::http_get(&addr, "/healthz");
            let health: serde_json::Value = serde_json::from_str(&body).unwrap();
            let speed = &health["watermark"]["speed"];
            if status == 200 && speed["orders"].as_u64() >= Some(80) && speed["lag"] == 0 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "serve not caught up in 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (first, last) = (
        source.keys().next().unwrap(),
        source.keys().next_back().unwrap(),
    );
    let (status, body) =
        common::http_get(&addr, &format!("/api/sales/daily?from={first}&to={last}"));
    assert_eq!(status, 200, "{body}");
    let daily: serde_json::Value = serde_json::from_str(&body).unwrap();
    let served: BTreeMap<String, i64> = daily["days"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["revenue"].as_i64() > Some(0))
        .map(|d| {
            (
                d["date"].as_str().unwrap().to_string(),
                d["revenue"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        served, source,
        "the lake's marts + the speed layer = the source"
    );
    serve.kill();
    db.disconnect().await.unwrap();

    let history = batch(&d, &["batch", "history"], &environment);
    assert_eq!(history.matches("passed").count(), 3, "{history}");

    // The run reports are in the lake, next to its tables.
    let dir = std::path::Path::new(&env("TEST_BREWLINE_S3_DIR"))
        .join("lake")
        .join(&d.prefix)
        .join("_reports");
    let reports = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .count();
    assert_eq!(reports, 3);
}

/// The other batch commands on the embedded engines: a schedule of two runs, each in the run
/// history; the published gold checked alone; the report with its charts; the affinity
/// published; the tables compacted and vacuumed; a run starved of memory stopped with the
/// setting to raise; a wrong layer named as such.
#[test]
fn schedule_history_check_report_and_publish_affinity() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let ok = |args: &[&str]| {
        let out = brewline(args);
        assert!(
            out.status.success(),
            "brewline {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&["demo", "--orders", "1500", "--seed", "3", "--data-dir", d]);
    let scheduled = ok(&[
        "batch",
        "schedule",
        "--every",
        "1s",
        "--runs",
        "2",
        "--data-dir",
        d,
    ]);
    assert_eq!(
        scheduled.matches("every gate passed").count(),
        2,
        "{scheduled}"
    );
    let history = ok(&["batch", "history", "--data-dir", d]);
    assert_eq!(history.matches("passed").count(), 2, "{history}");
    assert!(history.contains("bronze,silver,gold"), "{history}");

    let checked = ok(&["batch", "check", "--layer", "gold", "--data-dir", d]);
    assert!(checked.contains("every gate passed"), "{checked}");
    assert!(checked.contains("gates: "), "{checked}");

    let out = tmp.path().join("report");
    let report = ok(&[
        "batch",
        "report",
        "--data-dir",
        d,
        "--out",
        out.to_str().unwrap(),
    ]);
    for title in ["Revenue per category", "Payment mix", "best partner"] {
        assert!(report.contains(title), "{title}: {report}");
    }
    for chart in ["revenue_per_day.svg", "revenue_per_category.svg"] {
        let svg = std::fs::read_to_string(out.join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<rect x="),
            "{chart}"
        );
    }
    let published = ok(&["batch", "publish-affinity", "--data-dir", d]);
    assert!(published.contains("product affinity:"), "{published}");

    // Housekeeping after the runs: every table compacted, the files the second run replaced
    // deleted, and the gold served still whole.
    let optimized = ok(&["batch", "optimize", "--data-dir", d]);
    assert!(optimized.contains("fact_order_lines: "), "{optimized}");
    let vacuumed = ok(&["batch", "vacuum", "--retain", "1ms", "--data-dir", d]);
    assert!(
        vacuumed
            .lines()
            .any(|l| l.ends_with("files deleted") && !l.contains(": 0 files")),
        "{vacuumed}"
    );
    let checked = ok(&["batch", "check", "--layer", "gold", "--data-dir", d]);
    assert!(checked.contains("every gate passed"), "{checked}");
    // Compaction and vacuum move files, not rows: the next run is still incremental; --full
    // rebuilds.
    let next = ok(&["batch", "run", "--data-dir", d]);
    assert!(
        next.contains("silver: incremental: ") && next.contains("gold: incremental: "),
        "{next}"
    );
    let full = ok(&["batch", "run", "--full", "--data-dir", d]);
    assert!(
        full.contains("silver: rebuilt whole: asked (--full)"),
        "{full}"
    );
    // The memory limit is a bound: a run given too little stops, naming the setting to
    // raise, and publishes nothing (the gold checked above stays).
    let starved = Command::new(env!("CARGO_BIN_EXE_brewline"))
        .args(["batch", "run", "--full", "--data-dir", d])
        .env_remove("BREWLINE_CONFIG")
        .env("BREWLINE_BATCH__MEMORY_LIMIT", "64KiB")
        .output()
        .unwrap();
    assert!(!starved.status.success());
    let stderr = String::from_utf8_lossy(&starved.stderr);
    assert!(
        stderr.contains("Resources exhausted") && stderr.contains("BREWLINE_BATCH__MEMORY_LIMIT"),
        "{stderr}"
    );
    let checked = ok(&["batch", "check", "--layer", "gold", "--data-dir", d]);
    assert!(checked.contains("every gate passed"), "{checked}");
    let bad = brewline(&["batch", "vacuum", "--retain", "7w", "--data-dir", d]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("use ms, s, m, h or d"), "{stderr}");
    // The recommender now suggests by affinity where the order's products have partners.
    // About one order in a thousand is eligible (diamond customer, ACB): enough orders for a
    // few dozen suggestions.
    ok(&["demo", "--orders", "30000", "--seed", "4", "--data-dir", d]);
    let suggestions = ok(&["tail", "order_suggestions", "--data-dir", d]);
    let strategies: Vec<String> = suggestions
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["value"]["strategy"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        strategies.iter().any(|s| s == "affinity"),
        "no suggestion by affinity among {}",
        strategies.len()
    );

    let wrong = brewline(&["batch", "run", "--layer", "platinum", "--data-dir", d]);
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("use bronze, silver or gold"), "{stderr}");
}

/// The lake's lock on S3: the conditional put (`If-None-Match`) lets one run in at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3 server: run scripts/test"]
async fn one_batch_run_at_a_time_on_an_s3_lake() {
    use brewline_batch::lock::RunLock;
    let (settings, _) = s3();
    let root = format!("s3://lake/lock{}", brewline_ports::now_us());
    let lake = Lake::with_s3(&root, &settings);
    let a = RunLock::acquire(&lake, "run-a").await.unwrap();
    match RunLock::acquire(&lake, "run-b").await {
        Err(brewline_batch::BatchError::Locked(why)) => assert!(why.contains("run-a"), "{why}"),
        other => panic!("a second run got in: {:?}", other.map(|_| ())),
    }
    a.release().await;
    RunLock::acquire(&lake, "run-b")
        .await
        .unwrap()
        .release()
        .await;
}
