//! `brewline recommend`: the recommender service on Kafka and Redis.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use brewline_core::suggestion::{AffinityStrategy, Suggester};
use brewline_kafka::{KafkaConfig, KafkaConsumer, KafkaProducer, TransactionsMode};
use brewline_ports::Subscription;
use brewline_redis::{RedisCounters, RedisLookups, RedisOrders};
use brewline_speed::recommender::{Engines, Recommender};
use brewline_speed::stats::Stats;

use crate::args::RecommendArgs;
use crate::config::Config;
use crate::{metrics_server, shutdown};

/// The transactional id of a worker: stable across restarts with an instance id (a restarted
/// worker aborts what it left open at once), else unique to the process.
fn transactional_id(config: &Config, worker: usize) -> String {
    let group = &config.recommender.group;
    match &config.recommender.instance_id {
        Some(id) => format!("{group}-{id}-{worker}"),
        None => format!(
            "{group}-{}-{}-{worker}",
            std::process::id(),
            brewline_ports::now_us()
        ),
    }
}

/// Writes in transactions as `kafka.transactions` says: on, off, or where the cluster allows.
async fn use_transactions(
    consumer: &mut KafkaConsumer,
    kafka: &KafkaConfig,
    id: &str,
) -> anyhow::Result<()> {
    match kafka.transactions {
        TransactionsMode::Off => return Ok(()),
        TransactionsMode::On => consumer
            .use_transactions(kafka, id)
            .await
            .context("kafka.transactions is \"on\"")?,
        TransactionsMode::Auto => {
            if let Err(e) = consumer.use_transactions(kafka, id).await {
                tracing::warn!(error = %e, "no Kafka transactions: suggestions are sent at least once (a kill may repeat some); set kafka.transactions = \"on\" to require them, \"off\" to not try");
                return Ok(());
            }
        }
    }
    tracing::info!(
        transactional_id = id,
        "suggestions and offsets written in Kafka transactions"
    );
    Ok(())
}

pub async fn run(mut config: Config, args: RecommendArgs) -> anyhow::Result<ExitCode> {
    args.engines.apply(&mut config);
    if let Some(group) = args.group {
        config.recommender.group = group;
    }
    if let Some(seed) = args.seed {
        config.recommender.seed = seed;
    }
    if let Some(id) = args.instance_id {
        config.recommender.instance_id = Some(id);
    }
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    let stats = Arc::new(Stats::default());
    metrics_server::start(args.metrics.metrics_addr, stats.clone()).await?;
    let ttl = Duration::from_secs(config.recommender.order_ttl_secs);
    let orders = RedisOrders::connect(&config.redis, ttl)
        .await
        .context("connecting to the dynamic Redis")?;
    let lookups = RedisLookups::connect(&config.redis)
        .await
        .context("connecting to the static Redis")?;
    let counters = RedisCounters::connect(&config.redis)
        .await
        .context("connecting to the dynamic Redis")?;
    let producer = KafkaProducer::new(&config.kafka)?;
    let (stop, stopped) = shutdown::on_signal();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.workers {
        let (config, stats, stop) = (config.clone(), stats.clone(), stopped.clone());
        let (orders, lookups, counters, producer) = (
            orders.clone(),
            lookups.clone(),
            counters.clone(),
            producer.clone(),
        );
        workers.spawn(async move {
            let t = &config.topics;
            let mut kafka = config.kafka.clone();
            if let Some(id) = &config.recommender.instance_id {
                kafka
                    .consumer
                    .insert("group.instance.id".into(), format!("{id}-{worker}"));
            }
            let mut consumer = KafkaConsumer::new(
                &kafka,
                Subscription {
                    topics: vec![t.orders.clone(), t.order_details.clone()],
                    group: Some(config.recommender.group.clone()),
                    from: Vec::new(),
                },
            )
            .await?;
            let id = transactional_id(&config, worker);
            use_transactions(&mut consumer, &kafka, &id).await?;
            let suggester = Suggester::new(config.recommender.seed, Box::new(AffinityStrategy));
            let mut recommender = Recommender::new(config.recommender_settings(), suggester, stats);
            tracing::info!(worker, group = %config.recommender.group, "recommender worker started");
            let mut engines = Engines {
                consumer: &mut consumer,
                producer: &producer,
                orders: &orders,
                lookups: &lookups,
                counters: &counters,
            };
            recommender.run(&mut engines, stop).await?;
            tracing::info!(worker, "recommender worker stopped");
            anyhow::Ok(())
        });
    }
    let mut failed = None;
    while let Some(done) = workers.join_next().await {
        let result = done.context("a worker panicked").and_then(|r| r);
        if let Err(e) = result {
            tracing::error!(error = %format!("{e:#}"), "recommender worker failed; stopping the others");
            let _ = stop.send(true);
            failed.get_or_insert(e);
        }
    }
    drop(stop);
    match failed {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}
