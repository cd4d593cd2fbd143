//! The `brewline` binary as a user runs it: demo, tail, config and their errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn brewline(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_brewline"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("BREWLINE_CONFIG");
    cmd.output().expect("brewline runs")
}

fn ok(args: &[&str]) -> String {
    let out = brewline(args, &[]);
    assert!(
        out.status.success(),
        "brewline {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = brewline(args, env);
    assert!(!out.status.success(), "brewline {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

/// A figure of the demo summary, by its label.
fn figure(summary: &str, label: &str) -> u64 {
    summary
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| {
            l[l.find(label).unwrap() + label.len()..]
                .split_whitespace()
                .next()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in:\n{summary}"))
}

fn tail(dir: &Path, topic: &str) -> Vec<Value> {
    ok(&["tail", topic, "--data-dir", dir.to_str().unwrap()])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Eligible orders and the products of each order, straight from the source database.
fn eligible_and_products(dir: &Path) -> (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>) {
    let db = rusqlite::Connection::open(dir.join("source.sqlite")).unwrap();
    let eligible = db
        .prepare(
            "SELECT o.id FROM orders o
             JOIN customers c ON c.id = o.customer_id AND c.tier = 'diamond'
             JOIN payment_method p ON p.id = o.payment_method_id AND p.bank = 'ACB'",
        )
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut products: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut st = db
        .prepare("SELECT order_id, product_id FROM order_details")
        .unwrap();
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    for row in rows {
        let (o, p) = row.unwrap();
        products.entry(o).or_default().insert(p);
    }
    (eligible, products)
}

/// Suggestions from `tail`: exactly one per eligible order, none for another, never a product
/// of the order; returns how many there are.
fn check_suggestions(dir: &Path) -> usize {
    let records = tail(dir, "order_suggestions");
    let (eligible, products) = eligible_and_products(dir);
    let mut seen = BTreeSet::new();
    for r in &records {
        let id = r["key"].as_str().unwrap().to_string();
        assert_eq!(r["value"]["order_id"], id.as_str());
        assert!(seen.insert(id.clone()), "order {id} suggested twice");
        let product = r["value"]["product_id"].as_str().unwrap();
        assert!(
            !products[&id].contains(product),
            "suggested a product of the order"
        );
        assert_eq!(r["value"]["is_suggestion"], true);
    }
    assert_eq!(
        seen, eligible,
        "one suggestion per eligible order, none for another"
    );
    records.len()
}

#[test]
fn demo_suggests_once_per_eligible_order_and_continues_on_the_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let summary = ok(&["demo", "--orders", "20000", "--seed", "7", "--data-dir", d]);
    assert_eq!(figure(&summary, "orders"), 20_000);
    assert_eq!(figure(&summary, "complete orders"), 20_000);
    assert_eq!(figure(&summary, "dead-lettered events"), 0);
    let suggested = check_suggestions(dir.path());
    assert!(suggested > 5, "about 1 in 800 orders is eligible");
    assert_eq!(figure(&summary, "suggestions"), suggested as u64);
    assert_eq!(figure(&summary, "eligible orders"), suggested as u64);
    let lines = figure(&summary, "order lines");
    assert_eq!(figure(&summary, "change events"), 20_000 + lines);
    assert_eq!(tail(dir.path(), "mysql.coffee_shop.orders").len(), 20_000);
    assert!(tail(dir.path(), "brewline.dlq").is_empty());

    // The demo ends with a batch run: every gate passed, the marts printed.
    assert!(summary.contains("every gate passed"), "{summary}");
    assert!(summary.contains("mart/revenue_daily"), "{summary}");
    assert!(dir.path().join("lake/silver/orders/_delta_log").is_dir());

    // A data dir from before the capture's position was named `cdc.{prefix}.{db}` goes on
    // from its position as well.
    let log = rusqlite::Connection::open(dir.path().join("log.sqlite")).unwrap();
    let renamed = log
        .execute(
            "UPDATE checkpoints SET name = 'capture.coffee_shop' WHERE name = 'cdc.mysql.coffee_shop'",
            [],
        )
        .unwrap();
    assert_eq!(renamed, 1);
    drop(log);

    let again = ok(&["demo", "--orders", "3000", "--seed", "7", "--data-dir", d]);
    assert_eq!(figure(&again, "orders"), 23_000);
    assert_eq!(
        tail(dir.path(), "mysql.coffee_shop.orders").len(),
        23_000,
        "nothing captured twice"
    );
    // Bronze landed only the new events; a batch run on its own finds nothing new.
    let bronze = |s: &str| figure(s, "bronze/orders_cdc");
    assert_eq!(bronze(&summary), 20_000);
    assert_eq!(bronze(&again), 3_000);
    let batch = ok(&["batch", "run", "--data-dir", d]);
    assert!(batch.contains("every gate passed"), "{batch}");
    assert_eq!(bronze(&batch), 0);
    assert_eq!(figure(&batch, "silver/orders"), 23_000);
    assert_eq!(figure(&again, "complete orders"), 23_000);
    let suggested = check_suggestions(dir.path());
    assert_eq!(figure(&again, "suggestions"), suggested as u64);
}

#[test]
fn demo_paces_the_tills_at_the_given_rate() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let summary = ok(&[
        "demo",
        "--orders",
        "200",
        "--rate",
        "400",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(450),
        "200 orders at 400/s take 0.5 s"
    );
    assert!(summary.contains("at 400 orders/s"), "{summary}");
    assert_eq!(figure(&summary, "complete orders"), 200);
}

#[test]
fn tail_prints_json_lines_and_honours_max() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&["demo", "--orders", "50", "--data-dir", d, "--schemas", "on"]);
    let out = ok(&[
        "tail",
        "mysql.coffee_shop.order_details",
        "--data-dir",
        d,
        "--max",
        "3",
    ]);
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!(r["topic"], "mysql.coffee_shop.order_details");
        assert!(r["partition"].as_i64().unwrap() < 3);
        assert!(r["offset"].is_i64());
        assert_eq!(r["key"], r["value"]["payload"]["after"]["order_id"]);
        assert_eq!(r["value"]["payload"]["op"], "c");
        assert_eq!(
            r["value"]["schema"]["name"],
            "mysql.coffee_shop.order_details.Envelope"
        );
    }
}

#[test]
fn wrong_input_says_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let e = fails(&["demo", "--orders", "many"], &[]);
    assert!(e.contains("--orders") && e.contains("many"), "{e}");
    let e = fails(&["demo", "--rate", "-5", "--data-dir", d], &[]);
    assert!(e.contains("positive number of orders a second"), "{e}");
    let e = fails(&["demo", "--schemas", "maybe", "--data-dir", d], &[]);
    assert!(e.contains("expected `on` or `off`"), "{e}");
    let e = fails(&["tail", "order_suggestions", "--data-dir", d], &[]);
    assert!(
        e.contains("no embedded log") && e.contains("brewline demo"),
        "{e}"
    );
    ok(&["demo", "--orders", "5", "--data-dir", d]);
    let e = fails(&["tail", "suggestions", "--data-dir", d], &[]);
    assert!(
        e.contains("no topic \"suggestions\"") && e.contains("order_suggestions"),
        "{e}"
    );

    let cfg = dir.path().join("brewline.toml");
    std::fs::write(&cfg, "[recommender]\ngroupp = \"x\"\n").unwrap();
    let e = fails(&["--config", cfg.to_str().unwrap(), "config"], &[]);
    assert!(e.contains("groupp"), "{e}");
    let e = fails(&["config"], &[("BREWLINE_RECOMMENDER__BACTH", "5")]);
    assert!(e.contains("bacth"), "{e}");
    let e = fails(&["config"], &[("BREWLINE_TOPICS__PARTITIONS", "0")]);
    assert!(e.contains("topics.partitions must be at least 1"), "{e}");
    let e = fails(&["config"], &[("BREWLINE_SERVE__REFRESH_MS", "10")]);
    assert!(e.contains("serve.refresh_ms"), "{e}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let e = fails(&["serve", "--data-dir", d, "--addr", &addr], &[]);
    assert!(e.contains(&addr) && e.contains("is the port taken"), "{e}");
    let e = fails(&["serve", "--addr", "localhost"], &[]);
    assert!(e.contains("--addr"), "{e}");
}

#[test]
fn configuration_merges_file_then_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("brewline.toml");
    std::fs::write(
        &cfg,
        "[topics]\nsuggestions = \"from-file\"\ndead_letters = \"dlq-file\"\n",
    )
    .unwrap();
    let out = brewline(
        &["--config", cfg.to_str().unwrap(), "config"],
        &[("BREWLINE_TOPICS__SUGGESTIONS", "from-env")],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("suggestions = \"from-env\""), "{text}");
    assert!(text.contains("dead_letters = \"dlq-file\""), "{text}");
    assert!(text.contains("order_ttl_secs = 90"), "{text}");

    let d = dir.path().join("data");
    let out = brewline(
        &["demo", "--orders", "10", "--data-dir", d.to_str().unwrap()],
        &[("BREWLINE_TOPICS__SUGGESTIONS", "recs")],
    );
    assert!(out.status.success());
    ok(&["tail", "recs", "--data-dir", d.to_str().unwrap()]);
    let e = fails(
        &[
            "tail",
            "order_suggestions",
            "--data-dir",
            d.to_str().unwrap(),
        ],
        &[],
    );
    assert!(e.contains("recs"), "the configured topic was used: {e}");
}

#[test]
fn bench_times_every_stage_with_and_without_schemas() {
    for schemas in ["on", "off"] {
        let out = ok(&["bench", "--orders", "300", "--schemas", schemas]);
        assert!(out.contains(&format!("schemas {schemas}")), "{out}");
        for stage in [
            "generate",
            "tills -> source",
            "capture -> log",
            "recommender",
            "orders completed 300",
        ] {
            assert!(out.contains(stage), "no {stage:?} in:\n{out}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("something"), "x").unwrap();
    let e = fails(&["bench", "--data-dir", dir.path().to_str().unwrap()], &[]);
    assert!(e.contains("not empty"), "{e}");
}

#[test]
fn every_command_has_help_and_json_logs_are_json() {
    for cmd in [
        vec!["--help"],
        vec!["demo", "--help"],
        vec!["tail", "--help"],
        vec!["bench", "--help"],
        vec!["config", "--help"],
        vec!["cdc", "--help"],
        vec!["serve", "--help"],
        vec!["batch", "run", "--help"],
        vec!["batch", "check", "--help"],
        vec!["batch", "schedule", "--help"],
        vec!["batch", "report", "--help"],
        vec!["batch", "history", "--help"],
        vec!["batch", "export", "--help"],
        vec!["batch", "publish-affinity", "--help"],
        vec!["batch", "bench", "--help"],
    ] {
        let out = ok(&cmd);
        assert!(out.contains("Usage:"), "{cmd:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = brewline(
        &[
            "--log-format",
            "json",
            "demo",
            "--orders",
            "5",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[("BREWLINE_LOG", "info")],
    );
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let logs: Vec<Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["fields"]["message"] == "lookups published"),
        "{stderr}"
    );
}

#[tokio::test]
async fn dead_letters_are_listed_shown_replayed_and_purged() {
    use brewline_ports::{EventLog, Record};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&["demo", "--orders", "40", "--seed", "3", "--data-dir", d]);
    // Two poison records in the orders topic, which the next run dead-letters.
    {
        let log = brewline_embedded::EmbeddedLog::open(&dir.path().join("log.sqlite")).unwrap();
        let bad = |k: &str, v: &[u8]| Record::keyed(k, Some(v.to_vec()));
        log.producer()
            .unwrap()
            .send(
                "mysql.coffee_shop.orders",
                vec![bad("bad-1", b"not json"), bad("bad-2", b"{}")],
            )
            .await
            .unwrap();
    }
    ok(&["demo", "--orders", "10", "--seed", "4", "--data-dir", d]);
    let dlq = |args: &[&str]| {
        let mut all = vec!["dlq"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--data-dir", d]);
        ok(&all)
    };
    let list = dlq(&["list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines[0].starts_with("0:0\tmysql.coffee_shop.orders["),
        "{list}"
    );
    assert!(lines[0].contains("not a Debezium change event"), "{list}");
    assert!(lines[1].contains("no `payload`"), "{list}");

    let shown: Value = serde_json::from_str(&dlq(&["show", "1"])).unwrap();
    assert_eq!(shown["key"], "bad-2");
    assert_eq!(shown["value"], serde_json::json!({}));
    assert_eq!(
        shown["headers"]["brewline.error.topic"],
        "mysql.coffee_shop.orders"
    );

    let dry = dlq(&["replay", "--dry-run"]);
    assert!(
        dry.contains("would send 2 record(s) to mysql.coffee_shop.orders"),
        "{dry}"
    );
    let before = tail(dir.path(), "mysql.coffee_shop.orders").len();
    let replayed = dlq(&["replay", "--offset", "1"]);
    assert!(replayed.contains("none marked handled"), "{replayed}");
    let orders = tail(dir.path(), "mysql.coffee_shop.orders");
    assert_eq!(orders.len(), before + 1, "one record replayed");
    let back = orders
        .iter()
        .find(|r| r["key"] == "bad-2" && r.get("headers").is_some())
        .unwrap();
    assert_eq!(
        back["headers"]["brewline.replayed.from"],
        "brewline.dlq:0:1"
    );
    assert_eq!(dlq(&["list"]).lines().count(), 2, "still not handled");

    let purged = dlq(&["purge"]);
    assert!(
        purged.contains("2 dead letter(s) marked handled"),
        "{purged}"
    );
    assert_eq!(dlq(&["list"]).lines().count(), 0);
    assert_eq!(dlq(&["list", "--all"]).lines().count(), 2);
    let missing = fails(&["dlq", "show", "99", "--data-dir", d], &[]);
    assert!(missing.contains("no dead letter at offset 99"), "{missing}");
    let wrong = fails(&["dlq", "list", "--data-dir", "/nonexistent"], &[]);
    assert!(wrong.contains("no embedded log in /nonexistent"), "{wrong}");
}
