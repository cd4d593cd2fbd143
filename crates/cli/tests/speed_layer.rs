//! The speed layer on real servers, as an operator runs it: `db init`, `db seed`, `cache load`,
//! `topics create`, then `brewline recommend` processes reading Debezium events from Kafka,
//! killed and restarted, checked against the orders. Needs the servers `scripts/test` starts
//! (`TEST_BREWLINE_*`); run with `scripts/test`, or `cargo test -- --ignored` with them set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brewline_core::debezium::TableSchema;
use brewline_core::generator::Tills;
use brewline_core::order::{NewOrder, OrderHeader};
use brewline_core::suggestion::Lookups;
use brewline_core::ReferenceData;
use brewline_embedded::{EmbeddedLog, EmbeddedSource};
use brewline_kafka::{KafkaConfig, KafkaConsumer, KafkaProducer};
use brewline_mysql::{MysqlConfig, MysqlSource};
use brewline_ports::{Capturable, Consumed, Consumer, Producer, Record, SourceDb, Subscription};
use brewline_speed::capture::{Capture, CaptureConfig};
use brewline_speed::stats::Stats;
use brewline_speed::StopWhen;
use serde_json::Value;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run through scripts/test"))
}

/// One deployment on the test servers: its own topics, consumer group, Redis databases and
/// MySQL database, in a config file every command reads.
struct Deployment {
    dir: tempfile::TempDir,
    config: PathBuf,
    prefix: String,
    brokers: String,
    redis_static: String,
    redis_dynamic: String,
}

impl Deployment {
    /// A deployment on the test servers, its Redis data in databases `redis_dbs` of `redis`
    /// (the test Redis when `None`).
    fn new(name: &str, redis: Option<&str>, redis_dbs: (u8, u8)) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("{name}{}", brewline_ports::now_us());
        let redis = redis.map_or_else(|| env("TEST_BREWLINE_REDIS_URL"), str::to_string);
        let d = Deployment {
            config: dir.path().join("brewline.toml"),
            prefix: prefix.clone(),
            brokers: env("TEST_BREWLINE_BROKERS"),
            redis_static: format!("{redis}/{}", redis_dbs.0),
            redis_dynamic: format!("{redis}/{}", redis_dbs.1),
            dir,
        };
        std::fs::write(
            &d.config,
            format!(
                r#"
[topics]
orders = "{prefix}.coffee_shop.orders"
order_details = "{prefix}.coffee_shop.order_details"
suggestions = "{prefix}.suggestions"
dead_letters = "{prefix}.dlq"

[recommender]
group = "{prefix}-recs"
batch = 500
poll_wait_ms = 50
lookups_every_secs = 1

[mysql]
url = "{mysql}"
database = "{prefix}"

[kafka]
brokers = "{brokers}"

# tansu's quirks, met by configuration (see crates/kafka/tests/kafka.rs): a fetch from inside
# a record batch skips to the next batch, so every record is a batch; a fetch is held for
# fetch.wait.max.ms even with data waiting; a member that stops heartbeating is dropped without
# its partitions being handed out again, so recommenders use static membership
# (--instance-id), and a restarted one rejoins within the session timeout.
[kafka.producer]
"batch.num.messages" = "1"

[kafka.consumer]
"fetch.wait.max.ms" = "10"
"session.timeout.ms" = "30000"
"heartbeat.interval.ms" = "1000"

[redis]
static_url = "{static_url}"
dynamic_url = "{dynamic_url}"
"#,
                mysql = env("TEST_BREWLINE_MYSQL_URL"),
                brokers = d.brokers,
                static_url = d.redis_static,
                dynamic_url = d.redis_dynamic,
            ),
        )
        .unwrap();
        d
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_brewline"));
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.env(
            "BREWLINE_LOG",
            std::env::var("TEST_BREWLINE_LOG").unwrap_or_else(|_| "info".into()),
        );
        cmd
    }

    /// Runs a command to its end; it must succeed.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "brewline {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Starts a long-running command, its log in the deployment's folder; it is killed when
    /// the handle is dropped (a failed test leaves nothing running).
    fn start(&self, name: &str, args: &[&str]) -> Process {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap();
        Process(
            self.command(args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn kafka(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.brokers.clone(),
            producer: BTreeMap::from([("batch.num.messages".into(), "1".into())]),
            consumer: BTreeMap::from([("fetch.wait.max.ms".into(), "10".into())]),
            ..KafkaConfig::default()
        }
    }

    fn topic(&self, name: &str) -> String {
        match name {
            "orders" | "order_details" => format!("{}.coffee_shop.{name}", self.prefix),
            other => format!("{}.{other}", self.prefix),
        }
    }

    /// The database, its reference data, the lookup cache and the topics, as an operator
    /// sets them up.
    fn set_up(&self) {
        self.run(&["db", "init"]);
        self.run(&["db", "seed"]);
        let loaded = self.run(&["cache", "load"]);
        assert!(loaded.contains("15000 diamond customers"), "{loaded}");
        self.run(&["topics", "create"]);
    }
}

/// Orders from the tills, reshaped so that about a quarter are eligible: every fourth order is
/// a diamond customer's paid with ACB, others are one without the other.
fn orders(reference: &ReferenceData, seed: u64, n: u64) -> Vec<NewOrder> {
    let diamond: Vec<i64> = reference
        .customers
        .iter()
        .filter(|c| c.tier.as_str() == "diamond")
        .map(|c| c.id)
        .collect();
    Tills::new(reference, seed)
        .unwrap()
        .orders(0, n)
        .enumerate()
        .map(|(i, mut o)| {
            match i % 4 {
                0 => (o.customer_id, o.payment_method_id) = (diamond[i % diamond.len()], 9),
                1 => (o.customer_id, o.payment_method_id) = (diamond[i % diamond.len()], 1),
                2 => o.payment_method_id = 9,
                _ => {}
            }
            o
        })
        .collect()
}

/// The ids of the orders the lookups make eligible.
fn eligible(orders: &[NewOrder]) -> BTreeSet<String> {
    let lookups = Lookups::from_reference(&ReferenceData::bundled().unwrap(), "ACB");
    orders
        .iter()
        .filter(|o| lookups.is_eligible(&header(o)))
        .map(|o| o.id.clone())
        .collect()
}

fn header(o: &NewOrder) -> OrderHeader {
    OrderHeader {
        order_id: o.id.clone(),
        customer_id: Some(o.customer_id),
        store_id: o.store_id,
        payment_method_id: o.payment_method_id,
        num_products: o.num_products(),
    }
}

/// Writes `orders` to the deployment's database, and to an embedded source from which they
/// are captured, as Debezium events, into the deployment's CDC topics on Kafka (`schemas`:
/// with Kafka Connect's schema part): the events are those the embedded capture writes, in
/// Debezium's format, until the database's own binlog is captured.
async fn produce_events(d: &Deployment, work: &Path, orders: &[NewOrder], schemas: bool) {
    let database = MysqlSource::new(&MysqlConfig {
        url: env("TEST_BREWLINE_MYSQL_URL"),
        database: d.prefix.clone(),
        ..MysqlConfig::default()
    })
    .unwrap();
    database.insert_orders(orders).await.unwrap();
    database.close().await.unwrap();
    let source = EmbeddedSource::open(&work.join("source.sqlite")).unwrap();
    source
        .seed_reference(&ReferenceData::bundled().unwrap())
        .await
        .unwrap();
    source.insert_orders(orders).await.unwrap();
    let checkpoints = EmbeddedLog::open(&work.join("log.sqlite")).unwrap();
    let capture = Capture::new(
        CaptureConfig {
            topic_prefix: d.prefix.clone(),
            with_schema: schemas,
            checkpoint: "capture".into(),
            batch: 1000,
            tables: vec![
                (TableSchema::orders(&d.prefix, "coffee_shop"), "id".into()),
                (
                    TableSchema::order_details(&d.prefix, "coffee_shop"),
                    "order_id".into(),
                ),
            ],
        },
        Arc::new(Stats::default()),
    );
    let position = brewline_ports::CheckpointStore::load(&checkpoints, "capture")
        .await
        .unwrap();
    let mut feed = source.follow(position).await.unwrap();
    let producer = KafkaProducer::new(&d.kafka()).unwrap();
    let (_done, drained) = tokio::sync::watch::channel(true);
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    capture
        .run(
            feed.as_mut(),
            &producer,
            &checkpoints,
            StopWhen { drained, shutdown },
        )
        .await
        .unwrap();
}

/// Every record of a topic, read until none came for `idle`.
async fn read_all(d: &Deployment, topic: &str, idle: Duration) -> Vec<Consumed> {
    let mut c = KafkaConsumer::new(
        &d.kafka(),
        Subscription {
            topics: vec![topic.into()],
            group: None,
        },
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < idle {
        let batch = c.poll(10_000, Duration::from_millis(200)).await.unwrap();
        if !batch.is_empty() {
            last = Instant::now();
            all.extend(batch);
        }
    }
    all
}

/// Waits until the suggestions topic holds a suggestion for each of `expected` orders; then
/// returns every suggestion record, as JSON, by order id.
async fn suggestions_for(
    d: &Deployment,
    expected: &BTreeSet<String>,
    within: Duration,
) -> BTreeMap<String, Vec<Value>> {
    let deadline = Instant::now() + within;
    loop {
        let records = read_all(d, &d.topic("suggestions"), Duration::from_secs(2)).await;
        let mut by_order: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for r in &records {
            let key = String::from_utf8(r.record.key.clone().unwrap()).unwrap();
            let value: Value = serde_json::from_slice(r.record.value.as_ref().unwrap()).unwrap();
            assert_eq!(value["order_id"], key.as_str(), "keyed by order id");
            by_order.entry(key).or_default().push(value);
        }
        let have: BTreeSet<String> = by_order.keys().cloned().collect();
        if have.is_superset(expected) || Instant::now() > deadline {
            return by_order;
        }
    }
}

/// A child process, killed when dropped.
struct Process(Child);

impl Process {
    fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn terminate(process: &mut Process) -> std::process::ExitStatus {
    let child = &mut process.0;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, Redis and MariaDB: run scripts/test"]
async fn two_recommenders_killed_and_restarted_make_one_suggestion_per_eligible_order() {
    let d = Arc::new(Deployment::new("recs", None, (2, 3)));
    d.set_up();
    let all = orders(&ReferenceData::bundled().unwrap(), 11, 2400);
    let eligible = eligible(&all);
    assert!(eligible.len() > 500, "{} eligible", eligible.len());

    // The first half as JsonConverter writes without schemas, then two malformed records.
    let work = tempfile::tempdir().unwrap();
    produce_events(&d, work.path(), &all[..1200], false).await;
    let producer = KafkaProducer::new(&d.kafka()).unwrap();
    producer
        .send(
            &d.topic("orders"),
            vec![
                Record::keyed("bad-1", Some(b"this is not JSON".to_vec())),
                Record::keyed(
                    "bad-2",
                    Some(br#"{"payload":{"op":"x","after":{"id":"bad-2"}}}"#.to_vec()),
                ),
            ],
        )
        .await
        .unwrap();

    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut a = d.start(
        "a",
        &[
            "recommend",
            "--metrics-addr",
            &metrics,
            "--instance-id",
            "a",
        ],
    );
    let mut b = d.start("b", &["recommend", "--workers", "2", "--instance-id", "b"]);

    // The second half with schemas, while process b is killed and restarted three times
    // and the cache is loaded again.
    let producing = {
        let work = work.path().to_path_buf();
        let second: Vec<NewOrder> = all[1200..].to_vec();
        let d2 = d.clone();
        tokio::spawn(async move {
            for chunk in second.chunks(300) {
                produce_events(&d2, &work, chunk, true).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        b.kill(); // SIGKILL: no chance to commit
        b = d.start("b", &["recommend", "--workers", "2", "--instance-id", "b"]);
    }
    d.run(&["cache", "load"]);
    producing.await.unwrap();

    let found = suggestions_for(&d, &eligible, Duration::from_secs(120)).await;
    let found_ids: BTreeSet<String> = found.keys().cloned().collect();
    let missing: Vec<_> = eligible.difference(&found_ids).take(5).collect();
    let extra: Vec<_> = found_ids.difference(&eligible).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "a suggestion for every eligible order ({}) and for no other: {} missing (e.g. {missing:?}), {} extra (e.g. {extra:?})\nlog a:\n{}\nlog b:\n{}",
        eligible.len(),
        eligible.difference(&found_ids).count(),
        found_ids.difference(&eligible).count(),
        tail_of(&d.log("a")),
        tail_of(&d.log("b")),
    );
    for (order, copies) in &found {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "order {order} was suggested different things: {copies:?}"
        );
        let products: Vec<&str> = copies[0]["order_products"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert!(!products.contains(&copies[0]["product_id"].as_str().unwrap()));
    }

    let dead = read_all(&d, &d.topic("dlq"), Duration::from_secs(2)).await;
    let dead_keys: BTreeSet<String> = dead
        .iter()
        .map(|r| String::from_utf8(r.record.key.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(
        dead_keys,
        BTreeSet::from(["bad-1".to_string(), "bad-2".to_string()])
    );
    for r in &dead {
        let reason = r
            .record
            .headers
            .iter()
            .find(|(k, _)| k == "brewline.error.reason")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap();
        assert!(!reason.is_empty());
    }

    let body = reqwest_free_get(&metrics, "/metrics");
    assert!(
        body.contains("# TYPE brewline_suggestions_total counter"),
        "{body}"
    );
    assert!(
        body.contains("brewline_suggestion_latency_seconds_bucket"),
        "{body}"
    );

    // Customers accept every suggestion: each becomes one order line, once, however often
    // `accept` reads it.
    let mut accept = d.start("accept", &["accept", "--share", "1.0"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let lines_written = loop {
        let n = suggested_lines(&d).await;
        if n >= eligible.len() as i64 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(terminate(&mut accept).success(), "{}", d.log("accept"));
    assert_eq!(lines_written, eligible.len() as i64, "{}", d.log("accept"));
    let mut again = d.start("accept", &["accept", "--group", "second-reader"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(terminate(&mut again).success(), "{}", d.log("accept"));
    assert_eq!(suggested_lines(&d).await, lines_written, "accepted once");

    assert!(terminate(&mut a).success(), "{}", d.log("a"));
    assert!(terminate(&mut b).success(), "{}", d.log("b"));
}

/// Order lines with `is_suggestion = true` in the deployment's database.
async fn suggested_lines(d: &Deployment) -> i64 {
    use mysql_async::prelude::Queryable;
    let opts = mysql_async::OptsBuilder::from_opts(
        mysql_async::Opts::from_url(&env("TEST_BREWLINE_MYSQL_URL")).unwrap(),
    )
    .db_name(Some(d.prefix.clone()));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    let n: Option<i64> = conn
        .query_first("SELECT COUNT(*) FROM order_details WHERE is_suggestion")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    n.unwrap_or(0)
}

fn tail_of(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A GET over a plain TCP connection (HTTP/1.0), returning the body.
fn reqwest_free_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}

/// A Redis of the test's own, with an append-only file, that can be stopped and started again.
struct OwnRedis {
    dir: tempfile::TempDir,
    port: u16,
    process: Option<Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let mut r = OwnRedis {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            process: None,
        };
        r.up();
        r
    }

    fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/services installs it)");
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops Redis as an operator's restart does (SIGTERM: the append-only file is flushed).
    fn down(&mut self) {
        if let Some(child) = self.process.take() {
            terminate(&mut Process(child));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, Redis and MariaDB: run scripts/test"]
async fn the_recommender_rides_out_a_redis_restart() {
    let mut redis = OwnRedis::start();
    let d = Deployment::new("redis", Some(&redis.url()), (0, 1));
    d.set_up();
    let all = orders(&ReferenceData::bundled().unwrap(), 12, 800);
    let eligible = eligible(&all);
    let work = tempfile::tempdir().unwrap();
    produce_events(&d, work.path(), &all[..400], false).await;
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut r = d.start(
        "r",
        &[
            "recommend",
            "--metrics-addr",
            &metrics,
            "--instance-id",
            "r",
        ],
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.down();
    // Events arrive while Redis is down; the recommender retries until it is back.
    produce_events(&d, work.path(), &all[400..], true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.up();

    let found = suggestions_for(&d, &eligible, Duration::from_secs(90)).await;
    let found_ids: BTreeSet<String> = found.keys().cloned().collect();
    assert_eq!(
        found_ids.len(),
        eligible.len(),
        "every eligible order, no other\n{}",
        tail_of(&d.log("r"))
    );
    assert_eq!(found_ids, eligible);
    for (order, copies) in &found {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "{order}: {copies:?}"
        );
    }
    let body = reqwest_free_get(&metrics, "/metrics");
    let retries = body
        .lines()
        .find(|l| l.starts_with("brewline_engine_retries_total{engine=\"redis\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(retries > 0, "the outage shows as retries:\n{body}");
    assert!(terminate(&mut r).success(), "{}", d.log("r"));
}
