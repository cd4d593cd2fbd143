//! What the end-to-end tests share: a deployment on the test servers (its own topics, group,
//! Redis databases and MySQL database), its processes, and readers of its topics.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod faults;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brewline_batch::Lake;
use brewline_core::debezium::TableSchema;
use brewline_core::generator::Tills;
use brewline_core::order::{NewOrder, OrderHeader};
use brewline_core::suggestion::Lookups;
use brewline_core::ReferenceData;
use brewline_embedded::{EmbeddedLog, EmbeddedSource};
use brewline_kafka::connect::{connector_properties, DebeziumSource};
use brewline_kafka::{KafkaConfig, KafkaConsumer, KafkaProducer};
use brewline_mysql::{MysqlConfig, MysqlSource};
use brewline_ports::{Capturable, Consumed, Consumer, SourceDb, Subscription};
use brewline_speed::capture::{Capture, CaptureSettings, Output};
use brewline_speed::stats::Stats;
use brewline_speed::StopWhen;
use deltalake::arrow::array::{Array, RecordBatch};
use deltalake::arrow::util::display::array_value_to_string;
use mysql_async::prelude::Queryable;
use serde_json::Value;

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run through scripts/test"))
}

/// One deployment on the test servers: its own topics, consumer group, Redis databases and
/// MySQL database, in a config file every command reads.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub prefix: String,
    pub brokers: String,
    pub redis_static: String,
    pub redis_dynamic: String,
    /// Topics named as `brewline cdc` names them (`mysql.{database}.{table}`).
    pub cdc: bool,
}

/// Where a deployment keeps its Redis data.
enum RedisPlace<'a> {
    /// Two databases (static, dynamic) of a Redis: the test Redis when `None`.
    Databases(Option<&'a str>, (u8, u8)),
    /// The test Redis Cluster.
    Cluster,
}

impl Deployment {
    /// A deployment on the test servers, its Redis data in databases `redis_dbs` of `redis`
    /// (the test Redis when `None`).
    pub fn new(name: &str, redis: Option<&str>, redis_dbs: (u8, u8)) -> Deployment {
        Deployment::create(name, RedisPlace::Databases(redis, redis_dbs), false)
    }

    /// A deployment fed by `brewline cdc` from its database (a replica id of its own).
    pub fn with_cdc(name: &str, redis_dbs: (u8, u8)) -> Deployment {
        Deployment::create(name, RedisPlace::Databases(None, redis_dbs), true)
    }

    /// [`Deployment::with_cdc`] with its Redis data in `redis`.
    pub fn with_cdc_on(name: &str, redis: &str, redis_dbs: (u8, u8)) -> Deployment {
        Deployment::create(name, RedisPlace::Databases(Some(redis), redis_dbs), true)
    }

    /// A deployment whose Redis data is on the test Redis Cluster, under key names of its own.
    pub fn on_redis_cluster(name: &str) -> Deployment {
        Deployment::create(name, RedisPlace::Cluster, false)
    }

    fn create(name: &str, place: RedisPlace, cdc: bool) -> Deployment {
        let mut dir = tempfile::tempdir().unwrap();
        // TEST_BREWLINE_KEEP=1 keeps every deployment's folder (its config and logs).
        if std::env::var_os("TEST_BREWLINE_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("{name}: {}", dir.path().display());
        }
        let prefix = format!("{name}{}", brewline_ports::now_us());
        let (redis_static, redis_dynamic, redis_keys) = match place {
            RedisPlace::Databases(redis, redis_dbs) => {
                let redis = redis.map_or_else(|| env("TEST_BREWLINE_REDIS_URL"), str::to_string);
                // The deployment's Redis databases are its own: empty, whatever an earlier run
                // of the same test (the same seeded order ids) left there.
                for db in [redis_dbs.0, redis_dbs.1] {
                    let mut c = redis::Client::open(format!("{redis}/{db}"))
                        .unwrap()
                        .get_connection()
                        .unwrap();
                    redis::cmd("FLUSHDB").query::<()>(&mut c).unwrap();
                }
                let url = |db: u8| format!("{redis}/{db}");
                (url(redis_dbs.0), url(redis_dbs.1), String::new())
            }
            RedisPlace::Cluster => {
                let url = env("TEST_BREWLINE_REDIS_CLUSTER");
                let keys = brewline_redis::RedisConfig::default();
                let key = |name: &str, value: &str| format!("{name} = \"{prefix}:{value}\"\n");
                let keys = [
                    key("diamond_customers_key", &keys.diamond_customers_key),
                    key("acb_payment_key", &keys.acb_payment_key),
                    key("product_key_prefix", &keys.product_key_prefix),
                    key("affinity_key", &keys.affinity_key),
                    key("lookups_version_key", &keys.lookups_version_key),
                    key("order_state_prefix", &keys.order_state_prefix),
                    key("open_orders_key", &keys.open_orders_key),
                    key("counters_key", &keys.counters_key),
                    key("order_state_epoch_key", &keys.order_state_epoch_key),
                ]
                .concat();
                (url.clone(), url, keys)
            }
        };
        let d = Deployment {
            config: dir.path().join("brewline.toml"),
            prefix: prefix.clone(),
            brokers: env("TEST_BREWLINE_BROKERS"),
            redis_static,
            redis_dynamic,
            dir,
            cdc,
        };
        let topics = if cdc {
            format!("mysql.{prefix}")
        } else {
            format!("{prefix}.coffee_shop")
        };
        let server_id = 1000 + brewline_ports::now_us() % 1_000_000;
        std::fs::write(
            &d.config,
            format!(
                r#"
[topics]
orders = "{topics}.orders"
order_details = "{topics}.order_details"
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

[cdc]
server_id = {server_id}

[kafka]
brokers = "{brokers}"

# A member killed without leaving its group loses its partitions after 6 s (the broker's
# least session timeout), not librdkafka's 45.
[kafka.consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"

[redis]
static_url = "{static_url}"
dynamic_url = "{dynamic_url}"
{redis_keys}"#,
                mysql = env("TEST_BREWLINE_MYSQL_URL"),
                brokers = d.brokers,
                static_url = d.redis_static,
                dynamic_url = d.redis_dynamic,
            ),
        )
        .unwrap();
        d
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_via(&[], args)
    }

    /// brewline `args`, run by `via` when it names a program (with its arguments before
    /// brewline's path: `scripts/netns-hosts run NAME 1` runs it on a host of its own).
    fn command_via(&self, via: &[&str], args: &[&str]) -> Command {
        let brewline = env!("CARGO_BIN_EXE_brewline");
        let mut cmd = match via.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(brewline);
                cmd
            }
            None => Command::new(brewline),
        };
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.env(
            "BREWLINE_LOG",
            std::env::var("TEST_BREWLINE_LOG").unwrap_or_else(|_| "info".into()),
        );
        cmd
    }

    /// Runs a command to its end; it must succeed.
    pub fn run(&self, args: &[&str]) -> String {
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
    pub fn start(&self, name: &str, args: &[&str]) -> Process {
        self.start_with(name, args, &[])
    }

    /// [`Deployment::start`] with more environment variables.
    pub fn start_with(&self, name: &str, args: &[&str], environment: &[(&str, &str)]) -> Process {
        let mut cmd = self.command(args);
        cmd.envs(environment.iter().copied());
        self.spawn(name, cmd)
    }

    /// [`Deployment::start`], run by `via` ([`Deployment::command_via`]).
    pub fn start_via(&self, name: &str, via: &[&str], args: &[&str]) -> Process {
        self.spawn(name, self.command_via(via, args))
    }

    fn spawn(&self, name: &str, mut cmd: Command) -> Process {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap();
        Process(cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap())
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Copies every log of the deployment to a folder that outlives the test, for a failure
    /// to be read whole; returns the folder.
    pub fn keep_logs(&self) -> PathBuf {
        let kept = std::env::temp_dir().join(format!(
            "brewline-{}-logs-{}",
            self.prefix,
            brewline_ports::now_us()
        ));
        std::fs::create_dir_all(&kept).unwrap();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                std::fs::copy(entry.path(), kept.join(entry.file_name())).unwrap();
            }
        }
        kept
    }

    pub fn kafka(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.brokers.clone(),
            ..KafkaConfig::default()
        }
    }

    pub fn topic(&self, name: &str) -> String {
        match name {
            "orders" | "order_details" if self.cdc => format!("mysql.{}.{name}", self.prefix),
            "orders" | "order_details" => format!("{}.coffee_shop.{name}", self.prefix),
            other => format!("{}.{other}", self.prefix),
        }
    }

    /// The database, its reference data, the lookup cache and the topics, as an operator
    /// sets them up.
    pub fn set_up(&self) {
        self.run(&["db", "init"]);
        self.run(&["db", "seed"]);
        let loaded = self.run(&["cache", "load"]);
        assert!(loaded.contains("15000 diamond customers"), "{loaded}");
        self.run(&["topics", "create"]);
    }
}

/// Orders from the tills, reshaped so that about a quarter are eligible: every fourth order is
/// a diamond customer's paid with ACB, others are one without the other.
pub fn orders(reference: &ReferenceData, seed: u64, n: u64) -> Vec<NewOrder> {
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
pub fn eligible(orders: &[NewOrder]) -> BTreeSet<String> {
    let lookups = Lookups::from_reference(&ReferenceData::bundled().unwrap(), "ACB");
    orders
        .iter()
        .filter(|o| lookups.is_eligible(&header(o)))
        .map(|o| o.id.clone())
        .collect()
}

pub fn header(o: &NewOrder) -> OrderHeader {
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
pub async fn produce_events(d: &Deployment, work: &Path, orders: &[NewOrder], schemas: bool) {
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
        CaptureSettings {
            topic_prefix: d.prefix.clone(),
            with_schema: schemas,
            connector: "mysql".into(),
            checkpoint: "capture".into(),
            batch: 1000,
            tables: vec![
                (TableSchema::orders(&d.prefix, "coffee_shop"), "id".into()),
                (
                    TableSchema::order_details(&d.prefix, "coffee_shop"),
                    "order_id".into(),
                ),
            ],
            dead_letter_topic: d.topic("dlq"),
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
            Output::Sent(&producer),
            &checkpoints,
            StopWhen { drained, shutdown },
        )
        .await
        .unwrap();
}

/// Every record of a topic, read until none came for `idle`.
pub async fn read_all(d: &Deployment, topic: &str, idle: Duration) -> Vec<Consumed> {
    let mut c = KafkaConsumer::new(
        &d.kafka(),
        Subscription {
            topics: vec![topic.into()],
            group: None,
            from: Vec::new(),
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
pub async fn suggestions_for(
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

/// Every order of `eligible` has exactly one suggestion in `found`, and no other order has any:
/// the recommenders write in Kafka transactions, so not even an identical copy is left by a
/// kill; `context` is shown when not.
pub fn assert_one_suggestion_each(
    found: &BTreeMap<String, Vec<Value>>,
    eligible: &BTreeSet<String>,
    context: impl Fn() -> String,
) {
    let found_ids: BTreeSet<String> = found.keys().cloned().collect();
    assert_eq!(
        &found_ids,
        eligible,
        "suggestions vs SQL: {} missing {:?}, extra {:?}\n{}",
        eligible.difference(&found_ids).count(),
        eligible.difference(&found_ids).take(5).collect::<Vec<_>>(),
        found_ids.difference(eligible).take(5).collect::<Vec<_>>(),
        context()
    );
    for (order, copies) in found {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "order {order} was suggested different things: {copies:?}"
        );
    }
    let repeated: Vec<(&String, usize)> = found
        .iter()
        .filter(|(_, copies)| copies.len() > 1)
        .map(|(order, copies)| (order, copies.len()))
        .collect();
    assert!(
        repeated.is_empty(),
        "{} orders' suggestions committed more than once (e.g. {:?})\n{}",
        repeated.len(),
        &repeated[..repeated.len().min(5)],
        context()
    );
}

/// A child process, killed when dropped.
pub struct Process(pub Child);

impl Process {
    pub fn kill(&mut self) {
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

pub fn terminate(process: &mut Process) -> std::process::ExitStatus {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Order lines with `is_suggestion = true` in the deployment's database.
pub async fn suggested_lines(d: &Deployment) -> i64 {
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

pub fn tail_of(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A GET over a plain TCP connection (HTTP/1.0), returning the body.
pub fn reqwest_free_get(addr: &str, path: &str) -> String {
    http_get(addr, path).1
}

/// A GET over a plain TCP connection (HTTP/1.0): the status and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out);
    (status, body)
}

/// A Kafka Connect worker running Debezium's MariaDB connector (`scripts/connect`, from the
/// jars `scripts/services` gathered) on the deployment's database, configured as
/// `deploy/connect/mysql-source.json` configures the compose stack's connector: events keyed
/// by order id, DECIMAL as text, tombstones after deletes. Killed when dropped.
pub struct DebeziumWorker {
    pub process: Process,
    pub dir: PathBuf,
    pub topic_prefix: String,
}

impl DebeziumWorker {
    /// Starts the worker in `dir` (its offsets stay there: started again in the same folder,
    /// it goes on where it stopped), writing `{topic_prefix}.{database}.{table}` with
    /// JsonConverter's schemas on or off.
    pub fn start(d: &Deployment, dir: &Path, topic_prefix: &str, schemas: bool) -> DebeziumWorker {
        std::fs::create_dir_all(dir).unwrap();
        let server = mysql_async::Opts::from_url(&env("TEST_BREWLINE_MYSQL_URL")).unwrap();
        let deployed = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/connect/mysql-source.json"),
        )
        .unwrap();
        let source = DebeziumSource {
            host: server.ip_or_hostname().to_string(),
            port: server.tcp_port(),
            user: server.user().unwrap_or("root").to_string(),
            password: server.pass().unwrap_or("").to_string(),
            database: d.prefix.clone(),
            topic_prefix: topic_prefix.to_string(),
            server_id: 2_000_000 + (brewline_ports::now_us() % 1_000_000) as u32,
            brokers: d.brokers.clone(),
            schemas,
            extra: BTreeMap::new(),
        };
        let properties = connector_properties(&deployed, &source).unwrap();
        let connector = dir.join("connector.properties");
        std::fs::write(&connector, properties).unwrap();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("connect.log"))
            .unwrap();
        let process = Process(
            Command::new(env("TEST_BREWLINE_CONNECT"))
                .arg(dir)
                .arg(&d.brokers)
                .arg(schemas.to_string())
                .arg(&connector)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        DebeziumWorker {
            process,
            dir: dir.to_path_buf(),
            topic_prefix: topic_prefix.to_string(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("connect.log")).unwrap_or_default()
    }
}

pub async fn database(d: &Deployment) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::from_opts(
        mysql_async::Opts::from_url(&env("TEST_BREWLINE_MYSQL_URL")).unwrap(),
    )
    .db_name(Some(d.prefix.clone()));
    mysql_async::Conn::new(opts).await.unwrap()
}

/// The orders that must get a suggestion, by SPEC's rule, decided by SQL on the database: a
/// diamond customer, a payment method of the eligible bank, and every line there.
pub async fn eligible_by_sql(d: &Deployment) -> BTreeSet<String> {
    let mut conn = database(d).await;
    let ids: Vec<String> = conn
        .query(
            "SELECT o.id FROM orders o
             JOIN customers c ON c.id = o.customer_id
             JOIN payment_method p ON p.id = o.payment_method_id
             WHERE c.tier = 'diamond' AND p.bank = 'ACB'
               AND o.num_products = (SELECT COUNT(*) FROM order_details l
                                     WHERE l.order_id = o.id AND NOT l.is_suggestion)",
        )
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    ids.into_iter().collect()
}

/// (order id, product id) of every line in the database.
pub async fn lines_by_sql(d: &Deployment, suggested: bool) -> BTreeSet<(String, String)> {
    let mut conn = database(d).await;
    let rows: Vec<(String, String)> = conn
        .exec(
            "SELECT order_id, product_id FROM order_details WHERE is_suggestion = ?",
            (suggested,),
        )
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    rows.into_iter().collect()
}

/// The position `brewline cdc` stored for the deployment's database.
pub async fn stored_position(d: &Deployment) -> Option<String> {
    let mut conn = database(d).await;
    let position: Option<String> = conn
        .exec_first(
            "SELECT position FROM brewline.brewline_offsets WHERE name = ?",
            (format!("cdc.mysql.{}", d.prefix),),
        )
        .await
        .unwrap_or(None);
    conn.disconnect().await.unwrap();
    position
}

/// The `after` rows of the change events on a CDC topic (tombstones and deletes skipped).
pub async fn captured_rows(d: &Deployment, table: &str) -> Vec<(String, Value)> {
    read_all(d, &d.topic(table), Duration::from_secs(3))
        .await
        .into_iter()
        .filter_map(|r| {
            let value: Value = serde_json::from_slice(r.record.value.as_ref()?).unwrap();
            let payload = value.get("payload").cloned().unwrap_or(value);
            let op = payload["op"].as_str().unwrap().to_string();
            Some((op, payload))
        })
        .collect()
}

/// Every row of `batches` as text, sorted ("" for null).
pub fn rows_of(batches: &[RecordBatch], columns: &[&str]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            out.push(
                columns
                    .iter()
                    .map(|c| {
                        let col = b.column_by_name(c).unwrap_or_else(|| panic!("column {c}"));
                        if col.is_null(i) {
                            String::new()
                        } else {
                            array_value_to_string(col, i).unwrap()
                        }
                    })
                    .collect(),
            );
        }
    }
    out.sort();
    out
}

/// (order_date → revenue) of a lake's daily mart.
pub async fn daily_revenue(lake: &Lake) -> BTreeMap<String, i64> {
    rows_of(
        &lake.read("mart/revenue_daily").await.unwrap(),
        &["order_date", "revenue"],
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].parse().unwrap()))
    .collect()
}

/// (day → sum of subtotals) in the source database.
pub async fn revenue_by_sql(db: &mut mysql_async::Conn) -> BTreeMap<String, i64> {
    let sql = "SELECT DATE_FORMAT(o.timestamp, '%Y-%m-%d'), CAST(SUM(l.subtotal) AS SIGNED) \
               FROM orders o JOIN order_details l ON l.order_id = o.id GROUP BY 1";
    db.query::<(String, i64), _>(sql)
        .await
        .unwrap()
        .into_iter()
        .collect()
}
