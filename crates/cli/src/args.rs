//! Command-line arguments. Flags override the configuration file and environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Print every record of a topic from the beginning, one JSON object per line.
    Tail(TailArgs),
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
