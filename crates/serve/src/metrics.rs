//! The serving layer's metrics: requests answered, the speed view and the batch view it
//! serves, written at each scrape.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use brewline_metrics::{self as m, Collector, Families};
use prometheus_client::encoding::DescriptorEncoder;

use crate::live::Live;

/// The serving layer's figures of one [`Live`] view.
pub struct ServingCollector(pub Arc<Live>);

impl fmt::Debug for ServingCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServingCollector")
    }
}

impl Collector for ServingCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let live = &self.0;
        let mut f = Families::new(encoder);
        let requests: Vec<(String, String, u64)> = live
            .requests
            .lock()
            .map(|r| {
                r.iter()
                    .map(|((route, status), n)| (route.clone(), status.to_string(), *n))
                    .collect()
            })
            .unwrap_or_default();
        let labels: Vec<[(&str, &str); 2]> = requests
            .iter()
            .map(|(route, status, _)| [("route", route.as_str()), ("status", status.as_str())])
            .collect();
        let samples: Vec<(&[(&str, &str)], u64)> = labels
            .iter()
            .zip(&requests)
            .map(|(l, (_, _, n))| (&l[..], *n))
            .collect();
        f.counter(&m::SERVE_REQUESTS, &samples)?;
        f.counter_value(&m::SERVE_SPEED_EVENTS, live.events.load(Ordering::Relaxed))?;
        f.gauge_value(&m::SERVE_LIVE_CLIENTS, live.live_clients() as f64)?;
        let figures = live.read(|f| {
            (
                f.speed.orders_read(),
                f.speed.unresolved_count(),
                f.lag,
                f.watermark().cloned(),
                f.speed.dropped(),
            )
        });
        if let Some((orders, unresolved, lag, watermark, dropped)) = figures {
            f.gauge_value(&m::SERVE_SPEED_ORDERS, orders as f64)?;
            f.gauge_value(&m::SERVE_SPEED_DROPPED, dropped as f64)?;
            f.gauge_value(&m::SERVE_UNRESOLVED_ORDERS, unresolved as f64)?;
            f.gauge_value(&m::SERVE_SPEED_LAG, lag as f64)?;
            if let Some(w) = watermark {
                if let Some(through) = w.through_ms {
                    f.gauge_value(&m::BATCH_WATERMARK, through as f64 / 1e3)?;
                }
                f.gauge_value(&m::BATCH_LAST_SUCCESS, w.published_ms as f64 / 1e3)?;
            }
        }
        if let Ok(Some(passed)) = live.last_run_passed.lock().map(|p| *p) {
            f.gauge_value(&m::BATCH_LAST_RUN_PASSED, if passed { 1.0 } else { 0.0 })?;
        }
        Ok(())
    }
}
