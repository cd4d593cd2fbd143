//! `brewline bench --brokers B --mysql URL`: change capture from the MySQL/MariaDB binlog.
//!
//! 1. **Throughput**: a bulk insert of `--lines` order lines (a quarter as many orders, four
//!    lines each, in statements of 200 000 lines), then, on that backlog of the binlog, one
//!    after the other, each once MariaDB is done with the insert (pages written, rows purged): `brewline cdc` (its own process, `--until-caught-up`), Debezium's MariaDB
//!    connector on Kafka Connect (with `--connect`: `scripts/connect`, configured as
//!    `deploy/connect/mysql-source.json`; it took its snapshot of the empty tables and stopped
//!    before the insert), each into topics of its own on the same cluster, measured the same
//!    way (records over the time from its first record in its topics to its last, and its peak
//!    RSS); and the limit, a raw read of the same binlog (mysql_async's binlog stream, rows
//!    decoded, nothing converted or sent). `brewline cdc` runs twice: in Kafka transactions
//!    (the default) and without (`kafka.transactions = "off"`, from the same position into
//!    topics of its own), side by side. Then the same rows read by an initial snapshot.
//! 2. **Latency**: the tills write `--rate` orders a second for `--seconds` (each rate of a
//!    list in turn: the latency curve), every one eligible, while the capture runs and a `brewline recommend` process answers; each
//!    order's latency runs from its `timestamp` (`NOW(3)`, taken inside its transaction just
//!    before the commit) to the moment a consumer of this benchmark receives its change event
//!    (capture) and its suggestion (end to end). A consumer receiving a record comes after the
//!    broker acknowledged it, so these are upper bounds of "commit → acknowledged".

use std::collections::HashMap;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use brewline_core::{names, ReferenceData};
use brewline_kafka::{KafkaConsumer, KafkaLog, TransactionsMode};
use brewline_mysql::{MysqlCapture, MysqlCheckpoints, MysqlSource};
use brewline_ports::{CheckpointStore, Consumer, EventLog, SourceDb, Subscription};
use brewline_speed::stats::Stats;
use tokio::sync::watch;

use crate::args::BenchArgs;
use crate::config::Config;

/// A deployment of its own for one part of the benchmark: a fresh database and topics.
fn fresh(config: &Config, part: &str) -> Config {
    let mut c = config.clone();
    let name = format!("bench_{part}_{}", brewline_ports::now_us());
    c.mysql.database = name.clone();
    c.capture.topic_prefix = "mysql".into();
    c.topics.orders = format!("mysql.{name}.orders");
    c.topics.order_details = format!("mysql.{name}.order_details");
    c.topics.suggestions = format!("{name}.suggestions");
    c.topics.dead_letters = format!("{name}.dlq");
    c.recommender.group = format!("{name}-recs");
    c.cdc.server_id = 2000 + (brewline_ports::now_us() % 1_000_000) as u32;
    c
}

async fn prepare(config: &Config) -> anyhow::Result<MysqlSource> {
    let source = MysqlSource::new(&config.mysql)?;
    source.init_schema().await?;
    source.seed_reference(&ReferenceData::bundled()?).await?;
    let log = KafkaLog::new(config.kafka.clone());
    for (topic, partitions) in crate::topics::all(config) {
        log.create_topic(&topic, partitions).await?;
    }
    Ok(source)
}

/// Captures until caught up; returns rows and seconds.
async fn capture_once(config: &Config) -> anyhow::Result<(u64, f64)> {
    let stats = Arc::new(Stats::default());
    let (_keep, shutdown) = watch::channel(false);
    let began = Instant::now();
    crate::cdc::capture(
        config,
        stats.clone(),
        crate::cdc::caught_up(shutdown),
        false,
    )
    .await?;
    Ok((Stats::get(&stats.captured), began.elapsed().as_secs_f64()))
}

/// The same capture from the same binlog position, into topics of its own (prefix `plain`),
/// sending and then saving its position instead of committing both in Kafka transactions:
/// the side-by-side measure of what the transactions cost.
async fn without_transactions(c: &Config, start: &str) -> anyhow::Result<Config> {
    let mut plain = c.clone();
    plain.kafka.transactions = TransactionsMode::Off;
    plain.capture.topic_prefix = "plain".into();
    let db = &plain.mysql.database;
    plain.topics.orders = names::cdc_topic("plain", db, "orders");
    plain.topics.order_details = names::cdc_topic("plain", db, "order_details");
    MysqlCheckpoints::connect(&plain.mysql, &plain.cdc.offsets_database)
        .await?
        .save(&names::capture_checkpoint("plain", db), start)
        .await?;
    // Made before it starts, so that its records are counted from none.
    let log = KafkaLog::new(plain.kafka.clone());
    for topic in [&plain.topics.orders, &plain.topics.order_details] {
        crate::topics::create_one(&log, &plain, topic, plain.topics.partitions).await?;
    }
    Ok(plain)
}

/// Waits until MariaDB is done with what the bulk insert left it (dirty pages written out,
/// old row versions purged: InnoDB writes less than 1 MiB in a second and, where the server
/// reports it, its history list is under 1 000), so that no contender is timed while the
/// server still works for the insert. Gives up after five minutes, saying so.
async fn settle(source: &MysqlSource) -> anyhow::Result<()> {
    let began = Instant::now();
    let mut written = source.global_status("Innodb_data_written").await?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = source.global_status("Innodb_data_written").await?;
        let history = source.global_status("Innodb_history_list_length").await?;
        let quiet = now
            .zip(written)
            .is_none_or(|(n, w)| n.saturating_sub(w) < 1 << 20)
            && history.is_none_or(|h| h < 1_000);
        if quiet {
            println!(
                "  (MariaDB quiet after {:.0} s)",
                began.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if began.elapsed() > Duration::from_secs(300) {
            println!("  (MariaDB still busy after 5 minutes: measuring anyway)");
            return Ok(());
        }
        written = now;
    }
}

pub async fn run(
    mut config: Config,
    args: BenchArgs,
    brokers: String,
    mysql: String,
) -> anyhow::Result<ExitCode> {
    config.kafka.brokers = brokers;
    config.mysql.url = mysql;
    args.redis.apply(&mut config);

    // 1. Throughput.
    let c = fresh(&config, "bulk");
    prepare(&c).await?;
    capture_once(&c).await?; // the empty tables' snapshot: the position to stream from
    let binlog = MysqlCapture::new(&c.mysql, &c.cdc, &c.capture.topic_prefix)?;
    let start = binlog.binlog_position().await?;
    let work = tempfile::tempdir()?;
    let debezium = match &args.connect {
        Some(script) => Some(
            crate::bench_debezium::Debezium::prepare(&c, script, &args.connector, work.path())
                .await?,
        ),
        None => None,
    };
    let orders = args.lines.div_ceil(4);
    let began = Instant::now();
    let per_statement = 50_000u64;
    let mut statements = Vec::new();
    for start in (0..orders).step_by(per_statement as usize) {
        let end = (start + per_statement).min(orders);
        let ids = format!(
            "SELECT seq, CONCAT('bulk-', LPAD(seq, 9, '0')) AS id FROM seq_{}_to_{}",
            start + 1,
            end
        );
        statements.push(format!(
            "INSERT INTO orders (id, timestamp, customer_id, store_id, payment_method_id, num_products, status)
             SELECT o.id, NOW(3), NULL, 1 + o.seq % 1000, 1 + o.seq % 12, 4, 'completed' FROM ({ids}) o"
        ));
        statements.push(format!(
            "INSERT INTO order_details (order_id, product_id, quantity, discount_percent, subtotal, is_suggestion)
             SELECT o.id, p.id, 1, 0, p.unit_price, FALSE
             FROM ({ids}) o CROSS JOIN (SELECT id, unit_price FROM products ORDER BY id LIMIT 4) p"
        ));
    }
    let source = MysqlSource::new(&c.mysql)?;
    source
        .execute(&statements)
        .await
        .context("the bulk insert (needs MariaDB's built-in sequence tables, seq_1_to_N)")?;
    let inserted = began.elapsed().as_secs_f64();
    println!(
        "bulk insert: {orders} orders, {} lines in {inserted:.1} s",
        orders * 4
    );
    settle(&source).await?;
    let ours = crate::bench_debezium::brewline_cdc(&c, work.path()).await?;
    let row = |name: &str, m: &crate::bench_debezium::Measured| {
        println!(
            "  {name:<30} {:>9} records {:>7.2} s ({:>6.2} s from its start) {:>9.0} records/s  peak RSS {:>7.1} MiB",
            m.records,
            m.seconds,
            m.wall,
            m.per_second(),
            m.peak_rss_mib
        )
    };
    row("brewline cdc", &ours);
    settle(&source).await?;
    let plain = without_transactions(&c, &start).await?;
    let theirs_plain = crate::bench_debezium::brewline_cdc(&plain, work.path()).await?;
    row("brewline cdc, no transactions", &theirs_plain);
    println!(
        "  in transactions / without: {:.1} % of the records/s (the cost of Kafka transactions)",
        100.0 * ours.per_second() / theirs_plain.per_second().max(1e-9)
    );
    if let Some(debezium) = &debezium {
        settle(&source).await?;
        let theirs = debezium.catch_up(&c, (orders * 5) as i64).await?;
        row("Debezium (Kafka Connect)", &theirs);
        println!(
            "  brewline cdc / Debezium: {:.2}x the records/s at {:.3} of the memory",
            ours.per_second() / theirs.per_second().max(1e-9),
            ours.peak_rss_mib / theirs.peak_rss_mib.max(1e-9)
        );
    }
    settle(&source).await?;
    let raw = binlog.read_raw(&start).await?;
    println!(
        "  {:<30} {:>9} rows    {:>7.2} s {:>44.0} rows/s",
        "raw binlog read (mysql_async)",
        raw.rows,
        raw.seconds,
        raw.rows as f64 / raw.seconds.max(1e-9)
    );
    println!(
        "  brewline cdc / raw read: {:.1} %",
        100.0 * ours.per_second() / (raw.rows as f64 / raw.seconds.max(1e-9))
    );
    let mut snapshot = c.clone();
    snapshot.capture.topic_prefix = "snap".into();
    let (rows, secs) = capture_once(&snapshot).await?;
    println!(
        "  initial snapshot    {rows:>9} row events  {secs:>7.2} s  {:>9.0} row events/s",
        rows as f64 / secs
    );

    // 2. Latency.
    let c = fresh(&config, "latency");
    let source = prepare(&c).await?;
    crate::bench_kafka::publish_lookups(&c, &source.load_reference().await?).await?;
    capture_once(&c).await?;
    let config_file = work.path().join("bench.toml");
    std::fs::write(&config_file, toml::to_string(&c)?)?;
    let recommender = Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(&config_file)
        .arg("recommend")
        .stdout(Stdio::null())
        .spawn()
        .context("starting `brewline recommend`")?;
    let mut recommender = crate::bench_kafka::KillOnDrop(recommender);
    let (stop_capture, shutdown) = watch::channel(false);
    let capturing = {
        let c = c.clone();
        tokio::spawn(async move {
            let stop = brewline_speed::StopWhen {
                drained: watch::channel(false).1,
                shutdown,
            };
            crate::cdc::capture(&c, Arc::new(Stats::default()), stop, false).await
        })
    };
    let received = {
        let c = c.clone();
        tokio::spawn(async move { receive(&c).await })
    };
    // Until the recommender has joined its group: one order, waited for.
    let (_never, no_stop) = watch::channel(false);
    let eligible = Some((1.0, c.recommender.eligible_bank.as_str()));
    crate::tills::write_orders(&source, 7, 1, None, eligible, &no_stop, |_| {}).await?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let mut phases = Vec::new();
    for &rate in &args.rate {
        let total = (rate * args.seconds as f64) as u64;
        println!(
            "latency: {total} orders at {rate} a second for {} s, every one eligible",
            args.seconds
        );
        let (from_ms, began) = (brewline_ports::now_ms(), Instant::now());
        crate::tills::write_orders(&source, 7, total, Some(rate), eligible, &no_stop, |_| {})
            .await?;
        let achieved = total as f64 / began.elapsed().as_secs_f64().max(1e-9);
        phases.push((rate, achieved, from_ms, brewline_ports::now_ms()));
        // The queues drain before the next rate.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let _ = stop_capture.send(true);
    capturing.await??;
    let _ = Command::new("kill")
        .args(["-TERM", &recommender.0.id().to_string()])
        .status();
    let _ = recommender.0.wait();
    let (events, suggestions) = received.await??;

    let placed = source.order_times().await?;
    let mut under_100ms = None;
    for (rate, achieved, from_ms, to_ms) in phases {
        // The orders of this rate (the first, written before, only waited for the recommender
        // to join).
        let of_phase: Vec<_> = placed
            .iter()
            .filter(|(_, t)| (from_ms..=to_ms).contains(t))
            .cloned()
            .collect();
        println!("  at {rate} orders/s (the tills wrote {achieved:.0} a second):");
        report("commit → change event received", &of_phase, &events);
        let p99 = report("commit → suggestion received", &of_phase, &suggestions);
        if p99.is_some_and(|p| p < 100) {
            under_100ms = Some(under_100ms.map_or(rate, |r: f64| r.max(rate)));
        }
    }
    match under_100ms {
        Some(rate) => println!(
            "  the highest rate tried with commit → suggestion p99 under 100 ms: {rate} orders/s"
        ),
        None => println!("  no rate tried kept commit → suggestion p99 under 100 ms"),
    }
    Ok(ExitCode::SUCCESS)
}

/// When (epoch ms) this benchmark's consumers received each order's first change event and
/// first suggestion, until no record came for 20 s.
async fn receive(c: &Config) -> anyhow::Result<(HashMap<String, i64>, HashMap<String, i64>)> {
    let mut consumer = KafkaConsumer::new(
        &c.kafka,
        Subscription {
            topics: vec![c.topics.orders.clone(), c.topics.suggestions.clone()],
            group: None,
            from: Vec::new(),
        },
    )
    .await?;
    let (mut events, mut suggestions) = (HashMap::new(), HashMap::new());
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(20) {
        let batch = consumer.poll(10_000, Duration::from_millis(100)).await?;
        let now = brewline_ports::now_ms();
        for r in &batch {
            last = Instant::now();
            let Some(key) = &r.record.key else { continue };
            let id = String::from_utf8_lossy(key).into_owned();
            let seen = if *r.topic == c.topics.orders {
                &mut events
            } else {
                &mut suggestions
            };
            seen.entry(id).or_insert(now);
        }
    }
    Ok((events, suggestions))
}

/// Prints the latencies of the `placed` orders `received`; their p99 (ms), `None` when some
/// order was never received.
fn report(what: &str, placed: &[(String, i64)], received: &HashMap<String, i64>) -> Option<i64> {
    let mut latencies: Vec<i64> = placed
        .iter()
        .filter_map(|(id, at)| Some(received.get(id)? - at))
        .collect();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "  {what:<34} {} of {} orders: p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        placed.len(),
        at(0.50),
        at(0.99),
        latencies.last().copied().unwrap_or(0)
    );
    (latencies.len() == placed.len()).then(|| at(0.99))
}
