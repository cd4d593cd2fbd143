//! `brewline batch run`: the batch layer, over the embedded engines' log and source (the
//! default) or over Kafka's CDC topics and the MySQL/MariaDB source (`--servers`, or
//! `--brokers`/`--mysql`), into the lake (a local folder by default).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use brewline_batch::{Lake, RunReport, Sources};
use brewline_kafka::KafkaLog;
use brewline_mysql::MysqlSource;
use brewline_ports::{EventLog, LookupStore, SourceDb};
use brewline_redis::RedisLookups;

use crate::args::{BatchRunArgs, PublishAffinityArgs};
use crate::config::Config;
use crate::embedded::EmbeddedPipeline;

/// The lake of `config`: `batch.lake`, else `lake/` in the data dir.
pub fn lake(config: &Config, data_dir: &Path) -> Lake {
    let root = match &config.batch.lake {
        Some(root) => root.clone(),
        None => data_dir.join("lake").to_string_lossy().into_owned(),
    };
    Lake::with_s3(root, &config.batch.s3)
}

/// One batch run over `log`'s CDC topics and `source`'s dimensions; the report is written next
/// to the lake's tables as JSON (`_reports/{run}.json`).
pub async fn run_once(
    config: &Config,
    log: &dyn EventLog,
    source: &dyn SourceDb,
    lake: &Lake,
) -> anyhow::Result<RunReport> {
    let dimensions = source
        .extract_dimensions()
        .await
        .context("extracting the dimensions")?;
    let sources = Sources {
        log,
        orders_topic: &config.topics.orders,
        order_details_topic: &config.topics.order_details,
        dimensions: &dimensions,
    };
    let report = brewline_batch::run(&sources, lake)
        .await
        .context("batch run failed")?;
    let path = format!("_reports/{}.json", report.run_id);
    lake.put_file(&path, serde_json::to_vec_pretty(&report)?)
        .await
        .with_context(|| format!("writing the run report {path} in the lake"))?;
    Ok(report)
}

/// One batch run over an embedded pipeline; a run that passes publishes its product affinity
/// to the pipeline's lookups.
pub async fn run_embedded(pipeline: &EmbeddedPipeline, lake: &Lake) -> anyhow::Result<RunReport> {
    let report = run_once(
        &pipeline.config,
        &pipeline.dir.log,
        &pipeline.dir.source,
        lake,
    )
    .await?;
    if report.passed() {
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

pub async fn publish(mut config: Config, args: PublishAffinityArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.resolve(&config);
    if let Some(l) = args.lake {
        config.batch.lake = Some(l);
    }
    let lake = lake(&config, &data_dir);
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

pub async fn run(mut config: Config, args: BatchRunArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.resolve(&config);
    if let Some(l) = args.lake {
        config.batch.lake = Some(l);
    }
    let servers = args.servers || args.kafka.brokers.is_some() || args.mysql.mysql.is_some();
    let to_redis = args.redis_static.is_some() || (servers && config.batch.publish_affinity);
    if let Some(u) = args.redis_static {
        config.redis.static_url = u;
    }
    args.kafka.apply(&mut config);
    args.mysql.apply(&mut config);
    let lake = lake(&config, &data_dir);
    let report = if servers {
        let log = KafkaLog::new(config.kafka.clone());
        let source = MysqlSource::new(&config.mysql)?;
        let report = run_once(&config, &log, &source, &lake).await?;
        if report.passed() && to_redis {
            publish_affinity(&config, &lake, &redis_lookups(&config).await?).await?;
        }
        report
    } else {
        let pipeline = EmbeddedPipeline::open(config, &data_dir)?;
        pipeline.prepare().await?;
        let report = run_embedded(&pipeline, &lake).await?;
        if report.passed() && to_redis {
            let store = redis_lookups(&pipeline.config).await?;
            publish_affinity(&pipeline.config, &lake, &store).await?;
        }
        report
    };
    print!("{}", report.summary());
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
