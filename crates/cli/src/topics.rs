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
        (t.capture_positions.clone(), 1),
    ]
}

/// The topic-level settings brewline gives `topic` when it creates it on Kafka: the capture's
/// positions are compacted (the last per capture is kept for ever), in segments of 10 minutes
/// so that compaction keeps what a starting capture reads short; the dead-letter topic keeps
/// records `topics.dead_letter_retention_days`, every other topic `topics.retention_days`.
pub fn settings(config: &Config, topic: &str) -> Vec<(&'static str, String)> {
    let t = &config.topics;
    let days = if topic == t.capture_positions {
        return vec![
            ("cleanup.policy", "compact".into()),
            ("segment.ms", "600000".into()),
        ];
    } else if topic == t.dead_letters {
        t.dead_letter_retention_days
    } else {
        t.retention_days
    };
    let ms = u64::from(days) * 86_400_000;
    vec![("retention.ms", ms.to_string())]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_gets_its_retention_and_the_positions_are_compacted() {
        let config = Config::default();
        let t = &config.topics;
        let week = vec![("retention.ms", (7 * 86_400_000u64).to_string())];
        for topic in [&t.orders, &t.order_details, &t.suggestions] {
            assert_eq!(settings(&config, topic), week, "{topic}");
        }
        assert_eq!(
            settings(&config, &t.dead_letters),
            vec![("retention.ms", (14 * 86_400_000u64).to_string())]
        );
        let positions = settings(&config, &t.capture_positions);
        assert!(positions.contains(&("cleanup.policy", "compact".to_string())));
        assert!(!positions.iter().any(|(k, _)| *k == "retention.ms"));
        let names: Vec<String> = all(&config).into_iter().map(|(t, _)| t).collect();
        assert!(names.contains(&t.capture_positions), "{names:?}");
    }
}
