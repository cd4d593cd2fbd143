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
    /// Kafka topics.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Measure each stage of the embedded pipeline on its own (tills, capture, recommender).
    Bench(BenchArgs),
    /// Print the effective configuration (defaults, file and environment merged) as TOML.
    Config,
}

/// Where the embedded engines keep their data.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Directory of the embedded databases [default: embedded.data_dir, ./brewline-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
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
    #[command(flatten)]
    pub metrics: MetricsArg,
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

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "expected a positive number of orders a second, got {s:?}"
        )),
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("expected `on` or `off`, got {s:?}")),
    }
}
