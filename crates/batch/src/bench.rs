//! `brewline batch bench`: the batch layer over a large generated history. The tills'
//! generator makes the orders (spread over 30 days); they are encoded as the Debezium events
//! capture would send and landed in bronze through the same code as a real landing, then
//! silver and gold are built and timed alone, with the process's peak memory over that part.

use std::sync::Arc;
use std::time::Instant;

use brewline_core::debezium::{encode, ChangeEvent, Moment, Op, OrderLineRow, OrderRow, Source};
use brewline_core::generator::Tills;
use brewline_core::{DimensionExtract, ReferenceData, Versioned};
use brewline_ports::{Consumed, Record};
use serde::Serialize;

use crate::bronze::{append_dimensions, append_events, EventTable};
use crate::job::{run_built_layers, Layer, RunReport};
use crate::lake::Lake;
use crate::Result;

/// What a benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub orders: u64,
    pub lines: u64,
    /// Generating, encoding and landing the events in bronze.
    pub land_seconds: f64,
    /// Bronze → silver → gold, gates included.
    pub build_seconds: f64,
    /// Peak resident memory of the process while building (MiB; `None` where Linux's
    /// /proc does not tell).
    pub build_peak_rss_mib: Option<f64>,
    pub run: RunReport,
}

/// Orders (with their lines) per bronze commit.
const ORDERS_PER_COMMIT: u64 = 100_000;
/// The 30 days the orders are spread over end here: 2026-11-01T00:00:00Z.
const END_MS: i64 = 1_793_491_200_000;
const SPAN_MS: i64 = 30 * 86_400_000;

fn source(table: &str, ts_ms: i64) -> Source {
    Source {
        connector: "mysql".into(),
        name: "mysql".into(),
        db: "coffee_shop".into(),
        table: Some(table.into()),
        ts_ms,
        ..Source::default()
    }
}

/// Peak resident memory so far, MiB (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Starts the peak over again (Linux 4.0+: writing 5 to clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Lands about `lines` generated order lines (and their orders) in `lake`'s bronze, then
/// builds silver and gold from them; `progress` hears of every commit (lines so far).
pub async fn bench(
    lake: &Lake,
    reference: &ReferenceData,
    lines: u64,
    seed: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BenchReport> {
    let began = Instant::now();
    let run_id = format!("bench-{}", brewline_ports::now_ms());
    let tills = Tills::new(reference, seed).map_err(|e| crate::BatchError::lake("bench", e))?;
    // The tills average about 1.35 lines an order: the orders' times are spread by that
    // estimate, and orders are made until the lines reach the target.
    let orders_total = (lines * 100 / 135).max(1);
    let (orders_topic, lines_topic): (Arc<str>, Arc<str>) = (
        "mysql.coffee_shop.orders".into(),
        "mysql.coffee_shop.order_details".into(),
    );
    let mut offsets = [[0i64; 3]; 2];
    let (mut orders_done, mut lines_done) = (0u64, 0u64);
    let mut start = 0;
    while lines_done < lines {
        let n = ORDERS_PER_COMMIT.min(((lines - lines_done) * 100 / 135).max(1));
        let (mut order_events, mut line_events) = (Vec::new(), Vec::new());
        for (i, o) in tills.orders(start, n).enumerate() {
            let position = (start + i as u64).min(orders_total) as i64;
            let at = END_MS - SPAN_MS + position * SPAN_MS / orders_total as i64;
            let partition = brewline_core::partition::partition_for_key(o.id.as_bytes(), 3);
            let mut consumed = |topic: &Arc<str>, which: usize, value: Vec<u8>| {
                let offset = offsets[which][partition as usize];
                offsets[which][partition as usize] += 1;
                Consumed {
                    topic: topic.clone(),
                    partition,
                    offset,
                    timestamp_ms: at,
                    record: Record::keyed(o.id.clone(), Some(value)),
                }
            };
            let order = ChangeEvent {
                op: Op::Create,
                before: None,
                after: Some(OrderRow {
                    id: o.id.clone(),
                    timestamp: Some(Moment::Millis(at)),
                    customer_id: Some(o.customer_id),
                    store_id: o.store_id,
                    payment_method_id: o.payment_method_id,
                    num_products: o.num_products(),
                    status: None,
                }),
                source: source("orders", at),
                ts_ms: Some(at),
                ts_us: None,
            };
            order_events.push(consumed(&orders_topic, 0, encode(&order, None)));
            for l in &o.lines {
                let line = ChangeEvent {
                    op: Op::Create,
                    before: None,
                    after: Some(OrderLineRow {
                        order_id: o.id.clone(),
                        product_id: l.product_id.clone(),
                        quantity: l.quantity,
                        discount_percent: 0,
                        subtotal: l.subtotal,
                        is_suggestion: false,
                    }),
                    source: source("order_details", at),
                    ts_ms: Some(at),
                    ts_us: None,
                };
                line_events.push(consumed(&lines_topic, 1, encode(&line, None)));
            }
        }
        append_events(lake, EventTable::Orders, &order_events, &run_id).await?;
        append_events(lake, EventTable::OrderLines, &line_events, &run_id).await?;
        orders_done += order_events.len() as u64;
        lines_done += line_events.len() as u64;
        progress(lines_done);
        start += n;
    }
    // Every dimension row as it was the day before the first order.
    fn versioned<T: Clone>(rows: &[T]) -> Vec<Versioned<T>> {
        rows.iter()
            .map(|row| Versioned {
                row: row.clone(),
                updated_at_ms: END_MS - SPAN_MS - 86_400_000,
            })
            .collect()
    }
    let dimensions = DimensionExtract {
        stores: versioned(&reference.stores),
        payment_methods: versioned(&reference.payment_methods),
        categories: versioned(&reference.categories),
        products: versioned(&reference.products),
    };
    append_events(lake, EventTable::Suggestions, &[], &run_id).await?;
    append_dimensions(lake, &dimensions, &run_id).await?;
    let land_seconds = began.elapsed().as_secs_f64();

    reset_peak_rss();
    let began = Instant::now();
    let run = run_built_layers(lake, &[Layer::Silver, Layer::Gold]).await?;
    Ok(BenchReport {
        orders: orders_done,
        lines: lines_done,
        land_seconds,
        build_seconds: began.elapsed().as_secs_f64(),
        build_peak_rss_mib: peak_rss_mib(),
        run,
    })
}
