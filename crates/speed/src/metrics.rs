//! Every metric brewline exports, by name, in one place; and their rendering in Prometheus'
//! text exposition format (version 0.0.4), which Prometheus and every compatible scraper read.

use std::fmt::Write;

use crate::stats::{Stats, LATENCY_BUCKETS_SECONDS};

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric's name, help text and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

const fn counter(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        help,
        kind: Kind::Counter,
    }
}

pub const EVENTS_IN: Metric = counter("brewline_events_in_total", "Records read, by topic.");
pub const EVENTS_OUT: Metric = counter(
    "brewline_events_out_total",
    "Records written and acknowledged, by topic.",
);
pub const DEAD_LETTERS: Metric = counter(
    "brewline_dead_letters_total",
    "Records sent to the dead-letter topic.",
);
pub const ROWS_CAPTURED: Metric = counter(
    "brewline_capture_rows_total",
    "Row changes captured from the source database, by table and op (c, u, d, r).",
);
pub const CAPTURE_LAG: Metric = Metric {
    name: "brewline_capture_lag_seconds",
    help: "Seconds between the source commit of the last captured change and its capture (0 when caught up).",
    kind: Kind::Gauge,
};
pub const SNAPSHOT_ROWS: Metric = Metric {
    name: "brewline_capture_snapshot_rows",
    help: "Rows of the initial snapshot read so far.",
    kind: Kind::Gauge,
};
pub const SNAPSHOT_TOTAL: Metric = Metric {
    name: "brewline_capture_snapshot_rows_total_expected",
    help: "Rows the initial snapshot reads in all (counted when it began).",
    kind: Kind::Gauge,
};
pub const ORDERS_WRITTEN: Metric = counter(
    "brewline_orders_written_total",
    "Orders the tills (`simulate`) wrote to the source database.",
);
pub const SUGGESTIONS_ACCEPTED: Metric = counter(
    "brewline_suggestions_accepted_total",
    "Accepted suggestions written back to the source database as order lines.",
);
pub const LOOKUP_LOADS: Metric = counter(
    "brewline_lookup_loads_total",
    "Loads of the lookup cache published.",
);
pub const ORDERS_COMPLETED: Metric = counter(
    "brewline_orders_completed_total",
    "Orders whose header and every line arrived (each counted once).",
);
pub const ORDERS_ELIGIBLE: Metric = counter(
    "brewline_orders_eligible_total",
    "Completed orders of a diamond customer paid with an eligible bank's method.",
);
pub const ORDERS_EXPIRED_INCOMPLETE: Metric = counter(
    "brewline_orders_expired_incomplete_total",
    "Orders whose state expired before all their lines arrived.",
);
pub const SUGGESTIONS: Metric = counter(
    "brewline_suggestions_total",
    "Suggestions made and sent (one per eligible order).",
);
pub const SUGGESTIONS_REPLAYED: Metric = counter(
    "brewline_suggestions_replayed_total",
    "Suggestions sent again, identical, because their completing event was delivered again.",
);
pub const SUGGESTION_LATENCY: Metric = Metric {
    name: "brewline_suggestion_latency_seconds",
    help:
        "From the order's commit in the source database to its suggestion acknowledged by the log.",
    kind: Kind::Histogram,
};
pub const CONSUMER_LAG: Metric = Metric {
    name: "brewline_consumer_lag",
    help: "Records in the consumed topics not yet committed by this consumer.",
    kind: Kind::Gauge,
};
pub const ENGINE_ERRORS: Metric = counter(
    "brewline_engine_errors_total",
    "Failed calls to an engine (kafka, redis, mysql, embedded ...), by engine.",
);
pub const ENGINE_RETRIES: Metric = counter(
    "brewline_engine_retries_total",
    "Calls to an engine tried again after a failure that a retry may mend, by engine.",
);

/// A gauge's definition.
const fn gauge(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        help,
        kind: Kind::Gauge,
    }
}

// The serving layer's own (`brewline serve`).
pub const SERVE_REQUESTS: Metric = counter(
    "brewline_serve_requests_total",
    "HTTP requests answered by the serving layer, by route and status.",
);
pub const SERVE_SPEED_EVENTS: Metric = counter(
    "brewline_serve_speed_events_total",
    "Change events and suggestions the serving layer folded into its speed view.",
);
pub const SERVE_SPEED_ORDERS: Metric = gauge(
    "brewline_serve_speed_orders",
    "Orders changed since the batch watermark (the speed view's orders).",
);
pub const SERVE_UNRESOLVED_ORDERS: Metric = gauge(
    "brewline_serve_unresolved_orders",
    "Orders of the speed view whose state at the watermark is still being looked up.",
);
pub const SERVE_SPEED_LAG: Metric = gauge(
    "brewline_serve_speed_lag",
    "Records of the CDC and suggestion topics the speed view has not read yet.",
);
pub const BATCH_WATERMARK: Metric = gauge(
    "brewline_batch_watermark_timestamp_seconds",
    "The latest order time in the batch view the serving layer reads (Unix seconds).",
);
pub const BATCH_LAST_SUCCESS: Metric = gauge(
    "brewline_batch_last_success_timestamp_seconds",
    "When the last batch run that published gold published it (Unix seconds).",
);
pub const BATCH_LAST_RUN_PASSED: Metric = gauge(
    "brewline_batch_last_run_passed",
    "1 when the latest batch run passed every gate, 0 when one failed.",
);

/// The serving layer's metrics, rendered by `brewline serve` beside [`ALL`].
pub const SERVING: &[Metric] = &[
    SERVE_REQUESTS,
    SERVE_SPEED_EVENTS,
    SERVE_SPEED_ORDERS,
    SERVE_UNRESOLVED_ORDERS,
    SERVE_SPEED_LAG,
    BATCH_WATERMARK,
    BATCH_LAST_SUCCESS,
    BATCH_LAST_RUN_PASSED,
];

/// Appends `m` with one value per label set (`labels`: `name="value"` pairs, already joined).
pub fn render_values(out: &mut String, m: &Metric, values: &[(String, f64)]) {
    header(out, m);
    for (labels, v) in values {
        if labels.is_empty() {
            let _ = writeln!(out, "{} {v}", m.name);
        } else {
            let _ = writeln!(out, "{}{{{labels}}} {v}", m.name);
        }
    }
}

/// `name="value"` pairs as a label set.
pub fn label_set(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every metric, in the order they are rendered.
pub const ALL: &[Metric] = &[
    EVENTS_IN,
    EVENTS_OUT,
    DEAD_LETTERS,
    ROWS_CAPTURED,
    CAPTURE_LAG,
    SNAPSHOT_ROWS,
    SNAPSHOT_TOTAL,
    ORDERS_WRITTEN,
    SUGGESTIONS_ACCEPTED,
    LOOKUP_LOADS,
    ORDERS_COMPLETED,
    ORDERS_ELIGIBLE,
    ORDERS_EXPIRED_INCOMPLETE,
    SUGGESTIONS,
    SUGGESTIONS_REPLAYED,
    SUGGESTION_LATENCY,
    CONSUMER_LAG,
    ENGINE_ERRORS,
    ENGINE_RETRIES,
];

fn header(out: &mut String, m: &Metric) {
    let kind = match m.kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    };
    let _ = writeln!(out, "# HELP {} {}", m.name, m.help);
    let _ = writeln!(out, "# TYPE {} {kind}", m.name);
}

fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn labeled(out: &mut String, m: &Metric, label: &str, values: &[(String, u64)]) {
    header(out, m);
    for (v, n) in values {
        let _ = writeln!(out, "{}{{{label}=\"{}\"}} {n}", m.name, escape(v));
    }
}

fn single(out: &mut String, m: &Metric, value: u64) {
    header(out, m);
    let _ = writeln!(out, "{} {value}", m.name);
}

/// The figures of `stats`, and the engine failures of this process, as Prometheus text.
pub fn render(stats: &Stats) -> String {
    let mut out = String::new();
    labeled(&mut out, &EVENTS_IN, "topic", &stats.events_in.snapshot());
    labeled(&mut out, &EVENTS_OUT, "topic", &stats.events_out.snapshot());
    single(&mut out, &DEAD_LETTERS, Stats::get(&stats.dead_letters));
    header(&mut out, &ROWS_CAPTURED);
    for (table, op, n) in stats.captured_rows.snapshot() {
        let _ = writeln!(
            out,
            "{}{{table=\"{}\",op=\"{op}\"}} {n}",
            ROWS_CAPTURED.name,
            escape(&table)
        );
    }
    header(&mut out, &CAPTURE_LAG);
    let lag = Stats::get(&stats.capture_lag_ms) as f64 / 1e3;
    let _ = writeln!(out, "{} {lag}", CAPTURE_LAG.name);
    single(&mut out, &SNAPSHOT_ROWS, Stats::get(&stats.snapshot_rows));
    single(&mut out, &SNAPSHOT_TOTAL, Stats::get(&stats.snapshot_total));
    single(&mut out, &ORDERS_WRITTEN, Stats::get(&stats.orders_written));
    single(
        &mut out,
        &SUGGESTIONS_ACCEPTED,
        Stats::get(&stats.suggestions_accepted),
    );
    single(&mut out, &LOOKUP_LOADS, Stats::get(&stats.lookup_loads));
    single(&mut out, &ORDERS_COMPLETED, Stats::get(&stats.completed));
    single(&mut out, &ORDERS_ELIGIBLE, Stats::get(&stats.eligible));
    single(
        &mut out,
        &ORDERS_EXPIRED_INCOMPLETE,
        Stats::get(&stats.expired_incomplete),
    );
    single(&mut out, &SUGGESTIONS, Stats::get(&stats.suggestions));
    single(&mut out, &SUGGESTIONS_REPLAYED, Stats::get(&stats.replayed));
    header(&mut out, &SUGGESTION_LATENCY);
    let (buckets, count, sum_us) = stats.latency_buckets();
    let name = SUGGESTION_LATENCY.name;
    for (bound, n) in LATENCY_BUCKETS_SECONDS.iter().zip(&buckets) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {count}");
    single(&mut out, &CONSUMER_LAG, Stats::get(&stats.consumer_lag));
    let failures = crate::engine_failures();
    let errors: Vec<(String, u64)> = failures
        .iter()
        .map(|(e, f)| (e.to_string(), f.errors))
        .collect();
    let retries: Vec<(String, u64)> = failures
        .iter()
        .map(|(e, f)| (e.to_string(), f.retries))
        .collect();
    labeled(&mut out, &ENGINE_ERRORS, "engine", &errors);
    labeled(&mut out, &ENGINE_RETRIES, "engine", &retries);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_rendered_once_with_its_type() {
        let stats = Stats::default();
        stats.events_in.add("mysql.coffee_shop.orders", 3);
        stats.record_latency(1_500);
        stats.record_latency(40_000);
        let text = render(&stats);
        for m in ALL {
            assert_eq!(
                text.matches(&format!("# TYPE {} ", m.name)).count(),
                1,
                "{}",
                m.name
            );
        }
        assert!(text.contains("brewline_events_in_total{topic=\"mysql.coffee_shop.orders\"} 3"));
        assert!(text.contains("brewline_suggestion_latency_seconds_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("brewline_suggestion_latency_seconds_bucket{le=\"0.0025\"} 1"));
        assert!(text.contains("brewline_suggestion_latency_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("brewline_suggestion_latency_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("brewline_suggestion_latency_seconds_sum 0.0415"));
    }

    #[test]
    fn names_are_unique_and_prometheus_safe() {
        let mut names: Vec<_> = ALL.iter().chain(SERVING).map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len() + SERVING.len());
        for n in names {
            assert!(n.starts_with("brewline_"));
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
        }
    }
}
