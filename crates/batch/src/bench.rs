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
use crate::incremental::Mode;
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
    /// The incremental run after new orders, when asked.
    pub increment: Option<IncrementReport>,
}

/// An incremental run after a share of new orders landed.
#[derive(Debug, Clone, Serialize)]
pub struct IncrementReport {
    pub orders: u64,
    pub lines: u64,
    /// Silver and gold, incremental, gates included.
    pub seconds: f64,
    pub peak_rss_mib: Option<f64>,
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

/// The generated orders' events, landed in bronze as capture would send them, each topic's
/// offsets going on from where the last landing left them.
struct Landing<'a> {
    lake: &'a Lake,
    tills: Tills,
    run_id: String,
    topics: [Arc<str>; 2],
    /// The next offset of each partition, of orders and of lines.
    offsets: [[i64; 3]; 2],
    /// Orders made so far (the next one's number).
    orders: u64,
}

impl Landing<'_> {
    /// Lands orders until `count` orders or `max_lines` lines, placed evenly from `from_ms`
    /// to `from_ms + span_ms` (`expected` of them fill it); the lines landed, told to
    /// `progress` after each commit of up to [`ORDERS_PER_COMMIT`] orders.
    async fn orders(
        &mut self,
        (count, max_lines): (u64, u64),
        (from_ms, span_ms, expected): (i64, i64, u64),
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64> {
        let first = self.orders;
        let mut lines = 0;
        while self.orders < first + count && lines < max_lines {
            // About 1.35 lines an order.
            let for_lines = ((max_lines - lines) * 100 / 135).max(1);
            let n = ORDERS_PER_COMMIT
                .min(first + count - self.orders)
                .min(for_lines);
            let (mut order_events, mut line_events) = (Vec::new(), Vec::new());
            let made: Vec<_> = self.tills.orders(self.orders, n).collect();
            for (i, o) in made.into_iter().enumerate() {
                let position = (self.orders - first + i as u64).min(expected) as i64;
                let at = from_ms + position * span_ms / expected.max(1) as i64;
                order_events.push(self.consumed(
                    0,
                    &o.id,
                    at,
                    encode(&order_created(&o, at), None),
                ));
                for l in &o.lines {
                    let line = line_created(&o.id, l, at);
                    line_events.push(self.consumed(1, &o.id, at, encode(&line, None)));
                }
            }
            append_events(self.lake, EventTable::Orders, &order_events, &self.run_id).await?;
            append_events(
                self.lake,
                EventTable::OrderLines,
                &line_events,
                &self.run_id,
            )
            .await?;
            self.orders += n;
            lines += line_events.len() as u64;
            progress(lines);
        }
        Ok(lines)
    }

    /// An event of topic `which` (0: orders, 1: lines) at the next offset of its key's partition.
    fn consumed(&mut self, which: usize, key: &str, at: i64, value: Vec<u8>) -> Consumed {
        let partition = brewline_core::partition::partition_for_key(key.as_bytes(), 3);
        let offset = &mut self.offsets[which][partition as usize];
        *offset += 1;
        Consumed {
            topic: self.topics[which].clone(),
            partition,
            offset: *offset - 1,
            timestamp_ms: at,
            record: Record::keyed(key.to_string(), Some(value)),
        }
    }
}

fn order_created(o: &brewline_core::order::NewOrder, at: i64) -> ChangeEvent<OrderRow> {
    ChangeEvent {
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
    }
}

fn line_created(
    order_id: &str,
    l: &brewline_core::order::NewLine,
    at: i64,
) -> ChangeEvent<OrderLineRow> {
    ChangeEvent {
        op: Op::Create,
        before: None,
        after: Some(OrderLineRow {
            order_id: order_id.to_string(),
            product_id: l.product_id.clone(),
            quantity: l.quantity,
            discount_percent: 0,
            subtotal: l.subtotal,
            is_suggestion: false,
        }),
        source: source("order_details", at),
        ts_ms: Some(at),
        ts_us: None,
    }
}

/// Lands about `lines` generated order lines (and their orders) in `lake`'s bronze, then
/// builds silver and gold from them whole; then, when `increment_percent` is above 0, lands
/// that share of new orders (placed in the hour after the others) and times an incremental
/// run over them. `progress` hears of every commit (lines so far).
pub async fn bench(
    lake: &Lake,
    reference: &ReferenceData,
    lines: u64,
    seed: u64,
    increment_percent: f64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BenchReport> {
    let began = Instant::now();
    let tills = Tills::new(reference, seed).map_err(|e| crate::BatchError::lake("bench", e))?;
    let mut landing = Landing {
        lake,
        tills,
        run_id: format!("bench-{}", brewline_ports::now_ms()),
        topics: [
            "mysql.coffee_shop.orders".into(),
            "mysql.coffee_shop.order_details".into(),
        ],
        offsets: [[0; 3]; 2],
        orders: 0,
    };
    // The tills average about 1.35 lines an order: the orders' times are spread by that
    // estimate, and orders are made until the lines reach the target.
    let orders_total = (lines * 100 / 135).max(1);
    let lines_done = landing
        .orders(
            (u64::MAX, lines),
            (END_MS - SPAN_MS, SPAN_MS, orders_total),
            progress,
        )
        .await?;
    let orders_done = landing.orders;
    let run_id = landing.run_id.clone();
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
    let run = run_built_layers(lake, &[Layer::Silver, Layer::Gold], Mode::Full).await?;
    let build_seconds = began.elapsed().as_secs_f64();
    let build_peak_rss_mib = peak_rss_mib();
    let mut increment = None;
    if increment_percent > 0.0 && run.passed() {
        let count = ((orders_done as f64 * increment_percent / 100.0).round() as u64).max(1);
        let lines = landing
            .orders((count, u64::MAX), (END_MS, 3_600_000, count), &|_| {})
            .await?;
        reset_peak_rss();
        let began = Instant::now();
        let run = run_built_layers(lake, &[Layer::Silver, Layer::Gold], Mode::Incremental).await?;
        increment = Some(IncrementReport {
            orders: count,
            lines,
            seconds: began.elapsed().as_secs_f64(),
            peak_rss_mib: peak_rss_mib(),
            run,
        });
    }
    Ok(BenchReport {
        orders: orders_done,
        lines: lines_done,
        land_seconds,
        build_seconds,
        build_peak_rss_mib,
        run,
        increment,
    })
}
