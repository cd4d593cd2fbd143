//! `brewline topics create`: every topic brewline uses, with its partitions.

use std::process::ExitCode;

use anyhow::Context;
use brewline_kafka::KafkaLog;

use crate::args::TopicsArgs;
use crate::config::Config;

/// (topic, partitions) of every topic brewline reads or writes.
pub fn all(config: &Config) -> Vec<(String, i32)> {
    let t = &config.topics;
    vec![
        (t.orders.clone(), t.partitions),
        (t.order_details.clone(), t.partitions),
        (t.suggestions.clone(), t.partitions),
        (t.dead_letters.clone(), 1),
    ]
}

/// The topic-level settings brewline gives `topic` when it creates it on Kafka: the
/// dead-letter topic keeps records `topics.dead_letter_retention_days`.
pub fn settings(config: &Config, topic: &str) -> Vec<(&'static str, String)> {
    if topic == config.topics.dead_letters {
        let ms = u64::from(config.topics.dead_letter_retention_days) * 86_400_000;
        vec![("retention.ms", ms.to_string())]
    } else {
        Vec::new()
    }
}

/// Creates `topic` on Kafka, with its settings, unless it exists.
pub async fn create_one(
    log: &KafkaLog,
    config: &Config,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    log.create_topic_with(topic, partitions, &settings(config, topic))
        .await
        .with_context(|| format!("creating topic {topic}"))
}

pub async fn create(mut config: Config, args: TopicsArgs) -> anyhow::Result<ExitCode> {
    args.kafka.apply(&mut config);
    let log = KafkaLog::new(config.kafka.clone());
    for (topic, partitions) in all(&config) {
        create_one(&log, &config, &topic, partitions).await?;
        println!("{topic}: {partitions} partition(s)");
    }
    Ok(ExitCode::SUCCESS)
}
