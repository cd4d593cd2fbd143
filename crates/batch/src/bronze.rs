//! Bronze: every CDC event landed once, with its topic, partition and offset, and the
//! dimension tables as extracted.
//!
//! The offsets landed are application transactions (`{topic}/{partition}` → next offset) of
//! the very commit that appends the events, so a run that crashes lands nothing and the next
//! one starts where the last commit ended: however often the job runs, no event is landed
//! twice or skipped. Events are decoded with the core's Debezium codec into typed columns next
//! to the raw JSON; one that does not decode is landed with its `error` (and never reaches
//! silver).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use brewline_core::debezium::{decode, Decoded, Moment, Op, OrderLineRow, OrderRow};
use brewline_core::{calendar, DimensionExtract, Suggestion, Versioned};
use brewline_ports::{Consumed, EventLog, Subscription};
use deltalake::arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::protocol::SaveMode;

use crate::job::Sources;
use crate::lake::Lake;
use crate::{BatchError, Result};

/// Bronze table names.
pub const ORDERS: &str = "bronze/orders_cdc";
pub const ORDER_LINES: &str = "bronze/order_details_cdc";
pub const STORES: &str = "bronze/stores";
pub const PAYMENT_METHODS: &str = "bronze/payment_method";
pub const CATEGORIES: &str = "bronze/product_category";
pub const PRODUCTS: &str = "bronze/products";
/// The suggestions the recommender made (`order_suggestions`), each record as published.
pub const SUGGESTIONS: &str = "bronze/order_suggestions";

/// The bronze tables and the names SQL refers to them by.
pub const TABLES: [(&str, &str); 7] = [
    (ORDERS, "bronze_orders"),
    (ORDER_LINES, "bronze_order_lines"),
    (SUGGESTIONS, "bronze_suggestions"),
    (STORES, "bronze_stores"),
    (PAYMENT_METHODS, "bronze_payment_method"),
    (CATEGORIES, "bronze_product_category"),
    (PRODUCTS, "bronze_products"),
];

/// What one landing did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Landed {
    /// Events appended, by table.
    pub events: BTreeMap<String, u64>,
    /// Of them, events that did not decode.
    pub undecodable: u64,
    /// Dimension rows extracted, by table.
    pub dimensions: BTreeMap<String, u64>,
}

/// Columns every CDC bronze table starts with.
fn event_fields() -> Vec<Field> {
    vec![
        Field::new("kafka_topic", DataType::Utf8, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new("record_key", DataType::Utf8, true),
        Field::new("op", DataType::Utf8, true),
        Field::new("source_ts_ms", DataType::Int64, true),
        Field::new("raw", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
    ]
}

struct EventColumns {
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    key: StringBuilder,
    op: StringBuilder,
    ts: Int64Builder,
    raw: StringBuilder,
    error: StringBuilder,
}

impl EventColumns {
    fn new() -> EventColumns {
        EventColumns {
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            key: StringBuilder::new(),
            op: StringBuilder::new(),
            ts: Int64Builder::new(),
            raw: StringBuilder::new(),
            error: StringBuilder::new(),
        }
    }

    fn push(&mut self, r: &Consumed, op: Option<&str>, ts: Option<i64>, error: Option<&str>) {
        self.topic.append_value(&*r.topic);
        self.partition.append_value(r.partition);
        self.offset.append_value(r.offset);
        self.key
            .append_option(r.record.key.as_deref().map(String::from_utf8_lossy));
        self.op.append_option(op);
        self.ts.append_option(ts);
        self.raw
            .append_option(r.record.value.as_deref().map(String::from_utf8_lossy));
        self.error.append_option(error);
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.op.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.raw.finish()),
            Arc::new(self.error.finish()),
        ]
    }
}

/// The typed columns of one table's rows, filled next to the event columns.
trait RowColumns<T> {
    /// The row after the change (before it, for a delete); `None` for a tombstone or an event
    /// that did not decode.
    fn push(&mut self, row: Option<&T>);
    /// Each column with its field.
    fn finish(self) -> Vec<(Field, ArrayRef)>;
}

/// What one event holds: its op (`c`, `u`, `d`, `r`, `tombstone`; none for a plain record),
/// when it happened, and its row.
struct Event<T> {
    op: Option<&'static str>,
    ts_ms: Option<i64>,
    row: Option<T>,
}

/// Events of one table as a bronze batch: the event columns, then the row's (as `read` makes
/// them of each record); and how many did not read.
fn events_batch<T>(
    table: &str,
    records: &[Consumed],
    read: impl Fn(&Consumed) -> std::result::Result<Event<T>, String>,
    mut row_columns: impl RowColumns<T>,
) -> Result<(RecordBatch, u64)> {
    let mut ev = EventColumns::new();
    let mut bad = 0;
    for r in records {
        match read(r) {
            Ok(e) => {
                ev.push(r, e.op, e.ts_ms, None);
                row_columns.push(e.row.as_ref());
            }
            Err(err) => {
                bad += 1;
                ev.push(r, None, None, Some(&err));
                row_columns.push(None);
            }
        }
    }
    let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = event_fields()
        .into_iter()
        .zip(ev.finish())
        .chain(row_columns.finish())
        .unzip();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| BatchError::lake(table, e))?;
    Ok((batch, bad))
}

/// A Debezium change event: the row after the change (before it, for a delete).
fn change<T: serde::de::DeserializeOwned>(r: &Consumed) -> std::result::Result<Event<T>, String> {
    match decode::<T>(r.record.value.as_deref()) {
        Ok(Decoded::Change(e)) => Ok(Event {
            op: Some(e.op.code()),
            ts_ms: Some(e.source.ts_ms),
            row: if e.op == Op::Delete {
                e.before
            } else {
                e.after
            },
        }),
        Ok(Decoded::Tombstone) => Ok(Event {
            op: Some("tombstone"),
            ts_ms: None,
            row: None,
        }),
        Err(err) => Err(err.to_string()),
    }
}

/// A suggestion as the recommender published it (JSON), at the record's time.
fn suggestion(r: &Consumed) -> std::result::Result<Event<Suggestion>, String> {
    let value = r
        .record
        .value
        .as_deref()
        .ok_or_else(|| "a suggestion record without a value".to_string())?;
    let s: Suggestion = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    Ok(Event {
        op: None,
        ts_ms: Some(r.timestamp_ms),
        row: Some(s),
    })
}

#[derive(Default)]
struct SuggestionColumns {
    order: StringBuilder,
    product: StringBuilder,
    unit_price: Int64Builder,
    discount: Int64Builder,
    subtotal: Int64Builder,
    customer: Int64Builder,
    store: Int64Builder,
    payment: Int64Builder,
    strategy: StringBuilder,
}

impl RowColumns<Suggestion> for SuggestionColumns {
    fn push(&mut self, row: Option<&Suggestion>) {
        self.order.append_option(row.map(|s| s.order_id.as_str()));
        self.product
            .append_option(row.map(|s| s.product_id.as_str()));
        self.unit_price.append_option(row.map(|s| s.unit_price));
        self.discount.append_option(row.map(|s| s.discount_percent));
        self.subtotal.append_option(row.map(|s| s.subtotal));
        self.customer.append_option(row.and_then(|s| s.customer_id));
        self.store.append_option(row.map(|s| s.store_id));
        self.payment.append_option(row.map(|s| s.payment_method_id));
        self.strategy
            .append_option(row.map(|s| s.strategy.as_str()));
    }

    fn finish(mut self) -> Vec<(Field, ArrayRef)> {
        let f = |name: &str, t: DataType| Field::new(name, t, true);
        vec![
            (f("order_id", DataType::Utf8), Arc::new(self.order.finish())),
            (
                f("product_id", DataType::Utf8),
                Arc::new(self.product.finish()),
            ),
            (
                f("unit_price", DataType::Int64),
                Arc::new(self.unit_price.finish()),
            ),
            (
                f("discount_percent", DataType::Int64),
                Arc::new(self.discount.finish()),
            ),
            (
                f("subtotal", DataType::Int64),
                Arc::new(self.subtotal.finish()),
            ),
            (
                f("customer_id", DataType::Int64),
                Arc::new(self.customer.finish()),
            ),
            (
                f("store_id", DataType::Int64),
                Arc::new(self.store.finish()),
            ),
            (
                f("payment_method_id", DataType::Int64),
                Arc::new(self.payment.finish()),
            ),
            (
                f("strategy", DataType::Utf8),
                Arc::new(self.strategy.finish()),
            ),
        ]
    }
}

#[derive(Default)]
struct OrderColumns {
    id: StringBuilder,
    at: Int64Builder,
    date: StringBuilder,
    hour: Int32Builder,
    customer: Int64Builder,
    store: Int64Builder,
    payment: Int64Builder,
    products: Int64Builder,
    status: StringBuilder,
}

impl RowColumns<OrderRow> for OrderColumns {
    fn push(&mut self, row: Option<&OrderRow>) {
        let ms = row
            .and_then(|o| o.timestamp.as_ref())
            .and_then(Moment::millis);
        self.id.append_option(row.map(|o| o.id.as_str()));
        self.at.append_option(ms);
        self.date.append_option(ms.map(calendar::date_of_millis));
        self.hour.append_option(ms.map(calendar::hour_of_millis));
        self.customer.append_option(row.and_then(|o| o.customer_id));
        self.store.append_option(row.map(|o| o.store_id));
        self.payment.append_option(row.map(|o| o.payment_method_id));
        self.products.append_option(row.map(|o| o.num_products));
        self.status
            .append_option(row.and_then(|o| o.status.as_deref()));
    }

    fn finish(mut self) -> Vec<(Field, ArrayRef)> {
        let f = |name: &str, t: DataType| Field::new(name, t, true);
        vec![
            (f("order_id", DataType::Utf8), Arc::new(self.id.finish())),
            (
                f("ordered_at_ms", DataType::Int64),
                Arc::new(self.at.finish()),
            ),
            (
                f("order_date", DataType::Utf8),
                Arc::new(self.date.finish()),
            ),
            (
                f("order_hour", DataType::Int32),
                Arc::new(self.hour.finish()),
            ),
            (
                f("customer_id", DataType::Int64),
                Arc::new(self.customer.finish()),
            ),
            (
                f("store_id", DataType::Int64),
                Arc::new(self.store.finish()),
            ),
            (
                f("payment_method_id", DataType::Int64),
                Arc::new(self.payment.finish()),
            ),
            (
                f("num_products", DataType::Int64),
                Arc::new(self.products.finish()),
            ),
            (f("status", DataType::Utf8), Arc::new(self.status.finish())),
        ]
    }
}

#[derive(Default)]
struct LineColumns {
    order: StringBuilder,
    product: StringBuilder,
    quantity: Int64Builder,
    discount: Int64Builder,
    subtotal: Int64Builder,
    suggested: BooleanBuilder,
}

impl RowColumns<OrderLineRow> for LineColumns {
    fn push(&mut self, row: Option<&OrderLineRow>) {
        self.order.append_option(row.map(|l| l.order_id.as_str()));
        self.product
            .append_option(row.map(|l| l.product_id.as_str()));
        self.quantity.append_option(row.map(|l| l.quantity));
        self.discount.append_option(row.map(|l| l.discount_percent));
        self.subtotal.append_option(row.map(|l| l.subtotal));
        self.suggested.append_option(row.map(|l| l.is_suggestion));
    }

    fn finish(mut self) -> Vec<(Field, ArrayRef)> {
        let f = |name: &str, t: DataType| Field::new(name, t, true);
        vec![
            (f("order_id", DataType::Utf8), Arc::new(self.order.finish())),
            (
                f("product_id", DataType::Utf8),
                Arc::new(self.product.finish()),
            ),
            (
                f("quantity", DataType::Int64),
                Arc::new(self.quantity.finish()),
            ),
            (
                f("discount_percent", DataType::Int64),
                Arc::new(self.discount.finish()),
            ),
            (
                f("subtotal", DataType::Int64),
                Arc::new(self.subtotal.finish()),
            ),
            (
                f("is_suggestion", DataType::Boolean),
                Arc::new(self.suggested.finish()),
            ),
        ]
    }
}

/// Events landed per commit: a landing's memory is bounded by this, whatever the backlog.
const CHUNK: usize = 250_000;

/// Commit metadata of a bronze write.
fn metadata(run_id: &str) -> serde_json::Map<String, serde_json::Value> {
    serde_json::Map::from_iter([
        ("brewline.run".to_string(), serde_json::json!(run_id)),
        ("brewline.step".to_string(), serde_json::json!("bronze")),
    ])
}

/// Appends CDC events of one topic to `table` in one commit, with the next offset of each
/// partition they cover as the commit's application transactions; returns how many did not
/// decode.
pub(crate) async fn append_events(
    lake: &Lake,
    table: &str,
    records: &[Consumed],
    run_id: &str,
) -> Result<u64> {
    let next: BTreeMap<String, i64> = brewline_ports::next_offsets(records)
        .into_iter()
        .map(|(t, p, o)| (format!("{t}/{p}"), o))
        .collect();
    let (batch, bad) = match table {
        ORDERS => events_batch(table, records, change, OrderColumns::default())?,
        ORDER_LINES => events_batch(table, records, change, LineColumns::default())?,
        _ => events_batch(table, records, suggestion, SuggestionColumns::default())?,
    };
    lake.write(
        table,
        vec![batch],
        SaveMode::Append,
        &next,
        metadata(run_id),
    )
    .await?;
    Ok(bad)
}

/// Lands every event of `topic` not landed yet, from the offsets the lake holds to the end of
/// the log, a commit per [`CHUNK`] events; returns (events, undecodable).
async fn land_topic(
    log: &dyn EventLog,
    lake: &Lake,
    table: &str,
    topic: &str,
    run_id: &str,
) -> Result<(u64, u64)> {
    let partitions = log.partitions(topic).await?;
    let apps: Vec<String> = (0..partitions).map(|p| format!("{topic}/{p}")).collect();
    let from: Vec<(String, i32, i64)> = (0..partitions)
        .zip(lake.transaction_versions(table, &apps).await?)
        .filter_map(|(p, next)| Some((topic.to_string(), p, next?)))
        .collect();
    let landed: BTreeMap<i32, i64> = from.iter().map(|(_, p, o)| (*p, *o)).collect();
    let mut consumer = log
        .consumer(Subscription {
            topics: vec![topic.to_string()],
            group: None,
            from,
        })
        .await?;
    let (mut events, mut bad) = (0, 0);
    let mut pending = Vec::new();
    loop {
        let batch = consumer.poll(50_000, Duration::from_millis(200)).await?;
        let done = batch.is_empty() && consumer.lag().await? == 0;
        // The reader starts at the landed offsets; a record before them is never landed twice.
        pending.extend(
            batch
                .into_iter()
                .filter(|r| r.offset >= landed.get(&r.partition).copied().unwrap_or(0)),
        );
        if pending.len() >= CHUNK || (done && !pending.is_empty()) {
            bad += append_events(lake, table, &pending, run_id).await?;
            events += pending.len() as u64;
            pending.clear();
        }
        if done {
            if events == 0 && lake.version(table).await?.is_none() {
                // Nothing to land yet: the table is made, empty, for the layers above.
                append_events(lake, table, &[], run_id).await?;
            }
            return Ok((events, bad));
        }
    }
}

/// Appends the dimension tables as extracted now; returns the rows per table.
pub(crate) async fn append_dimensions(
    lake: &Lake,
    dimensions: &DimensionExtract,
    run_id: &str,
) -> Result<BTreeMap<String, u64>> {
    let mut rows = BTreeMap::new();
    for (table, batch) in dimension_batches(dimensions, brewline_ports::now_ms())? {
        rows.insert(table.to_string(), batch.num_rows() as u64);
        lake.write(
            table,
            vec![batch],
            SaveMode::Append,
            &BTreeMap::new(),
            metadata(run_id),
        )
        .await?;
    }
    Ok(rows)
}

/// Lands the CDC topics' new events and extracts the dimensions.
pub async fn land(sources: &Sources<'_>, lake: &Lake, run_id: &str) -> Result<Landed> {
    let mut landed = Landed::default();
    for (table, topic) in [
        (ORDERS, sources.orders_topic),
        (ORDER_LINES, sources.order_details_topic),
        (SUGGESTIONS, sources.suggestions_topic),
    ] {
        let (events, bad) = land_topic(sources.log, lake, table, topic, run_id).await?;
        landed.undecodable += bad;
        landed.events.insert(table.to_string(), events);
    }
    let dimensions = sources.source.extract_dimensions().await?;
    landed.dimensions = append_dimensions(lake, &dimensions, run_id).await?;
    Ok(landed)
}

/// The dimension tables as extracted now: each row with its source `updated_at` (epoch ms,
/// and as UTC text) and stamped with `extracted_at_ms`.
fn dimension_batches(
    d: &DimensionExtract,
    extracted_at: i64,
) -> Result<Vec<(&'static str, RecordBatch)>> {
    use deltalake::arrow::array::{Int64Array, StringArray};
    /// The id and attribute columns of a table, then `updated_at_ms`, `updated_at` and
    /// `extracted_at_ms`.
    fn batch<T>(
        table: &str,
        rows: &[Versioned<T>],
        extracted_at: i64,
        columns: Vec<(Field, ArrayRef)>,
    ) -> Result<RecordBatch> {
        let stamps: Vec<i64> = rows.iter().map(|v| v.updated_at_ms).collect();
        let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns
            .into_iter()
            .chain([
                (
                    Field::new("updated_at_ms", DataType::Int64, false),
                    Arc::new(Int64Array::from(stamps.clone())) as ArrayRef,
                ),
                (
                    Field::new("updated_at", DataType::Utf8, false),
                    Arc::new(StringArray::from_iter_values(
                        stamps.iter().map(|ms| calendar::datetime_of_millis(*ms)),
                    )),
                ),
                (
                    Field::new("extracted_at_ms", DataType::Int64, false),
                    Arc::new(Int64Array::from(vec![extracted_at; rows.len()])),
                ),
            ])
            .unzip();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| BatchError::lake(table, e))
    }
    fn int<T>(name: &str, rows: &[Versioned<T>], f: impl Fn(&T) -> i64) -> (Field, ArrayRef) {
        (
            Field::new(name, DataType::Int64, false),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|v| f(&v.row)))),
        )
    }
    fn text<T>(
        name: &str,
        rows: &[Versioned<T>],
        f: impl Fn(&T) -> Option<&str>,
    ) -> (Field, ArrayRef) {
        (
            Field::new(name, DataType::Utf8, true),
            Arc::new(StringArray::from_iter(rows.iter().map(|v| f(&v.row)))),
        )
    }
    let stores = &d.stores;
    let payments = &d.payment_methods;
    let categories = &d.categories;
    let products = &d.products;
    Ok(vec![
        (
            STORES,
            batch(
                STORES,
                stores,
                extracted_at,
                vec![
                    int("id", stores, |s| s.id),
                    text("name", stores, |s| Some(&s.name)),
                    text("address", stores, |s| Some(&s.address)),
                    text("district", stores, |s| Some(&s.district)),
                    text("city", stores, |s| Some(&s.city)),
                ],
            )?,
        ),
        (
            PAYMENT_METHODS,
            batch(
                PAYMENT_METHODS,
                payments,
                extracted_at,
                vec![
                    int("id", payments, |p| p.id),
                    text("method_name", payments, |p| Some(&p.method_name)),
                    text("bank", payments, |p| p.bank.as_deref()),
                ],
            )?,
        ),
        (
            CATEGORIES,
            batch(
                CATEGORIES,
                categories,
                extracted_at,
                vec![
                    int("id", categories, |c| c.id),
                    text("name", categories, |c| Some(&c.name)),
                ],
            )?,
        ),
        (
            PRODUCTS,
            batch(
                PRODUCTS,
                products,
                extracted_at,
                vec![
                    text("id", products, |p| Some(&p.id)),
                    text("name", products, |p| Some(&p.name)),
                    int("category_id", products, |p| p.category_id),
                    int("unit_price", products, |p| p.unit_price),
                ],
            )?,
        ),
    ])
}
