//! `brewline topics create`: every topic brewline uses, with its partitions.

use std::process::ExitCode;

use brewline_kafka::KafkaLog;
use brewline_ports::EventLog;

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

pub async fn create(mut config: Config, args: TopicsArgs) -> anyhow::Result<ExitCode> {
    args.kafka.apply(&mut config);
    let log = KafkaLog::new(config.kafka.clone());
    for (topic, partitions) in all(&config) {
        log.create_topic(&topic, partitions).await?;
        println!("{topic}: {partitions} partition(s)");
    }
    Ok(ExitCode::SUCCESS)
}
