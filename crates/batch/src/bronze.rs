//! Bronze: every CDC event landed once, with its topic, partition and offset, and the
//! dimension tables as extracted.
//!
//! The offsets landed are application transactions (`{topic}/{partition}` → next offset) of
//! the very commit that appends the events, so a run that crashes lands nothing and the next
//! one starts where the last commit ended: however often the job runs, no event is landed
//! twice or skipped. Events are decoded with the core's Debezium codec into typed columns next
//! to the raw JSON; one that does not decode is landed with its `error` (and never reaches
//! silver).

use std::borrow::Cow;
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

use crate::lake::Lake;
use crate::sources::Sources;
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
    /// Events deleted from the log before they were landed.
    pub gaps: Vec<Gap>,
}

/// Events of a partition deleted from the log (retention) before they were landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub topic: String,
    pub partition: i32,
    /// The next offset bronze was to land.
    pub landed_until: i64,
    /// The first offset the log still holds.
    pub earliest: i64,
}

impl Gap {
    /// The events lost.
    pub fn lost(&self) -> u64 {
        (self.earliest - self.landed_until).max(0) as u64
    }

    /// What was lost and the way on.
    pub fn describe(&self) -> String {
        format!(
            "{}[{}]: offsets {}..{} were deleted from the log (retention) before they were landed",
            self.topic, self.partition, self.landed_until, self.earliest
        )
    }
}

/// The partitions whose events after those landed (`landed`: next offset per partition) were
/// deleted: the log's first offset (`earliest`) is past them.
pub fn gaps(topic: &str, landed: &BTreeMap<i32, i64>, earliest: &[(i32, i64)]) -> Vec<Gap> {
    earliest
        .iter()
        .map(|(p, first)| Gap {
            topic: topic.to_string(),
            partition: *p,
            landed_until: landed.get(p).copied().unwrap_or(0),
            earliest: *first,
        })
        .filter(|g| g.lost() > 0)
        .collect()
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

/// A value of a row for one typed column.
enum Cell<'a> {
    Text(Option<Cow<'a, str>>),
    Int64(Option<i64>),
    Int32(Option<i32>),
    Bool(Option<bool>),
}

/// One typed column of a table's rows: its name, its type, and how a row gives its value.
struct RowColumn<T> {
    name: &'static str,
    kind: DataType,
    value: fn(&T) -> Cell<'_>,
}

/// The builder of one column.
enum Builder {
    Text(StringBuilder),
    Int64(Int64Builder),
    Int32(Int32Builder),
    Bool(BooleanBuilder),
}

impl Builder {
    fn of(kind: &DataType) -> Builder {
        match kind {
            DataType::Int64 => Builder::Int64(Int64Builder::new()),
            DataType::Int32 => Builder::Int32(Int32Builder::new()),
            DataType::Boolean => Builder::Bool(BooleanBuilder::new()),
            _ => Builder::Text(StringBuilder::new()),
        }
    }

    /// Appends a value (`None`: a null, as for a row there is not).
    fn push(&mut self, cell: Option<Cell<'_>>) {
        match (self, cell) {
            (Builder::Text(b), Some(Cell::Text(v))) => b.append_option(v),
            (Builder::Int64(b), Some(Cell::Int64(v))) => b.append_option(v),
            (Builder::Int32(b), Some(Cell::Int32(v))) => b.append_option(v),
            (Builder::Bool(b), Some(Cell::Bool(v))) => b.append_option(v),
            // No row, or (never, by the column tables below) a value of another type.
            (Builder::Text(b), _) => b.append_null(),
            (Builder::Int64(b), _) => b.append_null(),
            (Builder::Int32(b), _) => b.append_null(),
            (Builder::Bool(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// The typed columns of one table's rows, filled next to the event columns.
struct RowColumns<T: 'static> {
    columns: &'static [RowColumn<T>],
    builders: Vec<Builder>,
}

impl<T> RowColumns<T> {
    fn new(columns: &'static [RowColumn<T>]) -> RowColumns<T> {
        let builders = columns.iter().map(|c| Builder::of(&c.kind)).collect();
        RowColumns { columns, builders }
    }

    /// The row after the change (before it, for a delete); `None` for a tombstone or an event
    /// that did not decode.
    fn push(&mut self, row: Option<&T>) {
        for (column, builder) in self.columns.iter().zip(&mut self.builders) {
            builder.push(row.map(column.value));
        }
    }

    /// Each column with its field.
    fn finish(mut self) -> Vec<(Field, ArrayRef)> {
        self.columns
            .iter()
            .zip(&mut self.builders)
            .map(|(c, b)| (Field::new(c.name, c.kind.clone(), true), b.finish()))
            .collect()
    }
}

fn text(s: &str) -> Cell<'_> {
    Cell::Text(Some(Cow::Borrowed(s)))
}

/// When an order was placed, epoch milliseconds.
fn ordered_at(o: &OrderRow) -> Option<i64> {
    o.timestamp.as_ref().and_then(Moment::millis)
}

/// The typed columns of `bronze/orders_cdc`.
const ORDER_COLUMNS: &[RowColumn<OrderRow>] = &[
    RowColumn {
        name: "order_id",
        kind: DataType::Utf8,
        value: |o| text(&o.id),
    },
    RowColumn {
        name: "ordered_at_ms",
        kind: DataType::Int64,
        value: |o| Cell::Int64(ordered_at(o)),
    },
    RowColumn {
        name: "order_date",
        kind: DataType::Utf8,
        value: |o| Cell::Text(ordered_at(o).map(|ms| Cow::Owned(calendar::date_of_millis(ms)))),
    },
    RowColumn {
        name: "order_hour",
        kind: DataType::Int32,
        value: |o| Cell::Int32(ordered_at(o).map(calendar::hour_of_millis)),
    },
    RowColumn {
        name: "customer_id",
        kind: DataType::Int64,
        value: |o| Cell::Int64(o.customer_id),
    },
    RowColumn {
        name: "store_id",
        kind: DataType::Int64,
        value: |o| Cell::Int64(Some(o.store_id)),
    },
    RowColumn {
        name: "payment_method_id",
        kind: DataType::Int64,
        value: |o| Cell::Int64(Some(o.payment_method_id)),
    },
    RowColumn {
        name: "num_products",
        kind: DataType::Int64,
        value: |o| Cell::Int64(Some(o.num_products)),
    },
    RowColumn {
        name: "status",
        kind: DataType::Utf8,
        value: |o| Cell::Text(o.status.as_deref().map(Cow::Borrowed)),
    },
];

/// The typed columns of `bronze/order_details_cdc`.
const LINE_COLUMNS: &[RowColumn<OrderLineRow>] = &[
    RowColumn {
        name: "order_id",
        kind: DataType::Utf8,
        value: |l| text(&l.order_id),
    },
    RowColumn {
        name: "product_id",
        kind: DataType::Utf8,
        value: |l| text(&l.product_id),
    },
    RowColumn {
        name: "quantity",
        kind: DataType::Int64,
        value: |l| Cell::Int64(Some(l.quantity)),
    },
    RowColumn {
        name: "discount_percent",
        kind: DataType::Int64,
        value: |l| Cell::Int64(Some(l.discount_percent)),
    },
    RowColumn {
        name: "subtotal",
        kind: DataType::Int64,
        value: |l| Cell::Int64(Some(l.subtotal)),
    },
    RowColumn {
        name: "is_suggestion",
        kind: DataType::Boolean,
        value: |l| Cell::Bool(Some(l.is_suggestion)),
    },
];

/// The typed columns of `bronze/order_suggestions`.
const SUGGESTION_COLUMNS: &[RowColumn<Suggestion>] = &[
    RowColumn {
        name: "order_id",
        kind: DataType::Utf8,
        value: |s| text(&s.order_id),
    },
    RowColumn {
        name: "product_id",
        kind: DataType::Utf8,
        value: |s| text(&s.product_id),
    },
    RowColumn {
        name: "unit_price",
        kind: DataType::Int64,
        value: |s| Cell::Int64(Some(s.unit_price)),
    },
    RowColumn {
        name: "discount_percent",
        kind: DataType::Int64,
        value: |s| Cell::Int64(Some(s.discount_percent)),
    },
    RowColumn {
        name: "subtotal",
        kind: DataType::Int64,
        value: |s| Cell::Int64(Some(s.subtotal)),
    },
    RowColumn {
        name: "customer_id",
        kind: DataType::Int64,
        value: |s| Cell::Int64(s.customer_id),
    },
    RowColumn {
        name: "store_id",
        kind: DataType::Int64,
        value: |s| Cell::Int64(Some(s.store_id)),
    },
    RowColumn {
        name: "payment_method_id",
        kind: DataType::Int64,
        value: |s| Cell::Int64(Some(s.payment_method_id)),
    },
    RowColumn {
        name: "strategy",
        kind: DataType::Utf8,
        value: |s| text(&s.strategy),
    },
];

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
    mut row_columns: RowColumns<T>,
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

/// Events landed per commit: a landing's memory is bounded by this, whatever the backlog.
const CHUNK: usize = 250_000;

/// Commit metadata of a bronze write.
fn metadata(run_id: &str) -> serde_json::Map<String, serde_json::Value> {
    serde_json::Map::from_iter([
        ("brewline.run".to_string(), serde_json::json!(run_id)),
        ("brewline.step".to_string(), serde_json::json!("bronze")),
    ])
}

/// A bronze table of events of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTable {
    /// `bronze/orders_cdc`: change events of `orders`.
    Orders,
    /// `bronze/order_details_cdc`: change events of `order_details`.
    OrderLines,
    /// `bronze/order_suggestions`: the recommender's suggestions.
    Suggestions,
}

impl EventTable {
    pub const fn table(self) -> &'static str {
        match self {
            EventTable::Orders => ORDERS,
            EventTable::OrderLines => ORDER_LINES,
            EventTable::Suggestions => SUGGESTIONS,
        }
    }
}

/// Appends events of one topic to `table` in one commit, with the next offset of each
/// partition they cover as the commit's application transactions; returns how many did not
/// decode.
pub(crate) async fn append_events(
    lake: &Lake,
    table: EventTable,
    records: &[Consumed],
    run_id: &str,
) -> Result<u64> {
    let next: BTreeMap<String, i64> = brewline_ports::next_offsets(records)
        .into_iter()
        .map(|(t, p, o)| (format!("{t}/{p}"), o))
        .collect();
    let name = table.table();
    let (batch, bad) = match table {
        EventTable::Orders => events_batch(name, records, change, RowColumns::new(ORDER_COLUMNS))?,
        EventTable::OrderLines => {
            events_batch(name, records, change, RowColumns::new(LINE_COLUMNS))?
        }
        EventTable::Suggestions => events_batch(
            name,
            records,
            suggestion,
            RowColumns::new(SUGGESTION_COLUMNS),
        )?,
    };
    let table = name;
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

/// How long landing waits for a record while a topic's end is not reached before it gives up.
const STALLED: Duration = Duration::from_secs(60);

/// Lands every event of `topic` not landed yet, from the offsets the lake holds to the end of
/// the log, a commit per [`CHUNK`] events; returns (events, undecodable, gaps). Events deleted
/// before they were landed are gaps: nothing of the topic is landed then, unless
/// `accept_lost_events`, which lands from the log's earliest event.
async fn land_topic(
    log: &dyn EventLog,
    lake: &Lake,
    events_table: EventTable,
    topic: &str,
    run_id: &str,
    accept_lost_events: bool,
) -> Result<(u64, u64, Vec<Gap>)> {
    let table = events_table.table();
    let partitions = log.partitions(topic).await?;
    let apps: Vec<String> = (0..partitions).map(|p| format!("{topic}/{p}")).collect();
    let mut landed: BTreeMap<i32, i64> = (0..partitions)
        .zip(lake.transaction_versions(table, &apps).await?)
        .filter_map(|(p, next)| Some((p, next?)))
        .collect();
    let gaps = gaps(topic, &landed, &log.earliest(topic).await?);
    if !gaps.is_empty() {
        if !accept_lost_events {
            return Ok((0, 0, gaps));
        }
        for g in &gaps {
            tracing::warn!(
                lost = g.lost(),
                "{}; landing from {} (accept_lost_events)",
                g.describe(),
                g.earliest
            );
            landed.insert(g.partition, g.earliest);
        }
    }
    let from: Vec<(String, i32, i64)> = landed
        .iter()
        .map(|(p, o)| (topic.to_string(), *p, *o))
        .collect();
    let mut consumer = log
        .consumer(Subscription {
            topics: vec![topic.to_string()],
            group: None,
            from,
        })
        .await?;
    let (mut events, mut bad) = (0, 0);
    let mut pending = Vec::new();
    let mut last_record = std::time::Instant::now();
    loop {
        let batch = consumer.poll(50_000, Duration::from_millis(200)).await?;
        let done = batch.is_empty() && consumer.lag().await? == 0;
        if !batch.is_empty() {
            last_record = std::time::Instant::now();
        } else if !done && last_record.elapsed() >= STALLED {
            // What was landed stays landed (each commit carries its offsets): the next run
            // goes on from there.
            return Err(BatchError::lake(
                table,
                format!(
                    "no record of {topic} came for {} s, but its end is not reached (a partition's leader out of reach?): landing stops here; the next run lands the rest",
                    STALLED.as_secs()
                ),
            ));
        }
        // The reader starts at the landed offsets; a record before them is never landed twice.
        pending.extend(
            batch
                .into_iter()
                .filter(|r| r.offset >= landed.get(&r.partition).copied().unwrap_or(0)),
        );
        if pending.len() >= CHUNK || (done && !pending.is_empty()) {
            bad += append_events(lake, events_table, &pending, run_id).await?;
            events += pending.len() as u64;
            pending.clear();
        }
        if done {
            if events == 0 && lake.version(table).await?.is_none() {
                // Nothing to land yet: the table is made, empty, for the layers above.
                append_events(lake, events_table, &[], run_id).await?;
            }
            return Ok((events, bad, gaps));
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
        (EventTable::Orders, sources.orders_topic),
        (EventTable::OrderLines, sources.order_details_topic),
        (EventTable::Suggestions, sources.suggestions_topic),
    ] {
        let (events, bad, gaps) = land_topic(
            sources.log,
            lake,
            table,
            topic,
            run_id,
            sources.accept_lost_events,
        )
        .await?;
        landed.gaps.extend(gaps);
        landed.undecodable += bad;
        landed.events.insert(table.table().to_string(), events);
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
