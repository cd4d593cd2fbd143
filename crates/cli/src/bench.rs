//! `brewline bench`: each stage of the embedded pipeline timed on its own, over the same data.
//!
//! Stages run one after the other, so each figure is that stage's own speed: the tills'
//! generation in memory, writing orders to the source, capture into the log, and the
//! recommender over the captured events.

use std::process::ExitCode;
use std::time::Instant;

use brewline_core::generator::Tills;
use brewline_core::ReferenceData;
use brewline_speed::stats::Stats;
use brewline_speed::StopWhen;
use tokio::sync::watch;

use crate::args::BenchArgs;
use crate::config::Config;
use crate::embedded::EmbeddedPipeline;

/// Flushes every file of the data dir to disk, so that a stage is not charged for the
/// write-back of the one before it.
fn settle(dir: &std::path::Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::File::open(&path)?.sync_all()?;
        }
    }
    Ok(())
}

/// CPU time this process has used (user + system), from /proc (Linux; 100 ticks a second).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name: state is the first, utime the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory, and resident memory now split into the process's own (heap, stacks)
/// and file pages mapped from the databases, from /proc (Linux), in MiB.
fn memory_mib() -> Option<(f64, f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmHWM:")?, field("RssAnon:")?, field("RssFile:")?))
}

pub async fn run(config: Config, args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let (Some(brokers), Some(mysql)) = (args.brokers.clone(), args.mysql.clone()) {
        return crate::bench_cdc::run(config, args, brokers, mysql).await;
    }
    if let Some(brokers) = args.brokers.clone() {
        return crate::bench_kafka::run(config, args, brokers).await;
    }
    let tmp;
    let dir = match &args.data_dir {
        Some(d) => {
            anyhow::ensure!(
                !d.exists() || std::fs::read_dir(d)?.next().is_none(),
                "--data-dir {} is not empty: the benchmark needs a fresh directory",
                d.display()
            );
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let pipeline = EmbeddedPipeline::open(config, &dir)?;
    pipeline.prepare().await?;
    let (_never, shutdown) = watch::channel(false);
    let (_done, drained) = watch::channel(true);
    let stop = StopWhen {
        drained,
        shutdown: shutdown.clone(),
    };
    let n = args.orders;

    let rate = |k: u64, d: std::time::Duration| k as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "brewline bench: {n} orders, schemas {}, data dir {}",
        if args.schemas { "on" } else { "off" },
        dir.display()
    );

    let reference = ReferenceData::bundled()?;
    let tills = Tills::new(&reference, args.seed)?;
    let t = Instant::now();
    let lines: usize = tills.orders(0, n).map(|o| o.lines.len()).sum();
    let generate = t.elapsed();
    println!(
        "  generate (in memory)   {:>8.3} s  {:>10.0} orders/s  ({lines} lines)",
        generate.as_secs_f64(),
        rate(n, generate)
    );

    let t = Instant::now();
    pipeline
        .write_orders(args.seed, n, None, None, &shutdown, |_| {})
        .await?;
    let write = t.elapsed();
    println!(
        "  tills -> source        {:>8.3} s  {:>10.0} orders/s",
        write.as_secs_f64(),
        rate(n, write)
    );

    let stats = pipeline.stats.clone();
    let capture = pipeline.capture(args.schemas);
    settle(&dir)?;
    let t = Instant::now();
    pipeline.run_capture(&capture, stop.clone()).await?;
    let captured = t.elapsed();
    println!(
        "  capture -> log         {:>8.3} s  {:>10.0} row events/s",
        captured.as_secs_f64(),
        rate(Stats::get(&stats.captured), captured)
    );

    settle(&dir)?;
    let t = Instant::now();
    let cpu = cpu_seconds();
    pipeline.run_recommender(args.seed, stop).await?;
    let recommend = t.elapsed();
    let cpu = cpu_seconds() - cpu;
    let line_events = Stats::get(&stats.line_events);
    let events = line_events + Stats::get(&stats.order_events);
    println!(
        "  recommender            {:>8.3} s  {:>10.0} line events/s  {:>10.0} events/s (all CDC records)",
        recommend.as_secs_f64(),
        rate(line_events, recommend),
        rate(events, recommend)
    );
    let stages: Vec<String> = stats
        .stage_nanos
        .seconds()
        .iter()
        .map(|(name, secs)| format!("{name} {secs:.3} s"))
        .collect();
    println!("  recommender stages     {}", stages.join(", "));
    println!(
        "  recommender CPU        {cpu:.2} s ({:.2} cores busy on average)",
        cpu / recommend.as_secs_f64().max(1e-9)
    );
    println!(
        "  orders completed {}, suggestions {}, dead letters {}",
        Stats::get(&stats.completed),
        Stats::get(&stats.suggestions),
        Stats::get(&stats.dead_letters)
    );
    if let Some((peak, anon, file)) = memory_mib() {
        println!(
            "  memory: peak RSS {peak:.0} MiB; now {anon:.0} MiB own + {file:.0} MiB mapped database pages"
        );
    }
    Ok(ExitCode::SUCCESS)
}
