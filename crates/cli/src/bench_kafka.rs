//! `brewline bench --brokers ...`: the recommender on Kafka and Redis against the broker's own
//! limit and against the original pipeline's way of working, on the same broker, Redis and
//! events, in one run:
//!
//! - (c) a raw rdkafka consume of the CDC topics, with the recommender's consumer settings:
//!   the most any consumer gets from this broker;
//! - (a) `brewline recommend` (`--workers`, 1 by default) as its own process (its peak RSS is
//!   read from /proc);
//! - (b) the baseline `bench/original_consumer.py` (kafka-python, redis-py, one Redis round
//!   trip per command), when `--baseline PYTHON` names an interpreter that has them.
//!
//! Each is timed from its first record to its last, after the events are all in the topics.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use brewline_core::suggestion::Lookups;
use brewline_core::ReferenceData;
use brewline_kafka::{KafkaConsumer, KafkaLog, KafkaProducer, TransactionsMode};
use brewline_ports::{Consumer, EventLog, LookupStore, Subscription};
use brewline_redis::RedisLookups;
use brewline_speed::stats::Stats;
use brewline_speed::StopWhen;
use tokio::sync::watch;

use crate::args::BenchArgs;
use crate::config::Config;
use crate::embedded::EmbeddedPipeline;

/// What one consumer did: records and line events read, and in how long.
struct Run {
    records: u64,
    lines: u64,
    seconds: f64,
}

/// The recommender's seconds per stage of its batches, from Prometheus text, as one line.
fn stages(metrics: &str) -> String {
    let prefix = "brewline_recommender_stage_seconds_total{stage=\"";
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| {
            let (stage, rest) = l.split_once('"')?;
            let seconds: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            Some(format!("{stage} {seconds:.2} s"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Run {
    fn lines_per_second(&self) -> f64 {
        self.lines as f64 / self.seconds.max(1e-9)
    }
}

/// A child process that is killed when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The sum of a labelled counter over the topics in `topics`, from Prometheus text.
fn events_in(metrics: &str, topics: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("brewline_events_in_total{"))
        .filter(|l| topics.iter().any(|t| l.contains(&format!("topic=\"{t}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// GET over a plain connection (HTTP/1.0).
async fn get(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// The peak resident memory of a process so far, MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// The lookups of `reference` published to the configured static Redis.
pub async fn publish_lookups(config: &Config, reference: &ReferenceData) -> anyhow::Result<()> {
    RedisLookups::connect(&config.redis)
        .await
        .context("connecting to the static Redis")?
        .publish(&Lookups::from_reference(
            reference,
            &config.recommender.eligible_bank,
        ))
        .await?;
    Ok(())
}

/// Runs `brewline recommend` as its own process with `config` (its group suffixed with
/// `name`) until it has read `total` records: its run and its peak RSS.
async fn recommend(
    config: &Config,
    work: &tempfile::TempDir,
    args: &BenchArgs,
    topics: &[&str],
    total: u64,
    lines: u64,
    name: &str,
) -> anyhow::Result<(Run, Option<f64>)> {
    let mut config = config.clone();
    config.recommender.group = format!("{}-{name}", config.recommender.group);
    let config_file = work.path().join(format!("bench-{name}.toml"));
    std::fs::write(&config_file, toml::to_string(&config)?)?;
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.to_string()
    };
    let exe = std::env::current_exe()?;
    let child = Command::new(&exe)
        .arg("--config")
        .arg(&config_file)
        .args(["recommend", "--metrics-addr", &metrics_addr])
        .args(["--workers", &args.workers.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .context("starting `brewline recommend`")?;
    // Killed if this run fails before stopping it.
    let mut child = KillOnDrop(child);
    let (mut first, mut seen, mut last) = (None, 0, String::new());
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(body) = get(&metrics_addr, "/metrics").await {
            seen = events_in(&body, topics);
            last = body;
            if seen > 0 {
                first.get_or_insert_with(Instant::now);
            }
        }
    }
    let run = Run {
        records: seen,
        lines: lines.min(seen),
        seconds: first.map_or(0.0, |f| f.elapsed().as_secs_f64()),
    };
    let rss = peak_rss_mib(child.0.id());
    println!("  recommender ({name}) stages: {}", stages(&last));
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let _ = child.0.wait();
    anyhow::ensure!(
        seen >= total,
        "the recommender ({name}) read {seen} of {total} records in 600 s"
    );
    Ok((run, rss))
}

pub async fn run(mut config: Config, args: BenchArgs, brokers: String) -> anyhow::Result<ExitCode> {
    config.kafka.brokers = brokers;
    args.redis.apply(&mut config);
    let prefix = format!("bench{}", brewline_ports::now_us());
    let t = &mut config.topics;
    t.orders = format!("{prefix}.coffee_shop.orders");
    t.order_details = format!("{prefix}.coffee_shop.order_details");
    t.suggestions = format!("{prefix}.suggestions");
    t.dead_letters = format!("{prefix}.dlq");
    config.capture.topic_prefix = prefix.clone();
    config.recommender.group = format!("{prefix}-recs");
    let log = KafkaLog::new(config.kafka.clone());
    for (topic, partitions) in crate::topics::all(&config) {
        log.create_topic(&topic, partitions).await?;
    }
    publish_lookups(&config, &ReferenceData::bundled()?).await?;

    // The events: the tills' orders, captured as Debezium events into the CDC topics.
    let work = tempfile::tempdir()?;
    let pipeline = EmbeddedPipeline::open(config.clone(), work.path())?;
    pipeline.prepare().await?;
    let (_never, shutdown) = watch::channel(false);
    pipeline
        .write_orders(args.seed, args.orders, None, None, &shutdown, |_| {})
        .await?;
    let capture = pipeline.capture(args.schemas);
    let producer = KafkaProducer::new(&config.kafka)?;
    let (_done, drained) = watch::channel(true);
    let began = Instant::now();
    pipeline
        .run_capture_into(&capture, &producer, StopWhen { drained, shutdown })
        .await?;
    let stats: &Stats = &pipeline.stats;
    let total = stats.events_out.get(&config.topics.orders)
        + stats.events_out.get(&config.topics.order_details);
    let lines = pipeline.totals().await?.order_lines;
    println!(
        "brewline bench on {}: {} orders, {lines} lines, {total} CDC records (schemas {}), produced in {:.1} s",
        config.kafka.brokers,
        args.orders,
        if args.schemas { "on" } else { "off" },
        began.elapsed().as_secs_f64()
    );
    let topics = [
        config.topics.orders.as_str(),
        config.topics.order_details.as_str(),
    ];

    // (c) The broker's limit.
    let mut raw_consumer = KafkaConsumer::new(
        &config.kafka,
        Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            group: Some(format!("{prefix}-raw")),
            from: Vec::new(),
        },
    )
    .await?;
    let (mut read, mut read_lines, mut first) = (0u64, 0u64, None);
    while read < total {
        let batch = raw_consumer
            .poll(config.recommender.batch, Duration::from_millis(100))
            .await?;
        if !batch.is_empty() {
            first.get_or_insert_with(Instant::now);
        }
        read += batch.len() as u64;
        read_lines += batch
            .iter()
            .filter(|r| &*r.topic == topics[1] && r.record.value.is_some())
            .count() as u64;
    }
    let raw = Run {
        records: read,
        lines: read_lines,
        seconds: first.map_or(0.0, |f| f.elapsed().as_secs_f64()),
    };
    drop(raw_consumer);

    // (a) brewline recommend, as its own process: in Kafka transactions (the default), then
    // without, each as a group of its own reading everything.
    let (recommender, rss) = recommend(&config, &work, &args, &topics, total, lines, "txn").await?;
    let mut plain = config.clone();
    plain.kafka.transactions = TransactionsMode::Off;
    let (without, _) = recommend(&plain, &work, &args, &topics, total, lines, "plain").await?;

    // (b) The baseline.
    let baseline = match &args.baseline {
        None => None,
        Some(python) => {
            let script = args
                .baseline_script
                .clone()
                .unwrap_or_else(|| "bench/original_consumer.py".into());
            let fetch_wait = config
                .kafka
                .consumer
                .get("fetch.wait.max.ms")
                .cloned()
                .unwrap_or_else(|| "500".into());
            let out = Command::new(python)
                .arg(&script)
                .args(["--brokers", &config.kafka.brokers])
                .args(["--redis-static", &config.redis.static_url])
                .args(["--redis-dynamic", &config.redis.dynamic_url])
                .args([
                    "--orders-topic",
                    topics[0],
                    "--order-details-topic",
                    topics[1],
                ])
                .args(["--suggestions-topic", &config.topics.suggestions])
                .args(["--group", &format!("{prefix}-baseline")])
                .args([
                    "--expect",
                    &total.to_string(),
                    "--fetch-wait-ms",
                    &fetch_wait,
                ])
                .output()
                .with_context(|| format!("running the baseline {}", script.display()))?;
            anyhow::ensure!(
                out.status.success(),
                "the baseline failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let figures: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            Some(Run {
                records: figures["records"].as_u64().unwrap_or(0),
                lines: figures["line_events"].as_u64().unwrap_or(0),
                seconds: figures["seconds"].as_f64().unwrap_or(0.0),
            })
        }
    };

    let row = |name: &str, r: &Run| {
        println!(
            "  {name:<34} {:>9} records {:>8} lines {:>8.2} s {:>10.0} line events/s",
            r.records,
            r.lines,
            r.seconds,
            r.lines_per_second()
        )
    };
    row("(c) raw rdkafka consume", &raw);
    let name = format!("(a) brewline recommend, {} worker(s)", args.workers);
    row(&name, &recommender);
    row("(a') the same without transactions", &without);
    if let Some(b) = &baseline {
        row("(b) baseline (original, Python)", b);
    }
    println!(
        "  (a)/(c) = {:.1} %",
        100.0 * recommender.lines_per_second() / raw.lines_per_second().max(1e-9)
    );
    println!(
        "  (a)/(a') = {:.1} % (the cost of Kafka transactions)",
        100.0 * recommender.lines_per_second() / without.lines_per_second().max(1e-9)
    );
    if let Some(b) = &baseline {
        println!(
            "  (a)/(b) = {:.1} x",
            recommender.lines_per_second() / b.lines_per_second().max(1e-9)
        );
    }
    if let Some(rss) = rss {
        println!("  recommender peak RSS {rss:.1} MiB");
    }
    Ok(ExitCode::SUCCESS)
}
