//! `brewline dlq`: the dead-letter topic, inspected and replayed.
//!
//! What is handled is kept as the committed offsets of the consumer group
//! [`HANDLED_GROUP`]: `replay` and `purge` move them forward, `list` and `replay` start from
//! them. The records themselves stay until the topic's retention drops them.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use brewline_embedded::EmbeddedLog;
use brewline_kafka::KafkaLog;
use brewline_ports::{Consumed, Consumer, EventLog, Record, Subscription};
use brewline_speed::dead_letter::{
    OFFSET_HEADER, PARTITION_HEADER, REASON_HEADER, SOURCE_HEADER, TOPIC_HEADER, TRUNCATED_HEADER,
};

use crate::args::{DlqAction, DlqLogArgs};
use crate::config::Config;

/// The consumer group whose committed offsets mark the dead letters handled.
pub const HANDLED_GROUP: &str = "brewline-dlq";

/// Header a replayed record carries: the dead letter it came from, `topic:partition:offset`.
pub const REPLAYED_HEADER: &str = "brewline.replayed.from";

pub async fn run(mut config: Config, action: DlqAction) -> anyhow::Result<ExitCode> {
    match action {
        DlqAction::List { log, all } => {
            let dlq = DeadLetters::open(&mut config, &log).await?;
            let (letters, _) = dlq.read((!all).then_some(HANDLED_GROUP)).await?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for r in &letters {
                writeln!(out, "{}", describe(r)).context("writing to stdout")?;
            }
            out.flush()?;
            eprintln!("{} dead letter(s) in {}", letters.len(), dlq.topic);
        }
        DlqAction::Show {
            log,
            offset,
            partition,
        } => {
            let dlq = DeadLetters::open(&mut config, &log).await?;
            let r = dlq.one(partition, offset).await?;
            println!("{}", crate::tail::record_json(&r));
        }
        DlqAction::Replay {
            log,
            offsets,
            dry_run,
        } => {
            let dlq = DeadLetters::open(&mut config, &log).await?;
            dlq.replay(&offsets, dry_run).await?;
        }
        DlqAction::Purge(log) => {
            let dlq = DeadLetters::open(&mut config, &log).await?;
            let (letters, mut reader) = dlq.read(Some(HANDLED_GROUP)).await?;
            mark_handled(reader.as_mut(), &letters).await?;
            println!(
                "{} dead letter(s) marked handled in {}",
                letters.len(),
                dlq.topic
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The value of header `name`, as text.
fn header(r: &Consumed, name: &str) -> Option<String> {
    r.record
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// One line about a dead letter: `partition:offset`, where it came from, its size, why.
fn describe(r: &Consumed) -> String {
    let from = match (
        header(r, TOPIC_HEADER),
        header(r, PARTITION_HEADER),
        header(r, OFFSET_HEADER),
        header(r, SOURCE_HEADER),
    ) {
        (Some(t), Some(p), Some(o), _) => format!("{t}[{p}]@{o}"),
        (Some(t), _, _, Some(source)) => format!("{t} (source {source})"),
        (Some(t), _, _, None) => t,
        _ => "?".into(),
    };
    let bytes = r.record.value.as_ref().map_or(0, Vec::len);
    let size = match header(r, TRUNCATED_HEADER) {
        Some(original) => format!("{bytes} of {original} bytes, cut short"),
        None => format!("{bytes} bytes"),
    };
    let reason = header(r, REASON_HEADER).unwrap_or_else(|| "no reason given".into());
    format!("{}:{}\t{from}\t{size}\t{reason}", r.partition, r.offset)
}

/// The dead-letter topic of one log.
struct DeadLetters {
    log: Box<dyn EventLog>,
    topic: String,
    /// How long a read waits for more once nothing comes (the embedded log knows its end).
    idle: Duration,
}

impl DeadLetters {
    async fn open(config: &mut Config, args: &DlqLogArgs) -> anyhow::Result<DeadLetters> {
        let topic = config.topics.dead_letters.clone();
        if let Some(brokers) = &args.brokers {
            config.kafka.brokers = brokers.clone();
        }
        let log: Box<dyn EventLog> = if args.brokers.is_some() || args.servers {
            Box::new(KafkaLog::new(config.kafka.clone()))
        } else {
            let dir = args.data_dir.resolve(config);
            let path = dir.join("log.sqlite");
            anyhow::ensure!(
                path.is_file(),
                "no embedded log in {} (pass the right --data-dir, or read Kafka with --brokers or --servers)",
                dir.display()
            );
            Box::new(EmbeddedLog::open(&path)?)
        };
        log.partitions(&topic).await.with_context(|| {
            format!("no dead-letter topic {topic} (topics.dead_letters) in this log")
        })?;
        let idle = if args.brokers.is_some() || args.servers {
            Duration::from_millis(args.idle_ms)
        } else {
            Duration::ZERO
        };
        Ok(DeadLetters { log, topic, idle })
    }

    /// Every dead letter: after those `group` marked handled, or (`None`) from the beginning;
    /// and the reader, to mark them handled with ([`mark_handled`]).
    async fn read(
        &self,
        group: Option<&str>,
    ) -> anyhow::Result<(Vec<Consumed>, Box<dyn Consumer>)> {
        let mut consumer = self
            .log
            .consumer(Subscription {
                topics: vec![self.topic.clone()],
                group: group.map(str::to_string),
                from: Vec::new(),
            })
            .await?;
        let mut out = Vec::new();
        let mut last = Instant::now();
        loop {
            let batch = consumer.poll(4096, Duration::from_millis(100)).await?;
            if batch.is_empty() {
                if last.elapsed() >= self.idle && consumer.lag().await? == 0 {
                    return Ok((out, consumer));
                }
                continue;
            }
            last = Instant::now();
            out.extend(batch);
        }
    }

    /// The dead letter at `partition`/`offset`.
    async fn one(&self, partition: i32, offset: i64) -> anyhow::Result<Consumed> {
        let mut consumer = self
            .log
            .consumer(Subscription {
                topics: vec![self.topic.clone()],
                group: None,
                from: vec![(self.topic.clone(), partition, offset)],
            })
            .await?;
        let deadline = Instant::now() + self.idle.max(Duration::from_secs(1));
        loop {
            let batch = consumer.poll(64, Duration::from_millis(100)).await?;
            if let Some(r) = batch
                .into_iter()
                .find(|r| r.partition == partition && r.offset == offset)
            {
                return Ok(r);
            }
            if Instant::now() >= deadline && consumer.lag().await? == 0 {
                anyhow::bail!(
                    "no dead letter at offset {offset} of partition {partition} of {} (see `brewline dlq list --all`)",
                    self.topic
                );
            }
        }
    }

    /// Sends the dead letters not yet handled (only `offsets`, if any are given) back into
    /// their topics; with all of them, marks them handled.
    async fn replay(&self, offsets: &[i64], dry_run: bool) -> anyhow::Result<()> {
        let (letters, mut reader) = self.read(Some(HANDLED_GROUP)).await?;
        let chosen: Vec<&Consumed> = letters
            .iter()
            .filter(|r| offsets.is_empty() || offsets.contains(&r.offset))
            .collect();
        if let Some(missing) = offsets
            .iter()
            .find(|o| !chosen.iter().any(|r| r.offset == **o))
        {
            anyhow::bail!(
                "no dead letter not yet handled at offset {missing} of {} (see `brewline dlq list`)",
                self.topic
            );
        }
        let mut per_topic: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        let mut skipped = 0;
        for r in &chosen {
            let why_not = if header(r, TRUNCATED_HEADER).is_some() {
                Some("its value was cut short")
            } else if header(r, PARTITION_HEADER).is_none() {
                // Refused by the log on the way in: it was never in a topic to go back to.
                Some("the log refused it on the way in, so it was never read from a topic")
            } else {
                None
            };
            let topic = header(r, TOPIC_HEADER);
            match (why_not, topic) {
                (None, Some(topic)) => per_topic.entry(topic).or_default().push(Record {
                    key: r.record.key.clone(),
                    value: r.record.value.clone(),
                    headers: vec![(
                        REPLAYED_HEADER.into(),
                        format!("{}:{}:{}", self.topic, r.partition, r.offset).into_bytes(),
                    )],
                }),
                (why, _) => {
                    skipped += 1;
                    eprintln!(
                        "skipped {}:{}: {}",
                        r.partition,
                        r.offset,
                        why.unwrap_or("it does not say which topic it was read from")
                    );
                }
            }
        }
        let producer = self.log.producer()?;
        for (topic, records) in &per_topic {
            println!(
                "{}{} record(s) to {topic}",
                if dry_run { "would send " } else { "" },
                records.len()
            );
            if !dry_run {
                producer
                    .send(topic, records.clone())
                    .await
                    .with_context(|| format!("replaying into {topic}"))?;
            }
        }
        if dry_run {
            return Ok(());
        }
        if offsets.is_empty() && skipped == 0 {
            mark_handled(reader.as_mut(), &letters).await?;
            println!(
                "{} dead letter(s) replayed and marked handled",
                letters.len()
            );
        } else {
            println!(
                "{} dead letter(s) replayed; none marked handled (some were chosen or skipped): `brewline dlq purge` marks them all",
                chosen.len() - skipped
            );
        }
        Ok(())
    }
}

/// Marks `letters` handled: commits, through the member of [`HANDLED_GROUP`] that read them,
/// the offset after the last of them in each partition.
async fn mark_handled(reader: &mut dyn Consumer, letters: &[Consumed]) -> anyhow::Result<()> {
    if letters.is_empty() {
        return Ok(());
    }
    reader
        .commit(&brewline_ports::next_offsets(letters))
        .await?;
    Ok(())
}
