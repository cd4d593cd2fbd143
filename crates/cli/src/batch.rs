//! `brewline batch run`: the batch layer, over the embedded engines' log and source (the
//! default) or over Kafka's CDC topics and the MySQL/MariaDB source (`--servers`, or
//! `--brokers`/`--mysql`), into the lake (a local folder by default).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use brewline_batch::history::{PostgresHistory, RunHistory, SqliteHistory};
use brewline_batch::{Lake, Layer, Mode, RunReport, Sources};
use brewline_kafka::KafkaLog;
use brewline_mysql::MysqlSource;
use brewline_ports::{EventLog, LookupStore, SourceDb};
use brewline_redis::RedisLookups;

use crate::args::{
    BatchAction, BatchBenchArgs, BatchCheckArgs, BatchExportArgs, BatchHistoryArgs,
    BatchOptimizeArgs, BatchReportArgs, BatchRunArgs, BatchScheduleArgs, BatchVacuumArgs, LakeArgs,
    PublishAffinityArgs,
};
use crate::config::Config;
use crate::embedded::EmbeddedPipeline;
use crate::shutdown;

/// `brewline batch ACTION`.
pub async fn run_action(config: Config, action: BatchAction) -> anyhow::Result<ExitCode> {
    match action {
        BatchAction::Run(a) => run(config, a).await,
        BatchAction::Check(a) => check(config, a).await,
        BatchAction::Schedule(a) => schedule(config, a).await,
        BatchAction::PublishAffinity(a) => publish(config, a).await,
        BatchAction::Report(a) => report(config, a).await,
        BatchAction::History(a) => show_history(config, a).await,
        BatchAction::Export(a) => export(config, a).await,
        BatchAction::Bench(a) => bench(config, a).await,
        BatchAction::Optimize(a) => optimize(config, a).await,
        BatchAction::Vacuum(a) => vacuum(config, a).await,
    }
}

/// The lake of the flags and `config`, and the data dir.
pub fn open_lake(config: &mut Config, args: &LakeArgs) -> (Lake, PathBuf) {
    let data_dir = args.apply(config);
    (lake(config, &data_dir), data_dir)
}

/// The lake of `config`: `batch.lake`, else `lake/` in the data dir.
pub fn lake(config: &Config, data_dir: &Path) -> Lake {
    let root = match &config.batch.lake {
        Some(root) => root.clone(),
        None => data_dir.join("lake").to_string_lossy().into_owned(),
    };
    Lake::with_s3(root, &config.batch.s3).with_compute(config.batch.compute())
}

/// One batch run of `layers` over `log`'s CDC topics and `source`'s dimensions; the report is
/// written next to the lake's tables as JSON (`_reports/{run}.json`).
pub async fn run_once(
    config: &Config,
    log: &dyn EventLog,
    source: &dyn SourceDb,
    lake: &Lake,
    layers: &[Layer],
    mode: Mode,
) -> anyhow::Result<RunReport> {
    let sources = Sources {
        log,
        orders_topic: &config.topics.orders,
        order_details_topic: &config.topics.order_details,
        suggestions_topic: &config.topics.suggestions,
        source,
        accept_lost_events: config.batch.accept_lost_events,
    };
    let report = brewline_batch::run_layers(&sources, lake, layers, mode)
        .await
        .context("batch run failed")?;
    save_report(lake, &report).await?;
    Ok(report)
}

/// Writes `report` next to the lake's tables as JSON (`_reports/{run}.json`).
async fn save_report(lake: &Lake, report: &RunReport) -> anyhow::Result<()> {
    let path = format!("_reports/{}.json", report.run_id);
    lake.put_file(&path, serde_json::to_vec_pretty(&report)?)
        .await
        .with_context(|| format!("writing the run report {path} in the lake"))?;
    Ok(())
}

/// One batch run over an embedded pipeline; a run that passes publishes its product affinity
/// to the pipeline's lookups.
pub async fn run_embedded(pipeline: &EmbeddedPipeline, lake: &Lake) -> anyhow::Result<RunReport> {
    run_embedded_layers(pipeline, lake, &Layer::ALL, Mode::Incremental).await
}

async fn run_embedded_layers(
    pipeline: &EmbeddedPipeline,
    lake: &Lake,
    layers: &[Layer],
    mode: Mode,
) -> anyhow::Result<RunReport> {
    let report = run_once(
        &pipeline.config,
        &pipeline.dir.log,
        &pipeline.dir.source,
        lake,
        layers,
        mode,
    )
    .await?;
    if report.passed() && report.layers.contains(&Layer::Gold) {
        publish_affinity(&pipeline.config, lake, &pipeline.dir.state).await?;
    }
    Ok(report)
}

/// Loads the lake's affinity mart into `store`'s lookups; returns how many products have
/// related products.
pub async fn publish_affinity(
    config: &Config,
    lake: &Lake,
    store: &dyn LookupStore,
) -> anyhow::Result<usize> {
    let table = brewline_batch::affinity::from_lake(lake, config.batch.affinity_rule())
        .await
        .context("reading the product affinity mart")?;
    let products = table.related.len();
    let version = brewline_speed::lookup_cache::publish_affinity(store, table)
        .await
        .context("publishing the product affinity")?;
    println!(
        "product affinity: {products} products with related products, lookups version {version}"
    );
    Ok(products)
}

async fn redis_lookups(config: &Config) -> anyhow::Result<RedisLookups> {
    RedisLookups::connect(&config.redis)
        .await
        .context("connecting to the static Redis")
}

async fn publish(mut config: Config, args: PublishAffinityArgs) -> anyhow::Result<ExitCode> {
    let (lake, data_dir) = open_lake(&mut config, &args.lake);
    if args.servers || args.redis_static.is_some() {
        if let Some(u) = args.redis_static {
            config.redis.static_url = u;
        }
        let store = redis_lookups(&config).await?;
        publish_affinity(&config, &lake, &store).await?;
    } else {
        let pipeline = EmbeddedPipeline::open(config, &data_dir)?;
        publish_affinity(&pipeline.config, &lake, &pipeline.dir.state).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The engines a batch run reads.
enum Engines {
    Embedded(Box<EmbeddedPipeline>),
    Servers {
        log: Box<KafkaLog>,
        source: MysqlSource,
    },
}

/// `batch run` opened once: its engines, lake and layers; [`Runner::once`] runs it.
struct Runner {
    config: Config,
    lake: Lake,
    layers: Vec<Layer>,
    mode: Mode,
    engines: Engines,
    /// Publish the affinity to Redis after a run that passes.
    to_redis: bool,
    history: Box<dyn RunHistory>,
}

impl Runner {
    async fn open(mut config: Config, args: BatchRunArgs) -> anyhow::Result<Runner> {
        let (lake, data_dir) = open_lake(&mut config, &args.lake);
        let servers = args.engines.apply(&mut config);
        config.batch.accept_lost_events |= args.accept_lost_events;
        let to_redis = args.redis_static.is_some() || (servers && config.batch.publish_affinity);
        if let Some(u) = &args.redis_static {
            config.redis.static_url = u.clone();
        }
        let history = history(&config, &data_dir).await?;
        let engines = if servers {
            Engines::Servers {
                log: Box::new(KafkaLog::new(config.kafka.clone())),
                source: MysqlSource::new(&config.mysql)?,
            }
        } else {
            let pipeline = EmbeddedPipeline::open(config.clone(), &data_dir)?;
            pipeline.prepare().await?;
            Engines::Embedded(Box::new(pipeline))
        };
        Ok(Runner {
            config,
            lake,
            layers: args.layers(),
            mode: if args.full {
                Mode::Full
            } else {
                Mode::Incremental
            },
            engines,
            to_redis,
            history,
        })
    }

    /// One run; a run that passes and built gold publishes its product affinity.
    async fn once(&self) -> anyhow::Result<RunReport> {
        let report = match &self.engines {
            Engines::Embedded(pipeline) => {
                run_embedded_layers(pipeline, &self.lake, &self.layers, self.mode).await?
            }
            Engines::Servers { log, source } => {
                let (log, lake) = (log.as_ref(), &self.lake);
                run_once(&self.config, log, source, lake, &self.layers, self.mode).await?
            }
        };
        if report.passed() && self.to_redis && report.layers.contains(&Layer::Gold) {
            let store = redis_lookups(&self.config).await?;
            publish_affinity(&self.config, &self.lake, &store).await?;
        }
        self.history
            .record(&report)
            .await
            .context("recording the run in the history")?;
        Ok(report)
    }
}

/// The run history of `config`: PostgreSQL when `batch.history` is a postgres:// URL, else
/// SQLite at that path (default: batch_history.sqlite in the data dir).
pub async fn history(config: &Config, data_dir: &Path) -> anyhow::Result<Box<dyn RunHistory>> {
    Ok(match &config.batch.history {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Box::new(PostgresHistory::connect(url, config.batch.history_ca.as_deref()).await?)
        }
        Some(path) => Box::new(SqliteHistory::open(Path::new(path))?),
        None => Box::new(SqliteHistory::open(&data_dir.join("batch_history.sqlite"))?),
    })
}

async fn show_history(config: Config, args: BatchHistoryArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.resolve(&config);
    let runs = history(&config, &data_dir)
        .await?
        .recent(args.limit)
        .await?;
    println!(
        "{:<20} {:<24} {:>9} {:<18} {:>10} {:<8}",
        "run", "started (UTC)", "seconds", "layers", "rows", "gates"
    );
    for r in runs {
        println!(
            "{:<20} {:<24} {:>9.2} {:<18} {:>10} {}",
            r.run_id,
            brewline_core::calendar::datetime_of_millis(r.started_ms),
            (r.finished_ms - r.started_ms) as f64 / 1000.0,
            r.layers,
            r.rows,
            match r.failed_layer {
                None => "passed".to_string(),
                Some(l) => format!("FAILED at {l} ({} gates)", r.gates_failed),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn exit_code(passed: bool) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

async fn run(config: Config, args: BatchRunArgs) -> anyhow::Result<ExitCode> {
    let report = Runner::open(config, args).await?.once().await?;
    print!("{}", report.summary());
    Ok(exit_code(report.passed()))
}

/// `batch schedule`: a run every `--every` (the next one starts that long after the last
/// started, or at once when a run took longer), until a signal or `--runs`; a run that fails
/// is reported and the schedule goes on. Exits 2 when the last run failed.
async fn schedule(config: Config, args: BatchScheduleArgs) -> anyhow::Result<ExitCode> {
    let every = args.every;
    let runner = Runner::open(config, args.run).await?;
    let (_stop, mut shutdown) = shutdown::signalled();
    let mut runs = 0u64;
    let mut passed: bool;
    loop {
        let started = tokio::time::Instant::now();
        match runner.once().await {
            Ok(report) => {
                passed = report.passed();
                print!("{}", report.summary());
            }
            Err(e) => {
                passed = false;
                tracing::error!(
                    error = format!("{e:#}"),
                    "batch run failed; the schedule goes on"
                );
            }
        }
        runs += 1;
        if args.runs.is_some_and(|n| runs >= n) || *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(started + every) => {}
            _ = shutdown.changed() => break,
        }
    }
    Ok(exit_code(passed))
}

async fn check(mut config: Config, args: BatchCheckArgs) -> anyhow::Result<ExitCode> {
    let (lake, _) = open_lake(&mut config, &args.lake);
    let report = brewline_batch::check(&lake, args.layer)
        .await
        .context("batch check failed")?;
    save_report(&lake, &report).await?;
    print!("{}", report.summary());
    Ok(exit_code(report.passed()))
}

async fn export(mut config: Config, args: BatchExportArgs) -> anyhow::Result<ExitCode> {
    let (lake, _) = open_lake(&mut config, &args.lake);
    let n = brewline_batch::export::export(&lake, &args.to)
        .await
        .with_context(|| format!("exporting the lake to {}", args.to.display()))?;
    println!("{n} tables and steps.json written to {}", args.to.display());
    Ok(ExitCode::SUCCESS)
}

async fn optimize(mut config: Config, args: BatchOptimizeArgs) -> anyhow::Result<ExitCode> {
    let (lake, _) = open_lake(&mut config, &args.lake);
    let tidied = brewline_batch::housekeeping::optimize(&lake)
        .await
        .with_context(|| format!("compacting the tables of the lake at {}", lake.root()))?;
    for t in &tidied {
        println!(
            "{}: {} files compacted into {}",
            t.table, t.files_removed, t.files_added
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn vacuum(mut config: Config, args: BatchVacuumArgs) -> anyhow::Result<ExitCode> {
    let (lake, _) = open_lake(&mut config, &args.lake);
    let tidied = brewline_batch::housekeeping::vacuum(&lake, args.retain)
        .await
        .with_context(|| format!("vacuuming the tables of the lake at {}", lake.root()))?;
    for t in &tidied {
        println!("{}: {} files deleted", t.table, t.files_removed);
    }
    Ok(ExitCode::SUCCESS)
}

async fn report(mut config: Config, args: BatchReportArgs) -> anyhow::Result<ExitCode> {
    let (lake, data_dir) = open_lake(&mut config, &args.lake);
    let views = brewline_batch::report::views(&lake)
        .await
        .context("reading the marts")?;
    if views.is_empty() {
        anyhow::bail!(
            "the lake at {} has no marts yet: run `brewline batch run` first",
            lake.root()
        );
    }
    for (title, rows) in &views {
        println!("{title}:");
        println!(
            "{}",
            deltalake::arrow::util::pretty::pretty_format_batches(rows)?
        );
    }
    let out = args.out.unwrap_or_else(|| data_dir.join("report"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (file, svg) in brewline_batch::report::charts(&views)? {
        let path = out.join(file);
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        println!("chart: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench(config: Config, args: BatchBenchArgs) -> anyhow::Result<ExitCode> {
    if args.lake.exists() && std::fs::read_dir(&args.lake)?.next().is_some() {
        anyhow::bail!(
            "{} is not empty: the benchmark builds a lake of its own; give a new folder",
            args.lake.display()
        );
    }
    let lake =
        Lake::at(args.lake.to_string_lossy().into_owned()).with_compute(config.batch.compute());
    let reference = brewline_core::ReferenceData::bundled()?;
    let bar = indicatif::ProgressBar::new(args.lines);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "landing bronze {bar:40} {pos}/{len} lines ({per_sec}, {eta} left)",
    )?);
    let report = brewline_batch::bench::bench(
        &lake,
        &reference,
        args.lines,
        args.seed,
        args.increment,
        &|n| bar.set_position(n),
    )
    .await?;
    bar.finish_and_clear();
    print!("{}", report.run.summary());
    println!(
        "bench: {} orders, {} lines landed in {:.2} s; bronze -> gold in {:.2} s, peak RSS {}",
        report.orders,
        report.lines,
        report.land_seconds,
        report.build_seconds,
        report
            .build_peak_rss_mib
            .map_or_else(|| "unknown".to_string(), |m| format!("{m:.0} MiB"))
    );
    if let Some(i) = &report.increment {
        print!("{}", i.run.summary());
        println!(
            "bench: then {} new orders, {} lines: incremental silver -> gold in {:.2} s ({:.1} % of the full run), peak RSS {}",
            i.orders,
            i.lines,
            i.seconds,
            100.0 * i.seconds / report.build_seconds,
            i.peak_rss_mib
                .map_or_else(|| "unknown".to_string(), |m| format!("{m:.0} MiB"))
        );
    }
    println!(
        "{}",
        serde_json::to_string(&serde_json::json!({
            "orders": report.orders,
            "lines": report.lines,
            "land_seconds": report.land_seconds,
            "build_seconds": report.build_seconds,
            "build_peak_rss_mib": report.build_peak_rss_mib,
            "increment_orders": report.increment.as_ref().map(|i| i.orders),
            "increment_seconds": report.increment.as_ref().map(|i| i.seconds),
            "increment_peak_rss_mib": report.increment.as_ref().and_then(|i| i.peak_rss_mib),
        }))?
    );
    Ok(exit_code(report.run.passed()))
}
