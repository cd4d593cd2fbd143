//! The speed layer's figures as metrics: a [`Collector`] of one process's [`Stats`] and engine
//! failures, written at each scrape by `brewline-metrics` (where every metric is defined).

use std::fmt;
use std::sync::Arc;

use brewline_metrics::{self as m, Collector, Families, Registry};
use prometheus_client::encoding::DescriptorEncoder;

use crate::stats::{Stats, LATENCY_BUCKETS_SECONDS};

/// The figures of a process's [`Stats`], and its engine failures.
#[derive(Debug)]
pub struct StatsCollector(pub Arc<Stats>);

impl Collector for StatsCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let stats = &self.0;
        let mut f = Families::new(encoder);
        let by =
            |label: &'static str, values: &[(String, u64)]| -> Vec<(Vec<(&str, String)>, u64)> {
                values
                    .iter()
                    .map(|(v, n)| (vec![(label, v.clone())], *n))
                    .collect()
            };
        labeled(
            &mut f,
            &m::EVENTS_IN,
            &by("topic", &stats.events_in.snapshot()),
        )?;
        labeled(
            &mut f,
            &m::EVENTS_OUT,
            &by("topic", &stats.events_out.snapshot()),
        )?;
        f.counter_value(&m::DEAD_LETTERS, Stats::get(&stats.dead_letters))?;
        let rows: Vec<(Vec<(&str, String)>, u64)> = stats
            .captured_rows
            .snapshot()
            .into_iter()
            .map(|(table, op, n)| (vec![("table", table), ("op", op.to_string())], n))
            .collect();
        labeled(&mut f, &m::ROWS_CAPTURED, &rows)?;
        f.gauge_value(
            &m::CAPTURE_LAG,
            Stats::get(&stats.capture_lag_ms) as f64 / 1e3,
        )?;
        f.gauge_value(&m::SNAPSHOT_ROWS, Stats::get(&stats.snapshot_rows) as f64)?;
        f.gauge_value(&m::SNAPSHOT_TOTAL, Stats::get(&stats.snapshot_total) as f64)?;
        for (metric, value) in [
            (&m::ORDERS_WRITTEN, &stats.orders_written),
            (&m::SUGGESTIONS_ACCEPTED, &stats.suggestions_accepted),
            (&m::LOOKUP_LOADS, &stats.lookup_loads),
            (&m::ORDERS_COMPLETED, &stats.completed),
            (&m::ORDERS_ELIGIBLE, &stats.eligible),
            (&m::ORDERS_EXPIRED_INCOMPLETE, &stats.expired_incomplete),
            (&m::SUGGESTIONS, &stats.suggestions),
            (&m::SUGGESTIONS_REPLAYED, &stats.replayed),
        ] {
            f.counter_value(metric, Stats::get(value))?;
        }
        let (per_bucket, count, sum_us) = stats.latency_buckets();
        f.histogram(
            &m::SUGGESTION_LATENCY,
            &LATENCY_BUCKETS_SECONDS,
            &per_bucket,
            count,
            sum_us as f64 / 1e6,
        )?;
        f.gauge_value(&m::CONSUMER_LAG, Stats::get(&stats.consumer_lag) as f64)?;
        f.gauge_value(&m::OPEN_ORDERS, Stats::get(&stats.open_orders) as f64)?;
        f.counter_value(&m::STATE_REBUILDS, Stats::get(&stats.state_rebuilds))?;
        f.counter_value(
            &m::TRANSACTIONS_ABORTED,
            Stats::get(&stats.transactions_aborted),
        )?;
        f.counter_value(&m::REBALANCES, Stats::get(&stats.rebalances))?;
        let stages = stats.stage_nanos.seconds();
        let stages: Vec<([(&str, &str); 1], f64)> = stages
            .iter()
            .map(|(stage, seconds)| ([("stage", *stage)], *seconds))
            .collect();
        let stages: Vec<(&[(&str, &str)], f64)> =
            stages.iter().map(|(l, v)| (l.as_slice(), *v)).collect();
        f.counter_f64(&m::RECOMMENDER_STAGE_SECONDS, &stages)?;
        f.gauge_value(
            &m::LOOKUPS_VERSION,
            Stats::get(&stats.lookups_version) as f64,
        )?;
        f.gauge_value(
            &m::DEGRADED,
            f64::from(u8::from(stats.degraded().is_some())),
        )?;
        let failures = crate::engine_failures();
        let errors: Vec<(String, u64)> = failures
            .iter()
            .map(|(e, f)| (e.to_string(), f.errors))
            .collect();
        let retries: Vec<(String, u64)> = failures
            .iter()
            .map(|(e, f)| (e.to_string(), f.retries))
            .collect();
        labeled(&mut f, &m::ENGINE_ERRORS, &by("engine", &errors))?;
        labeled(&mut f, &m::ENGINE_RETRIES, &by("engine", &retries))
    }
}

/// A counter with one sample per label set.
fn labeled(
    f: &mut Families<'_>,
    metric: &m::Metric,
    samples: &[(Vec<(&str, String)>, u64)],
) -> fmt::Result {
    let pairs: Vec<Vec<(&str, &str)>> = samples
        .iter()
        .map(|(labels, _)| labels.iter().map(|(k, v)| (*k, v.as_str())).collect())
        .collect();
    let samples: Vec<(&[(&str, &str)], u64)> = pairs
        .iter()
        .zip(samples)
        .map(|(labels, (_, n))| (labels.as_slice(), *n))
        .collect();
    f.counter(metric, &samples)
}

/// A registry of the speed layer's metrics of `stats`.
pub fn registry(stats: Arc<Stats>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatsCollector(stats)));
    registry
}

/// The speed layer's metrics of `stats` as OpenMetrics text.
pub fn render(stats: Arc<Stats>) -> String {
    m::render(&registry(stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_rendered_once_with_its_type() {
        let stats = Arc::new(Stats::default());
        stats.events_in.add("mysql.coffee_shop.orders", 3);
        stats.record_latency(1_500);
        stats.record_latency(40_000);
        let text = render(stats);
        for metric in m::ALL {
            assert_eq!(
                text.matches(&format!("# TYPE {} ", metric.family()))
                    .count(),
                1,
                "{}",
                metric.name
            );
        }
        assert!(text.contains("brewline_events_in_total{topic=\"mysql.coffee_shop.orders\"} 3"));
        assert!(text.contains("brewline_suggestion_latency_seconds_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("brewline_suggestion_latency_seconds_bucket{le=\"0.0025\"} 1"));
        assert!(text.contains("brewline_suggestion_latency_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("brewline_suggestion_latency_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("brewline_suggestion_latency_seconds_sum 0.0415"));
    }
}
