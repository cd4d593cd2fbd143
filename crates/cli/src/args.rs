//! Command-line arguments. Flags override the configuration file and environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;

/// brewline: a coffee-shop sales pipeline — change capture, a real-time recommender, and the
/// batch and serving layers — in one binary. With no servers it runs on embedded engines.
#[derive(Debug, Parser)]
#[command(name = "brewline", version, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file (see `brewline config` for every key and its value).
    #[arg(long, global = true, env = "BREWLINE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log lines as text or JSON (filter with BREWLINE_LOG, e.g. `info` or `brewline=debug`).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "BREWLINE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole speed layer on the embedded engines: the tills write orders, capture turns
    /// them into Debezium events, the recommender suggests; then print a summary. Run it again
    /// on the same data dir to add orders: nothing is processed twice.
    Demo(DemoArgs),
    /// Print every record of a topic from the beginning, one JSON object per line (from the
    /// embedded log, or from Kafka with --brokers).
    Tail(TailArgs),
    /// The real-time recommender on Kafka and Redis: reads the CDC topics as a consumer group,
    /// publishes one suggestion per eligible order. Runs until SIGTERM or Ctrl-C, then
    /// finishes the batch in hand, commits and exits 0.
    Recommend(RecommendArgs),
    /// Change data capture: the row binlog of MySQL/MariaDB into Debezium-format topics on
    /// Kafka, one per table, keyed by order id. Snapshots the tables first when no position is
    /// stored; stores its position only after the broker acknowledged every event before it.
    /// Runs until SIGTERM or Ctrl-C.
    Cdc(CdcArgs),
    /// The shop's MySQL/MariaDB database.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// The shop's tills: write orders into MySQL/MariaDB, one transaction per order.
    Simulate(SimulateArgs),
    /// The lookup cache in Redis.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Customers accepting suggestions: reads `order_suggestions` and writes a share of them
    /// back as order lines with `is_suggestion = true`. Runs until SIGTERM or Ctrl-C.
    Accept(AcceptArgs),
    /// The batch layer: the lake's bronze, silver and gold tables and marts, with quality
    /// gates.
    Batch {
        #[command(subcommand)]
        action: BatchAction,
    },
    /// The serving layer: a JSON API and a live dashboard at http://ADDR/ of the shop's figures,
    /// each the batch view (the last published batch run's marts) plus the speed layer since
    /// its watermark, read from the CDC and suggestion topics; Prometheus metrics at /metrics.
    /// Runs until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Dead letters: records that could not be handled or that the log refused, each with why
    /// and where it came from (from the embedded log, or from Kafka with --brokers/--servers).
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Kafka topics.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Measure each stage of the embedded pipeline on its own (tills, capture, recommender).
    Bench(BenchArgs),
    /// Print the effective configuration (defaults, file and environment merged) as TOML,
    /// every secret (passwords, in URLs too, keys, tokens) shown as `<redacted>`.
    Config(ConfigArgs),
}

/// `brewline config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Show the secrets as they are, to copy the whole configuration elsewhere.
    #[arg(long)]
    pub show_secrets: bool,
}

/// Where the embedded engines keep their data.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Directory of the embedded databases [default: embedded.data_dir, ./brewline-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArg {
    /// The flag, else `embedded.data_dir`.
    pub fn resolve(&self, config: &Config) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| config.embedded.data_dir.clone())
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Orders the tills write in this run.
    #[arg(long, default_value_t = 20_000)]
    pub orders: u64,
    /// Seed of the tills and of the suggestions: the same seed gives the same orders.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Orders a second the tills write [default: as fast as the source takes them].
    #[arg(long, value_parser = parse_rate, allow_hyphen_values = true)]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Write change events with Kafka Connect's `schema` part [default: capture.schemas].
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub schemas: Option<bool>,
    /// Make this share of the orders (0 to 1) a diamond customer's paid with the eligible
    /// bank, so that they get suggestions [default: the original's distributions, about 1
    /// order in 800].
    #[arg(long, value_parser = parse_share, value_name = "SHARE")]
    pub eligible_share: Option<f64>,
    #[command(flatten)]
    pub metrics: MetricsArg,
    /// After the run, keep the pipeline going and serve the API and the live dashboard at
    /// http://ADDR/ (e.g. 127.0.0.1:8080): the tills go on writing orders, customers take a
    /// share of the suggestions, and a batch run is made every --batch-every. Until Ctrl-C.
    #[arg(long, value_name = "ADDR")]
    pub serve: Option<SocketAddr>,
    /// With --serve: orders a second the tills go on writing.
    #[arg(long, default_value_t = 20.0, value_parser = parse_rate)]
    pub serve_rate: f64,
    /// With --serve: the tills stop after this many more orders (the rest goes on serving)
    /// [default: no end].
    #[arg(long, value_name = "N")]
    pub serve_orders: Option<u64>,
    /// With --serve: how often a batch run is made (e.g. 30s, 5m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub batch_every: std::time::Duration,
    /// With --serve: share of customers who take their suggestion, 0 to 1.
    #[arg(long, default_value_t = 0.5, value_parser = parse_share, value_name = "SHARE")]
    pub accept_share: f64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen [default: serve.addr, 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<SocketAddr>,
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub engines: ServerArgs,
}

/// The real engines instead of the embedded ones.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Read the topics from Kafka and the source from MySQL/MariaDB (kafka.brokers,
    /// mysql.url) instead of the embedded engines of the data dir; implied by --brokers or
    /// --mysql.
    #[arg(long)]
    pub servers: bool,
    #[command(flatten)]
    pub kafka: KafkaArg,
    #[command(flatten)]
    pub mysql: MysqlArg,
}

impl ServerArgs {
    /// Puts the flags into `config`; true when the real engines are asked for.
    pub fn apply(&self, config: &mut Config) -> bool {
        self.kafka.apply(config);
        self.mysql.apply(config);
        self.servers || self.kafka.brokers.is_some() || self.mysql.mysql.is_some()
    }
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The topic, e.g. order_suggestions or mysql.coffee_shop.orders.
    pub topic: String,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Read from Kafka at these brokers instead of the embedded log.
    #[arg(long, value_name = "HOST:PORT[,...]")]
    pub brokers: Option<String>,
    /// On Kafka, stop once no record came for this many milliseconds.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub idle_ms: u64,
    /// Stop after this many records.
    #[arg(long)]
    pub max: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// One line per dead letter not yet handled (replayed or purged): where it is, where it
    /// came from, why, and its size.
    List {
        #[command(flatten)]
        log: DlqLogArgs,
        /// Those already handled too.
        #[arg(long)]
        all: bool,
    },
    /// One dead letter in full, as a JSON object (as `tail` prints records).
    Show {
        #[command(flatten)]
        log: DlqLogArgs,
        /// Its offset in the dead-letter topic (as `list` shows it).
        offset: i64,
        /// Its partition (the dead-letter topic brewline creates has one).
        #[arg(long, default_value_t = 0)]
        partition: i32,
    },
    /// Send the dead letters not yet handled back into the topics they were read from (once
    /// what made them fail is fixed), then mark them handled. Letters cut short, or that do not
    /// say where they came from, are skipped and stay.
    Replay {
        #[command(flatten)]
        log: DlqLogArgs,
        /// Only these offsets (repeat the flag); they are not marked handled.
        #[arg(long = "offset", value_name = "OFFSET")]
        offsets: Vec<i64>,
        /// Say what would be sent, send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Mark every dead letter so far handled: `list` and `replay` skip them from then on. The
    /// records stay until the topic's retention (topics.dead_letter_retention_days) drops them.
    Purge(DlqLogArgs),
}

/// Which log's dead-letter topic (topics.dead_letters).
#[derive(Debug, Args)]
pub struct DlqLogArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Kafka at these brokers instead of the embedded log.
    #[arg(long, value_name = "HOST:PORT[,...]")]
    pub brokers: Option<String>,
    /// Kafka at kafka.brokers instead of the embedded log.
    #[arg(long)]
    pub servers: bool,
    /// On Kafka, the topic is read to its end once no record came for this many milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub idle_ms: u64,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Orders to generate (about 1.35 lines each).
    #[arg(long, default_value_t = 200_000)]
    pub orders: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Write change events with Kafka Connect's `schema` part.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off, default_value = "off",
          action = clap::ArgAction::Set)]
    pub schemas: bool,
    /// Where to put the benchmark's data [default: a fresh temporary directory].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Benchmark the recommender on Kafka (these brokers) and Redis instead: the broker's own
    /// limit, `brewline recommend`, and the baseline, on the same events.
    #[arg(long, value_name = "HOST:PORT[,...]")]
    pub brokers: Option<String>,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// With --brokers: also run the original pipeline's way of working
    /// (bench/original_consumer.py) with this Python, which has kafka-python and redis-py.
    #[arg(long, value_name = "PYTHON")]
    pub baseline: Option<PathBuf>,
    /// The baseline script [default: bench/original_consumer.py].
    #[arg(long, value_name = "FILE")]
    pub baseline_script: Option<PathBuf>,
    /// With --brokers: workers of the benchmarked `brewline recommend`.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// With --brokers: benchmark change capture from this MySQL/MariaDB server instead
    /// (throughput on a bulk insert, then latency at a steady rate).
    #[arg(long, value_name = "URL")]
    pub mysql: Option<String>,
    /// With --mysql: order lines of the bulk insert.
    #[arg(long, default_value_t = 1_000_000)]
    pub lines: u64,
    /// With --mysql: orders a second of the latency run; several, comma-separated (e.g.
    /// `100,500,2000,5000`), run one after the other: the latency curve.
    #[arg(long, default_value = "500", value_delimiter = ',', value_parser = parse_rate)]
    pub rate: Vec<f64>,
    /// With --mysql: seconds of the latency run (of each rate).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// With --mysql: also run Debezium on the same backlog, with this script that starts a
    /// Kafka Connect worker (scripts/connect).
    #[arg(long, value_name = "SCRIPT")]
    pub connect: Option<PathBuf>,
    /// With --connect: the connector's configuration, as deployed.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "deploy/connect/mysql-source.json"
    )]
    pub connector: PathBuf,
}

/// Where Kafka is.
#[derive(Debug, Args)]
pub struct KafkaArg {
    /// Kafka bootstrap servers [default: kafka.brokers].
    #[arg(long, value_name = "HOST:PORT[,...]")]
    pub brokers: Option<String>,
}

impl KafkaArg {
    pub fn apply(&self, config: &mut Config) {
        if let Some(b) = &self.brokers {
            config.kafka.brokers = b.clone();
        }
    }
}

/// Where Redis is.
#[derive(Debug, Args)]
pub struct RedisArgs {
    /// The static Redis database, the lookup cache [default: redis.static_url].
    #[arg(long, value_name = "URL")]
    pub redis_static: Option<String>,
    /// The dynamic Redis database, per-order state [default: redis.dynamic_url].
    #[arg(long, value_name = "URL")]
    pub redis_dynamic: Option<String>,
}

impl RedisArgs {
    pub fn apply(&self, config: &mut Config) {
        if let Some(u) = &self.redis_static {
            config.redis.static_url = u.clone();
        }
        if let Some(u) = &self.redis_dynamic {
            config.redis.dynamic_url = u.clone();
        }
    }
}

/// Kafka and Redis.
#[derive(Debug, Args)]
pub struct EngineArgs {
    #[command(flatten)]
    pub kafka: KafkaArg,
    #[command(flatten)]
    pub redis: RedisArgs,
}

impl EngineArgs {
    pub fn apply(&self, config: &mut Config) {
        self.kafka.apply(config);
        self.redis.apply(config);
    }
}

/// The Prometheus endpoint of a long-running command.
#[derive(Debug, Args)]
pub struct MetricsArg {
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    #[command(flatten)]
    pub engines: EngineArgs,
    /// Workers in this process, each a member of the group (at most one per partition is
    /// busy; start more processes in the same group to scale out).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Consumer group [default: recommender.group, realtime-recs].
    #[arg(long)]
    pub group: Option<String>,
    /// Seed of the random suggestions [default: recommender.seed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Static group membership: workers join as ID-0, ID-1 ... so that a restart takes the
    /// partitions back at once [default: recommender.instance_id, none].
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    #[command(flatten)]
    pub metrics: MetricsArg,
}

/// Where the shop's database is.
#[derive(Debug, Args)]
pub struct MysqlArg {
    /// The MySQL/MariaDB server, mysql://user:password@host:port [default: mysql.url].
    #[arg(long, value_name = "URL")]
    pub mysql: Option<String>,
}

impl MysqlArg {
    pub fn apply(&self, config: &mut Config) {
        if let Some(u) = &self.mysql {
            config.mysql.url = u.clone();
        }
    }
}

#[derive(Debug, Args)]
pub struct CdcArgs {
    #[command(flatten)]
    pub mysql: MysqlArg,
    #[command(flatten)]
    pub kafka: KafkaArg,
    /// Replica id to read the binlog as, unique on the server [default: cdc.server_id].
    #[arg(long, value_name = "N")]
    pub server_id: Option<u32>,
    /// Tables to capture, comma-separated [default: cdc.tables, orders,order_details].
    #[arg(long, value_delimiter = ',', value_name = "TABLE,...")]
    pub tables: Option<Vec<String>>,
    /// Write change events with Kafka Connect's `schema` part [default: capture.schemas].
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub schemas: Option<bool>,
    /// Stop once the binlog is read to its end instead of following it.
    #[arg(long)]
    pub until_caught_up: bool,
    /// Take a new snapshot of the tables before following the binlog, whatever position is
    /// stored: the way on when the stored position was purged from the server (every row comes
    /// again as a read event; downstream repeats are identical).
    #[arg(long)]
    pub resnapshot: bool,
    #[command(flatten)]
    pub metrics: MetricsArg,
}

#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Create the database and its tables (primary keys everywhere, phone numbers as text);
    /// running it again changes nothing.
    Init(MysqlArg),
    /// Load the reference data (stores, payment methods, categories, products, customers);
    /// running it again changes only what differs.
    Seed(MysqlArg),
    /// Print the GRANT statements that give each role's user the least it needs (capture:
    /// `cdc`; tills: `simulate`; accept; batch: `batch run`; cache: `cache load`), for the
    /// configured database, captured tables and offsets database. Connects to nothing: run
    /// the statements as an administrator, after creating the users (with a password from your
    /// secret store, and `REQUIRE SSL`).
    Grants(GrantsArgs),
}

#[derive(Debug, Args)]
pub struct GrantsArgs {
    /// Only these roles [default: every one].
    #[arg(long = "role", value_enum, value_name = "ROLE")]
    pub roles: Vec<GrantRole>,
    /// Each role's user is named this prefix and the role's name (`brewline_capture`, ...).
    #[arg(long, default_value = "brewline_")]
    pub user_prefix: String,
    /// The host part of each user (`'brewline_capture'@'HOST'`).
    #[arg(long, default_value = "%")]
    pub host: String,
    /// The server: MariaDB (10.5.2 or later) or MySQL (8), whose capture privileges differ.
    #[arg(long, value_enum, default_value = "mariadb")]
    pub flavor: GrantFlavor,
}

/// A role of `db grants`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GrantRole {
    Capture,
    Tills,
    Accept,
    Batch,
    Cache,
}

/// The server kind of `db grants`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GrantFlavor {
    Mariadb,
    Mysql,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub mysql: MysqlArg,
    /// Orders to write.
    #[arg(long, default_value_t = 20_000)]
    pub orders: u64,
    /// Orders a second [default: as fast as the database takes them].
    #[arg(long, value_parser = parse_rate, allow_hyphen_values = true)]
    pub rate: Option<f64>,
    /// Seed of the tills: the same seed gives the same orders.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Make this share of the orders (0 to 1) a diamond customer's paid with the eligible
    /// bank, so that they get suggestions [default: the original's distributions, about 1
    /// order in 800].
    #[arg(long, value_parser = parse_share, value_name = "SHARE")]
    pub eligible_share: Option<f64>,
    #[command(flatten)]
    pub metrics: MetricsArg,
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a share from 0 to 1, got {s:?}")),
    }
}

#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Build `diamond_customers`, `bank_acb_payment` and `product:{id}` from the database,
    /// swap them in atomically and raise the version recommenders watch.
    Load(CacheLoadArgs),
}

#[derive(Debug, Args)]
pub struct CacheLoadArgs {
    #[command(flatten)]
    pub mysql: MysqlArg,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Load again at this interval (e.g. 30s, 5m, 1h) until stopped [default: once].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub every: Option<std::time::Duration>,
    #[command(flatten)]
    pub metrics: MetricsArg,
}

#[derive(Debug, Args)]
pub struct AcceptArgs {
    #[command(flatten)]
    pub mysql: MysqlArg,
    #[command(flatten)]
    pub kafka: KafkaArg,
    /// Share of customers who accept their suggestion, 0 to 1 (decided per order id).
    #[arg(long, default_value = "1", value_parser = parse_share, value_name = "SHARE")]
    pub share: f64,
    /// Consumer group [default: accept.group].
    #[arg(long)]
    pub group: Option<String>,
    #[command(flatten)]
    pub metrics: MetricsArg,
}

#[derive(Debug, Subcommand)]
pub enum BatchAction {
    /// Land new CDC events and the dimensions in bronze, build silver, gold and the marts,
    /// checking each layer's gates before publishing it; exits 2 when a gate fails (the report
    /// says which), publishing nothing after that layer.
    Run(BatchRunArgs),
    /// Load the product affinity mart into the recommender's lookups (Redis with
    /// --redis-static or --servers, else the data dir's embedded state); the recommender
    /// suggests the product with the highest affinity to the order's.
    PublishAffinity(PublishAffinityArgs),
    /// Check a published layer against its gates (not null, unique keys, amounts, references,
    /// totals reconciled with the layer before); exits 2 when one fails. The Airflow DAG runs
    /// it as a task of its own after each layer.
    Check(BatchCheckArgs),
    /// Write the lake's published tables as plain Parquet and `steps.json` (the bronze inputs
    /// and each step's SQL in build order) for Spark and other engines without Delta Lake
    /// (deploy/spark/brewline_spark.py runs the same SQL over them).
    Export(BatchExportArgs),
    /// Run the batch layer on a schedule: every DURATION (e.g. 15m, 1h, 1d) until stopped.
    Schedule(BatchScheduleArgs),
    /// Print the marts as tables and write charts of revenue per day and per category (SVG).
    Report(BatchReportArgs),
    /// The latest runs: when, how long, which layers, rows written and the gates' verdict
    /// (from batch.history: SQLite by default, or PostgreSQL).
    History(BatchHistoryArgs),
    /// Benchmark: land about --lines generated order lines in a fresh lake's bronze (as
    /// capture would send them), then time bronze → silver → gold and its peak memory.
    Bench(BatchBenchArgs),
    /// Compact the small files of every table of the lake into larger ones (one commit per
    /// table that has any); readers of earlier versions keep their files until a vacuum.
    Optimize(BatchOptimizeArgs),
    /// Delete from every table the files that commits older than --retain removed, except
    /// those of the versions the serving manifest names (`brewline serve` reads them).
    Vacuum(BatchVacuumArgs),
}

#[derive(Debug, Args)]
pub struct BatchOptimizeArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
}

#[derive(Debug, Args)]
pub struct BatchVacuumArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// How long removed files stay for readers of earlier versions (time travel): a number and
    /// a unit, ms, s, m, h or d.
    #[arg(long, default_value = "7d", value_parser = parse_duration, value_name = "DURATION")]
    pub retain: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct BatchBenchArgs {
    /// Order lines to generate (about 1.35 an order).
    #[arg(long, default_value_t = 1_000_000)]
    pub lines: u64,
    /// The lake to build: a folder that does not exist yet, or an empty one.
    #[arg(long, value_name = "DIR")]
    pub lake: std::path::PathBuf,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Then land this percent of new orders (placed in the hour after the others) and time an
    /// incremental run over them; 0: none.
    #[arg(long, value_name = "PERCENT", default_value_t = 1.0, value_parser = parse_percent)]
    pub increment: f64,
}

#[derive(Debug, Args)]
pub struct BatchHistoryArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// How many runs to list, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct BatchReportArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Where to write the charts [default: report/ in the data dir].
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct BatchScheduleArgs {
    /// Time between the starts of two runs: a number and a unit, ms, s, m, h or d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub every: std::time::Duration,
    /// Stop after this many runs [default: run until a signal].
    #[arg(long, value_name = "N")]
    pub runs: Option<u64>,
    #[command(flatten)]
    pub run: BatchRunArgs,
}

#[derive(Debug, Args)]
pub struct BatchExportArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// The folder to write to.
    #[arg(long, value_name = "DIR")]
    pub to: std::path::PathBuf,
}

impl BatchRunArgs {
    /// The layers to build.
    pub fn layers(&self) -> Vec<brewline_batch::Layer> {
        if self.layer.is_empty() {
            brewline_batch::Layer::ALL.to_vec()
        } else {
            self.layer.clone()
        }
    }
}

fn parse_layer(s: &str) -> Result<brewline_batch::Layer, String> {
    brewline_batch::Layer::parse(s)
        .ok_or_else(|| format!("{s:?} is not a layer: use bronze, silver or gold"))
}

#[derive(Debug, Args)]
pub struct BatchCheckArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// The layer whose published tables to check.
    #[arg(long, value_name = "LAYER", value_parser = parse_layer)]
    pub layer: brewline_batch::Layer,
}

#[derive(Debug, Args)]
pub struct PublishAffinityArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// The static Redis database, the lookup cache [default: redis.static_url, with
    /// --servers].
    #[arg(long, value_name = "URL")]
    pub redis_static: Option<String>,
    /// Publish to Redis (redis.static_url) rather than the embedded state.
    #[arg(long)]
    pub servers: bool,
}

/// Where the lake is: the data dir (for the embedded engines, the default lake and history)
/// and the lake's root.
#[derive(Debug, Args)]
pub struct LakeArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The lake's root: a folder, or s3://bucket/prefix with [batch.s3] settings
    /// [default: batch.lake, else lake/ in the data dir].
    #[arg(long, value_name = "PATH|URL")]
    pub lake: Option<String>,
}

impl LakeArgs {
    /// The data dir; `--lake` goes into `config.batch.lake`.
    pub fn apply(&self, config: &mut Config) -> PathBuf {
        if let Some(l) = &self.lake {
            config.batch.lake = Some(l.clone());
        }
        self.data_dir.resolve(config)
    }
}

#[derive(Debug, Args)]
pub struct BatchRunArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub engines: ServerArgs,
    /// Build only these layers (the others they read must be published)
    /// [default: bronze,silver,gold].
    #[arg(long, value_delimiter = ',', value_name = "LAYER,...", value_parser = parse_layer)]
    pub layer: Vec<brewline_batch::Layer>,
    /// After a run that passes, publish its product affinity to this static Redis database
    /// (with --servers and batch.publish_affinity: to redis.static_url). On the embedded
    /// engines it always goes to the data dir's state.
    #[arg(long, value_name = "URL")]
    pub redis_static: Option<String>,
    /// Land from the earliest events left when events after the last landing were deleted
    /// from a topic (retention) before they were landed; the run's report records the gap
    /// [default: batch.accept_lost_events, false: such a gap fails the bronze gates].
    #[arg(long)]
    pub accept_lost_events: bool,
    /// Rebuild silver and gold from all of bronze. Without it a run recomputes only what the
    /// events landed since the last run touch (those orders, the days of the marts they are
    /// in, the orders of dimension members with new versions), and rebuilds whole when the
    /// lake's record of the last run does not allow that; the run's summary says which.
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Subcommand)]
pub enum TopicsAction {
    /// Create every topic brewline uses (the CDC topics, suggestions, dead letters) with its
    /// partitions; existing topics are left as they are.
    Create(TopicsArgs),
}

#[derive(Debug, Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub kafka: KafkaArg,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("expected a percent from 0 to 100, got {s:?}")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "expected a positive number of orders a second, got {s:?}"
        )),
    }
}

/// A duration like `500ms`, `30s`, `5m`, `1h`, `1d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 30s, 5m or 1h, got {s:?}"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("unknown unit in {s:?}: use ms, s, m, h or d")),
    };
    match n.checked_mul(millis_per_unit) {
        Some(0) => Err("the duration must be more than zero".into()),
        Some(ms) => Ok(std::time::Duration::from_millis(ms)),
        None => Err(format!("{s:?} is too long")),
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("expected `on` or `off`, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_read_with_their_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "15", "m", "0s", "0ms", "1w", "-5m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}d", u64::MAX);
        assert!(parse_duration(&long).unwrap_err().contains("too long"));
    }

    /// A zero duration and a share out of range fail when the command line is parsed, with
    /// the message every other such flag gives.
    #[test]
    fn bad_durations_and_shares_fail_at_parse_time() {
        use clap::Parser;
        let error = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => e.to_string(),
        };
        let zero: [&[&str]; 3] = [
            &["brewline", "cache", "load", "--every", "0ms"],
            &["brewline", "batch", "schedule", "--every", "0s"],
            &["brewline", "demo", "--batch-every", "0ms"],
        ];
        for args in zero {
            let e = error(args);
            assert!(e.contains("more than zero"), "{args:?}: {e}");
        }
        for share in ["1.5", "NaN", "most"] {
            let e = error(&["brewline", "accept", "--share", share]);
            assert!(e.contains("expected a share from 0 to 1"), "{share}: {e}");
        }
        assert!(Cli::try_parse_from(["brewline", "accept", "--share", "0.25"]).is_ok());
    }
}
