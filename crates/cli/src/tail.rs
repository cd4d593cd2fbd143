//! `brewline tail`: a topic's records as JSON lines.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use brewline_embedded::EmbeddedLog;
use brewline_ports::{Consumed, EventLog, Subscription};
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

pub async fn run(config: Config, args: TailArgs) -> anyhow::Result<ExitCode> {
    let dir = args.data_dir.data_dir.unwrap_or(config.embedded.data_dir);
    let path = dir.join("log.sqlite");
    anyhow::ensure!(
        path.is_file(),
        "no embedded log in {} (run `brewline demo --data-dir {}` first, or pass the right --data-dir)",
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
    let mut consumer = log
        .consumer(Subscription {
            topics: vec![args.topic.clone()],
            group: None,
        })
        .await?;
    let max = args.max.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    while printed < max {
        let batch = consumer.poll(4096, Duration::from_millis(100)).await?;
        if batch.is_empty() && consumer.lag().await? == 0 {
            break;
        }
        for r in batch.iter().take((max - printed) as usize) {
            serde_json::to_writer(&mut out, &record_json(r))?;
            out.write_all(b"\n").context("writing to stdout")?;
            printed += 1;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
