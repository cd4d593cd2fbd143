//! `brewline demo`: the whole speed layer on the embedded engines, with a summary.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use brewline_ports::{EventLog, Subscription};
use brewline_speed::stats::Stats;
use brewline_speed::StopWhen;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::args::DemoArgs;
use crate::config::Config;
use crate::embedded::EmbeddedPipeline;

fn bar(multi: &MultiProgress, len: u64, prefix: &'static str) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {pos:>7}/{len:7} {per_sec:>10} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let b = multi.add(ProgressBar::new(len));
    b.set_style(style);
    b.set_prefix(prefix);
    b
}

pub async fn run(config: Config, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.resolve(&config);
    let schemas = args.schemas.unwrap_or(config.capture.schemas);
    let pipeline = EmbeddedPipeline::open(config, &data_dir)?;
    crate::metrics_server::start(args.metrics.metrics_addr, pipeline.stats.clone()).await?;
    pipeline.prepare().await?;
    let before = pipeline.totals().await?;

    let (_stop, shutdown) = crate::shutdown::signalled();
    let (tills_done, tills_done_rx) = watch::channel(false);
    let (capture_done, capture_done_rx) = watch::channel(false);
    let multi = MultiProgress::new();
    let tills_bar = bar(&multi, args.orders, "tills");
    let orders_bar = bar(
        &multi,
        args.orders + before.orders - before.completed,
        "completed",
    );

    let capture = pipeline.capture(schemas);
    let started = Instant::now();
    let stats = pipeline.stats.clone();
    let ticker = {
        let stats = stats.clone();
        let orders_bar = orders_bar.clone();
        tokio::spawn(async move {
            loop {
                orders_bar.set_position(Stats::get(&stats.completed));
                orders_bar.set_message(format!(
                    "{} line events, {} suggestions",
                    Stats::get(&stats.line_events),
                    Stats::get(&stats.suggestions)
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let tills = async {
        let r = pipeline
            .write_orders(
                args.seed,
                args.orders,
                args.rate,
                args.eligible_share,
                &shutdown,
                |n| tills_bar.set_position(n),
            )
            .await;
        let _ = tills_done.send(true);
        tills_bar.finish();
        r
    };
    let capturing = async {
        let stop = StopWhen {
            drained: tills_done_rx,
            shutdown: shutdown.clone(),
        };
        let r = pipeline.run_capture(&capture, stop).await;
        let _ = capture_done.send(true);
        r
    };
    let recommending = async {
        let stop = StopWhen {
            drained: capture_done_rx,
            shutdown: shutdown.clone(),
        };
        let r = pipeline.run_recommender(args.seed, stop).await;
        r.map(|()| started.elapsed())
    };
    let result = tokio::try_join!(tills, capturing, recommending);
    ticker.abort();
    orders_bar.set_position(Stats::get(&stats.completed));
    orders_bar.finish();
    let ((), (), elapsed) = result?;

    let totals = pipeline.totals().await?;
    let latency = stats.latency();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let line_events = Stats::get(&stats.line_events);
    let all_events = line_events + Stats::get(&stats.order_events);
    let ms = |us: u64| us as f64 / 1000.0;
    println!("brewline demo: data dir {}", data_dir.display());
    println!(
        "  orders                    {:>10}  (+{} this run)",
        totals.orders,
        totals.orders - before.orders
    );
    println!("  order lines               {:>10}", totals.order_lines);
    println!("  change events             {:>10}", totals.change_events);
    println!("  complete orders           {:>10}", totals.completed);
    println!("  eligible orders           {:>10}", totals.eligible);
    println!("  suggestions               {:>10}", totals.suggestions);
    println!("  dead-lettered events      {:>10}", totals.dead_letters);
    println!(
        "  expired incomplete orders {:>10}",
        totals.expired_incomplete
    );
    let pace = args.rate.map_or("as fast as they can".to_string(), |r| {
        format!("at {r} orders/s")
    });
    println!("this run ({secs:.2} s; tills {pace}, capture and recommender running together):");
    println!(
        "  line events/s             {:>10.0}  ({line_events} line events)",
        line_events as f64 / secs
    );
    println!(
        "  change events/s           {:>10.0}  ({all_events} events)",
        all_events as f64 / secs
    );
    println!(
        "  commit -> suggestion      p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} suggestions)",
        ms(latency.p50_us),
        ms(latency.p99_us),
        ms(latency.max_us),
        latency.count
    );
    if totals.suggestion_records != totals.suggestions {
        println!(
            "  note: {} suggestion records for {} suggestions: identical repeats after a crash",
            totals.suggestion_records, totals.suggestions
        );
    }
    if *shutdown.borrow() {
        println!("interrupted: run the same command again to continue where this run stopped");
        return Ok(ExitCode::from(130));
    }

    // The batch layer over what the speed layer saw, and its marts.
    let lake = crate::batch::lake(&pipeline.config, &data_dir);
    let report = crate::batch::run_embedded(&pipeline, &lake).await?;
    print!("{}", report.summary());
    if !report.passed() {
        return Ok(ExitCode::from(2));
    }
    print_mart(&lake, "mart/revenue_daily", 5).await?;
    print_mart(&lake, "mart/payment_mix", 12).await?;
    print_mart(&lake, "mart/suggestions_daily", 5).await?;
    if let Some(addr) = args.serve {
        keep_serving(&pipeline, &lake, addr, &args, shutdown).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `demo --serve`: the pipeline goes on — tills, capture, recommender, customers taking
/// suggestions, a batch run every `--batch-every` — while the API and the dashboard serve
/// its figures, until Ctrl-C.
async fn keep_serving(
    pipeline: &EmbeddedPipeline,
    lake: &brewline_batch::Lake,
    addr: std::net::SocketAddr,
    args: &DemoArgs,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Nothing drains: every part runs until the signal.
    let (_never, running) = watch::channel(false);
    let until_signal = || StopWhen {
        drained: running.clone(),
        shutdown: shutdown.clone(),
    };
    let capture = pipeline.capture(args.schemas.unwrap_or(pipeline.config.capture.schemas));
    let tills = async {
        pipeline
            .write_orders(
                args.seed,
                args.serve_orders.unwrap_or(u64::MAX),
                Some(args.serve_rate),
                args.eligible_share,
                &shutdown,
                |_| {},
            )
            .await
    };
    let capturing = pipeline.run_capture(&capture, until_signal());
    let recommending = pipeline.run_recommender(args.seed, until_signal());
    let accepting = async {
        let mut consumer = pipeline
            .dir
            .log
            .consumer(Subscription {
                topics: vec![pipeline.config.topics.suggestions.clone()],
                group: Some(pipeline.config.accept.group.clone()),
                from: Vec::new(),
            })
            .await?;
        let producer = pipeline.dir.log.producer()?;
        brewline_speed::accept::run(
            &pipeline.config.accept_settings(args.accept_share),
            brewline_speed::accept::Acceptance {
                consumer: consumer.as_mut(),
                producer: producer.as_ref(),
                source: &pipeline.dir.source,
                stats: &pipeline.stats,
            },
            shutdown.clone(),
        )
        .await
        .map_err(anyhow::Error::from)
    };
    let batches = async {
        let mut shutdown = shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(args.batch_every) => {}
                _ = shutdown.changed() => return anyhow::Ok(()),
            }
            // A failed run is reported; the pipeline and the serving go on.
            match crate::batch::run_embedded(pipeline, lake).await {
                Ok(report) if report.passed() => {
                    tracing::info!(run = %report.run_id, "batch run published");
                }
                Ok(report) => print!("{}", report.summary()),
                Err(e) => tracing::error!(error = format!("{e:#}"), "batch run failed"),
            }
        }
    };
    let sources = brewline_serve::live::TailSources {
        log: &pipeline.dir.log,
        source: &pipeline.dir.source,
        lake,
        history: None,
    };
    let serving = crate::serve::serve_until(
        &pipeline.config,
        addr,
        sources,
        pipeline.stats.clone(),
        shutdown.clone(),
    );
    println!(
        "the tills go on at {} orders/s; a batch run every {:?}; Ctrl-C stops",
        args.serve_rate, args.batch_every
    );
    tokio::try_join!(
        async { tills.await.map(|_| ()) },
        capturing,
        recommending,
        accepting,
        batches,
        serving
    )?;
    Ok(())
}

/// The first `limit` rows of a mart as a table.
async fn print_mart(lake: &brewline_batch::Lake, table: &str, limit: usize) -> anyhow::Result<()> {
    let batches = lake.read(table).await?;
    let shown: Vec<_> = batches
        .iter()
        .scan(0usize, |seen, b| {
            let take = limit.saturating_sub(*seen).min(b.num_rows());
            *seen += take;
            (take > 0).then(|| b.slice(0, take))
        })
        .collect();
    println!("{table}:");
    println!(
        "{}",
        deltalake::arrow::util::pretty::pretty_format_batches(&shown)?
    );
    Ok(())
}
