//! `brewline`: one binary for the coffee-shop pipeline.

mod args;
mod batch;
mod bench;
mod bench_cdc;
mod bench_debezium;
mod bench_kafka;
mod cdc;
mod config;
mod config_doc;
mod demo;
mod dlq;
mod embedded;
mod metrics_server;
mod recommend;
mod serve;
mod shutdown;
mod source_cmds;
mod tail;
mod tills;
mod topics;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{CacheAction, Cli, Command, DbAction, LogFormat, TopicsAction};
use crate::config::Config;

/// mimalloc, when built with the feature `mimalloc`; else the system's malloc, which measured
/// faster and smaller for the batch layer (crates/cli/Cargo.toml).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(format: LogFormat) {
    // The Delta kernel logs an ERROR for every table it opens that was never written, which
    // brewline does on purpose (a lake's first run): those lines are noise, always.
    let quiet = "buoyant_kernel::snapshot::builder=off";
    let filter = tracing_subscriber::EnvFilter::try_from_env("BREWLINE_LOG")
        .map(|f| f.add_directive(quiet.parse().unwrap_or_default()))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,{quiet}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let run = || -> anyhow::Result<ExitCode> {
        let config = Config::load(cli.config.as_deref())?;
        config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            match cli.command {
                Command::Demo(a) => demo::run(config, a).await,
                Command::Tail(a) => tail::run(config, a).await,
                Command::Bench(a) => bench::run(config, a).await,
                Command::Recommend(a) => recommend::run(config, a).await,
                Command::Cdc(a) => cdc::run(config, a).await,
                Command::Serve(a) => serve::run(config, a).await,
                Command::Batch { action } => batch::run_action(config, action).await,
                Command::Db {
                    action: DbAction::Init(a),
                } => source_cmds::init(config, a).await,
                Command::Db {
                    action: DbAction::Seed(a),
                } => source_cmds::seed(config, a).await,
                Command::Db {
                    action: DbAction::Grants(a),
                } => Ok(source_cmds::grants(&config, &a)),
                Command::Simulate(a) => source_cmds::simulate(config, a).await,
                Command::Cache {
                    action: CacheAction::Load(a),
                } => source_cmds::cache_load(config, a).await,
                Command::Accept(a) => source_cmds::accept(config, a).await,
                Command::Topics {
                    action: TopicsAction::Create(a),
                } => topics::create(config, a).await,
                Command::Dlq { action } => dlq::run(config, action).await,
                Command::Config(a) => {
                    let secrets = if a.show_secrets {
                        config_doc::Secrets::Shown
                    } else {
                        config_doc::Secrets::Redacted
                    };
                    print!("{}", config_doc::documented(&config, secrets)?);
                    Ok(ExitCode::SUCCESS)
                }
            }
        })
    };
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
