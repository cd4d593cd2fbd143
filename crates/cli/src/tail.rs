//! `brewline tail`: a topic's records as JSON lines.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use brewline_embedded::EmbeddedLog;
use brewline_kafka::KafkaConsumer;
use brewline_ports::{Consumed, Consumer, EventLog, Subscription};
use serde_json::{json, Value};

use crate::args::TailArgs;
use crate::config::Config;

/// A value as JSON when it is JSON, else as text; `null` for a tombstone.
fn value_json(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => serde_json::from_slice(b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned())),
    }
}

/// One record as a JSON object: topic, partition, offset, key, value (and headers, if any).
pub fn record_json(r: &Consumed) -> Value {
    let mut out = json!({
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "key": r.record.key.as_deref().map(String::from_utf8_lossy),
        "value": value_json(r.record.value.as_deref()),
    });
    if !r.record.headers.is_empty() {
        let headers: serde_json::Map<String, Value> = r
            .record
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value::String(String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect();
        out["headers"] = Value::Object(headers);
    }
    out
}

pub async fn run(mut config: Config, args: TailArgs) -> anyhow::Result<ExitCode> {
    let subscription = Subscription {
        topics: vec![args.topic.clone()],
        group: None,
        from: Vec::new(),
    };
    let (mut consumer, idle) = match &args.brokers {
        Some(brokers) => {
            config.kafka.brokers = brokers.clone();
            let consumer = KafkaConsumer::new(&config.kafka, subscription).await?;
            let boxed: Box<dyn Consumer> = Box::new(consumer);
            (boxed, Duration::from_millis(args.idle_ms))
        }
        None => {
            let dir = args.data_dir.resolve(&config);
            let path = dir.join("log.sqlite");
            anyhow::ensure!(
                path.is_file(),
                "no embedded log in {} (run `brewline demo --data-dir {}` first, pass the right --data-dir, or read Kafka with --brokers)",
                dir.display(),
                dir.display()
            );
            let log = EmbeddedLog::open(&path)?;
            let topics = log.topics().await?;
            if !topics.iter().any(|(t, _)| *t == args.topic) {
                let names: Vec<_> = topics.iter().map(|(t, _)| t.as_str()).collect();
                anyhow::bail!(
                    "no topic {:?} in {}; topics: {}",
                    args.topic,
                    dir.display(),
                    names.join(", ")
                );
            }
            // The embedded log knows its end exactly: stop there.
            (log.consumer(subscription).await?, Duration::ZERO)
        }
    };
    let max = args.max.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut last_record = Instant::now();
    while printed < max {
        let batch = consumer.poll(4096, Duration::from_millis(100)).await?;
        if batch.is_empty() {
            if last_record.elapsed() >= idle && consumer.lag().await? == 0 {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        for r in batch.iter().take((max - printed) as usize) {
            serde_json::to_writer(&mut out, &record_json(r))?;
            out.write_all(b"\n").context("writing to stdout")?;
            printed += 1;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
