//! Every metric brewline exports, by name, in one place, for every layer; and their exposition
//! in the OpenMetrics text format (which Prometheus reads) through `prometheus-client`.
//!
//! The figures live where they are counted (the speed layer's `Stats`, the serving layer's
//! view); each layer hands them over at every scrape through a [`Collector`] that writes them
//! with [`Families`]. A counter's name here is its sample's, `…_total`, as dashboards and alert
//! rules query it; its family (in `# TYPE`) is the name without `_total`, as OpenMetrics writes
//! it.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::registry::Registry;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
    /// The sample's name: a counter's ends in `_total`.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

impl Metric {
    /// The name of its family: a counter's without `_total`.
    pub fn family(&self) -> &'static str {
        match self.kind {
            Kind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            Kind::Gauge | Kind::Histogram => self.name,
        }
    }

    fn help(&self) -> &'static str {
        self.help
    }
}

/// A label value as the text format quotes it: `prometheus-client` writes label values as they
/// are, so a quote, a backslash or a line break in one would break the line.
fn escaped(pairs: Labels<'_>) -> Vec<(&str, String)> {
    pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            (*k, v)
        })
        .collect()
}

const fn counter(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        help,
        kind: Kind::Counter,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        help,
        kind: Kind::Gauge,
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
pub const CAPTURE_LAG: Metric = gauge(
    "brewline_capture_lag_seconds",
    "Seconds between the source commit of the last captured change and its capture (0 when caught up).",
);
pub const SNAPSHOT_ROWS: Metric = gauge(
    "brewline_capture_snapshot_rows",
    "Rows of the initial snapshot read so far.",
);
pub const SNAPSHOT_TOTAL: Metric = gauge(
    "brewline_capture_snapshot_rows_total_expected",
    "Rows the initial snapshot reads in all (counted when it began).",
);
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
pub const CONSUMER_LAG: Metric = gauge(
    "brewline_consumer_lag",
    "Records in the consumed topics not yet committed by this consumer.",
);
pub const OPEN_ORDERS: Metric = gauge(
    "brewline_open_orders",
    "Orders the recommender holds open: the committed offsets stay below the first event of the oldest.",
);
pub const STATE_REBUILDS: Metric = counter(
    "brewline_order_state_rebuilds_total",
    "Times the recommender found its order state lost (Redis flushed, restarted without persistence) and read the log again from the committed offsets to rebuild it.",
);
pub const TRANSACTIONS_ABORTED: Metric = counter(
    "brewline_transactions_aborted_total",
    "Kafka transactions the recommender aborted (its partitions moved to another member, the cluster failed the transaction) and made again from the committed offsets; nothing of an aborted one is visible.",
);
pub const REBALANCES: Metric = counter(
    "brewline_rebalances_total",
    "Times the recommender's partitions moved between the members of its group: it dropped the batch in hand, forgot what it knew of its partitions and read them again from the committed offsets.",
);
pub const RECOMMENDER_STAGE_SECONDS: Metric = counter(
    "brewline_recommender_stage_seconds_total",
    "Seconds the recommender spent in each stage of its batches: poll (reading records), decide (decoding, choosing suggestions), apply (the order store), send (output sent and, with transactions, committed with the offsets; it runs beside the next batch's apply), commit (offsets and counters after the send).",
);
pub const LOOKUPS_VERSION: Metric = gauge(
    "brewline_lookups_version",
    "Version of the lookups the recommender decides with (0: none yet).",
);
pub const DEGRADED: Metric = gauge(
    "brewline_degraded",
    "1 while the process runs degraded (deciding with lookups the store lost, or waiting for lookups); /healthz says why.",
);
pub const ENGINE_ERRORS: Metric = counter(
    "brewline_engine_errors_total",
    "Failed calls to an engine (kafka, redis, mysql, embedded ...), by engine.",
);
pub const ENGINE_RETRIES: Metric = counter(
    "brewline_engine_retries_total",
    "Calls to an engine tried again after a failure that a retry may mend, by engine.",
);

/// A gauge's definition.
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
pub const SERVE_SPEED_DROPPED: Metric = gauge(
    "brewline_serve_speed_dropped",
    "Changes the current speed view did not count because it holds serve.max_speed_orders orders already (its figures are partial until a batch run passes).",
);
pub const SERVE_LIVE_CLIENTS: Metric = gauge(
    "brewline_serve_live_clients",
    "Dashboards connected to the live stream (/api/live).",
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
    SERVE_SPEED_DROPPED,
    SERVE_LIVE_CLIENTS,
    BATCH_WATERMARK,
    BATCH_LAST_SUCCESS,
    BATCH_LAST_RUN_PASSED,
];

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
    LOOKUPS_VERSION,
    DEGRADED,
    OPEN_ORDERS,
    STATE_REBUILDS,
    TRANSACTIONS_ABORTED,
    REBALANCES,
    RECOMMENDER_STAGE_SECONDS,
    ENGINE_ERRORS,
    ENGINE_RETRIES,
];

/// Labels of one sample, `name = value` pairs.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// Writes the metric families of one collector.
pub struct Families<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl<'a> Families<'a> {
    pub fn new(encoder: DescriptorEncoder<'a>) -> Families<'a> {
        Families { encoder }
    }

    /// A counter, one sample per label set.
    pub fn counter(&mut self, m: &Metric, samples: &[(Labels<'_>, u64)]) -> fmt::Result {
        self.family(m, MetricType::Counter, samples, |v| ConstCounter::new(*v))
    }

    /// A counter of one sample without labels.
    pub fn counter_value(&mut self, m: &Metric, value: u64) -> fmt::Result {
        self.counter(m, &[(&[], value)])
    }

    /// A counter of fractional values (seconds), one sample per label set.
    pub fn counter_f64(&mut self, m: &Metric, samples: &[(Labels<'_>, f64)]) -> fmt::Result {
        self.family(m, MetricType::Counter, samples, |v| ConstCounter::new(*v))
    }

    /// A gauge, one sample per label set.
    pub fn gauge(&mut self, m: &Metric, samples: &[(Labels<'_>, f64)]) -> fmt::Result {
        self.family(m, MetricType::Gauge, samples, |v| ConstGauge::new(*v))
    }

    /// A family of `kind`, one sample per label set (a lone sample without labels written
    /// bare), each value made a metric by `metric`.
    fn family<V, M: EncodeMetric>(
        &mut self,
        m: &Metric,
        kind: MetricType,
        samples: &[(Labels<'_>, V)],
        metric: impl Fn(&V) -> M,
    ) -> fmt::Result {
        let mut family = self
            .encoder
            .encode_descriptor(m.family(), m.help(), None, kind)?;
        if let [(&[], value)] = samples {
            return metric(value).encode(family);
        }
        for (labels, value) in samples {
            let labels = escaped(labels);
            metric(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A gauge of one sample without labels.
    pub fn gauge_value(&mut self, m: &Metric, value: f64) -> fmt::Result {
        self.gauge(m, &[(&[], value)])
    }

    /// A histogram: the count in each bucket of `bounds` (not cumulative), all samples'
    /// count (those above the last bound included) and sum.
    pub fn histogram(
        &mut self,
        m: &Metric,
        bounds: &[f64],
        per_bucket: &[u64],
        count: u64,
        sum: f64,
    ) -> fmt::Result {
        let mut buckets: Vec<(f64, u64)> = bounds
            .iter()
            .copied()
            .zip(per_bucket.iter().copied())
            .collect();
        let within: u64 = per_bucket.iter().sum();
        buckets.push((f64::MAX, count.saturating_sub(within)));
        let mut family =
            self.encoder
                .encode_descriptor(m.family(), m.help(), None, MetricType::Histogram)?;
        family.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// The metrics of `registry` as OpenMetrics text (ending in `# EOF`).
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        // Writing to a String cannot fail; a collector's own error is said in the text.
        out = format!("# brewline: the metrics could not be rendered: {e}\n# EOF\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Sample;

    impl Collector for Sample {
        fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
            let mut f = Families::new(encoder);
            f.counter(&EVENTS_IN, &[(&[("topic", "a \"b\"")], 3)])?;
            f.counter_value(&SUGGESTIONS, 2)?;
            f.gauge_value(&CAPTURE_LAG, 0.25)?;
            f.histogram(
                &SUGGESTION_LATENCY,
                &[0.001, 0.0025, 0.05],
                &[0, 1, 1],
                3,
                0.5,
            )
        }
    }

    #[test]
    fn families_are_written_as_openmetrics() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Sample));
        let text = render(&registry);
        for line in [
            "# HELP brewline_events_in Records read, by topic.",
            "# TYPE brewline_events_in counter",
            "brewline_events_in_total{topic=\"a \\\"b\\\"\"} 3",
            "# TYPE brewline_suggestions counter",
            "brewline_suggestions_total 2",
            "# TYPE brewline_capture_lag_seconds gauge",
            "brewline_capture_lag_seconds 0.25",
            "brewline_suggestion_latency_seconds_bucket{le=\"0.001\"} 0",
            "brewline_suggestion_latency_seconds_bucket{le=\"0.0025\"} 1",
            "brewline_suggestion_latency_seconds_bucket{le=\"0.05\"} 2",
            "brewline_suggestion_latency_seconds_bucket{le=\"+Inf\"} 3",
            "brewline_suggestion_latency_seconds_sum 0.5",
            "brewline_suggestion_latency_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn names_are_unique_and_prometheus_safe() {
        let mut names: Vec<_> = ALL.iter().chain(SERVING).map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len() + SERVING.len());
        for m in ALL.iter().chain(SERVING) {
            assert!(m.name.starts_with("brewline_"));
            assert!(
                m.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert!(m.help.ends_with('.'), "{}", m.name);
        }
    }
}
