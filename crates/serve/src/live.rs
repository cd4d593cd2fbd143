//! The live figures: the last batch view, and the speed layer's increments since its watermark,
//! kept up to date by a tail of the CDC and suggestion topics.
//!
//! The tail is a reader without a consumer group that starts at the offsets the batch view's
//! bronze layer had landed, so every record after the watermark is read once per view, however
//! often the serving layer restarts (a record the capture delivered twice is recognised by
//! `brewline_core::sales`). When a new batch run is published, a new view is built from its
//! offsets, caught up to the end of the topics, and only then swapped in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use brewline_batch::bronze;
use brewline_batch::history::RunHistory;
use brewline_batch::serving::{BatchView, Watermark, MANIFEST};
use brewline_batch::Lake;
use brewline_core::debezium::{decode_with, Decoded, Op, OrderLineRow, OrderRow, SourceTime};
use brewline_core::sales::{Header, Line, SalesChange, SpeedSales, StoreCities};
use brewline_core::{ReferenceData, Suggestion};
use brewline_ports::{Consumed, Consumer, EventLog, SourceDb, Subscription};
use tokio::sync::watch;

use crate::{Result, ServeError};

/// Topics and pacing of the tail.
#[derive(Debug, Clone)]
pub struct TailSettings {
    pub orders_topic: String,
    pub order_details_topic: String,
    pub suggestions_topic: String,
    /// How often the lake is asked whether a new batch run was published.
    pub reload_every: Duration,
    /// How long an order's insert may take to arrive before its state at the watermark is
    /// looked up in the batch view.
    pub lookup_after: Duration,
    /// The most orders the speed view keeps (its memory bound while batch runs fail).
    pub max_speed_orders: usize,
}

/// A store's name and city.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreName {
    pub name: String,
    pub city: String,
}

/// Names of stores and products, from the source's reference data.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub stores: BTreeMap<i64, StoreName>,
    pub products: HashMap<String, String>,
}

impl Names {
    pub fn of(reference: &ReferenceData) -> Names {
        Names {
            stores: reference
                .stores
                .iter()
                .map(|s| {
                    (
                        s.id,
                        StoreName {
                            name: s.name.clone(),
                            city: s.city.clone(),
                        },
                    )
                })
                .collect(),
            products: reference
                .products
                .iter()
                .map(|p| (p.id.clone(), p.name.clone()))
                .collect(),
        }
    }

    fn cities(&self) -> StoreCities {
        self.stores
            .iter()
            .map(|(id, s)| (*id, s.city.clone()))
            .collect()
    }
}

/// Orders placed in each recent second (epoch seconds), by a 64-bit hash of their id (two ids
/// of one second share one about once in 10¹³ such counts): kept across batch views, so a new
/// view's replay of the same events counts nothing twice.
#[derive(Debug, Default)]
pub struct RecentOrders(BTreeMap<i64, BTreeSet<u64>>);

/// The hash [`RecentOrders`] keeps of an order's id (`DefaultHasher::new`: unkeyed, the same
/// for the same id).
fn id_hash(order_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    order_id.hash(&mut h);
    h.finish()
}

/// Seconds of orders kept: the dashboard's 30 minutes and the current one.
const RECENT_SECONDS: i64 = 31 * 60;

impl RecentOrders {
    fn placed(&mut self, order_id: &str, at_ms: i64, now_ms: i64) {
        let second = at_ms.div_euclid(1000);
        let oldest = now_ms.div_euclid(1000) - RECENT_SECONDS;
        if second < oldest {
            return;
        }
        self.0.entry(second).or_default().insert(id_hash(order_id));
        if self.0.first_key_value().is_some_and(|(s, _)| *s < oldest) {
            self.0 = self.0.split_off(&oldest);
        }
    }

    /// Orders placed in the last 60 seconds.
    pub fn last_minute(&self, now_ms: i64) -> usize {
        let now = now_ms.div_euclid(1000);
        self.0.range(now - 59..=now).map(|(_, ids)| ids.len()).sum()
    }

    /// Orders placed in each of the `minutes` minutes before the current one (oldest first),
    /// then in the current one so far (epoch minutes).
    pub fn per_minute(&self, now_ms: i64, minutes: i64) -> Vec<(i64, usize)> {
        let now = now_ms.div_euclid(60_000);
        (now - minutes..=now)
            .map(|m| {
                let in_minute: usize = self
                    .0
                    .range(m * 60..(m + 1) * 60)
                    .map(|(_, ids)| ids.len())
                    .sum();
                (m, in_minute)
            })
            .collect()
    }
}

/// What the handlers read.
pub struct Figures {
    pub batch: Arc<BatchView>,
    pub speed: SpeedSales,
    pub names: Arc<Names>,
    /// Records not read yet.
    pub lag: u64,
    /// When the figures last changed (epoch ms).
    pub updated_ms: i64,
}

impl Figures {
    pub fn watermark(&self) -> Option<&Watermark> {
        self.batch.watermark.as_ref()
    }
}

/// The serving layer's shared state.
pub struct Live {
    figures: RwLock<Option<Figures>>,
    pub recent: Mutex<RecentOrders>,
    /// Events folded, over every view.
    pub events: AtomicU64,
    /// Whether the latest batch run passed (from the run history, when there is one).
    pub last_run_passed: Mutex<Option<bool>>,
    /// Requests answered, by route and status.
    pub requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Places for dashboards on the live stream; a connected one holds a permit.
    live_clients: Arc<tokio::sync::Semaphore>,
    max_live_clients: usize,
}

impl Default for Live {
    fn default() -> Self {
        Live::new(DEFAULT_LIVE_CLIENTS)
    }
}

/// Dashboards on the live stream at once, unless configured.
pub const DEFAULT_LIVE_CLIENTS: usize = 100;

impl Live {
    /// Shared state with room for `max_live_clients` dashboards on the live stream.
    pub fn new(max_live_clients: usize) -> Live {
        Live {
            figures: RwLock::new(None),
            recent: Mutex::new(RecentOrders::default()),
            events: AtomicU64::new(0),
            last_run_passed: Mutex::new(None),
            requests: Mutex::new(BTreeMap::new()),
            live_clients: Arc::new(tokio::sync::Semaphore::new(max_live_clients)),
            max_live_clients,
        }
    }

    /// A place on the live stream, held while the dashboard stays connected; `None` when all
    /// are taken.
    pub fn join_live(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.live_clients.clone().try_acquire_owned().ok()
    }

    /// Dashboards on the live stream now.
    pub fn live_clients(&self) -> usize {
        self.max_live_clients - self.live_clients.available_permits()
    }

    /// The most dashboards on the live stream at once.
    pub fn max_live_clients(&self) -> usize {
        self.max_live_clients
    }

    /// Why the served figures are not whole, if they are not: the speed view is full.
    pub fn degraded(&self) -> Option<String> {
        self.read(|f| {
            (f.speed.dropped() > 0).then(|| {
                format!(
                    "the speed view holds its most orders ({}, serve.max_speed_orders) and dropped {} changes since: figures after the batch watermark are partial until a batch run passes",
                    f.speed.orders_read(),
                    f.speed.dropped()
                )
            })
        })
        .flatten()
    }

    /// Reads the figures; `None` until the first view is caught up.
    pub fn read<R>(&self, f: impl FnOnce(&Figures) -> R) -> Option<R> {
        let guard = self.figures.read().ok()?;
        guard.as_ref().map(f)
    }

    fn write(&self, f: impl FnOnce(&mut Figures)) {
        if let Ok(mut guard) = self.figures.write() {
            if let Some(figures) = guard.as_mut() {
                f(figures);
            }
        }
    }

    fn install(&self, figures: Figures) {
        if let Ok(mut guard) = self.figures.write() {
            *guard = Some(figures);
        }
    }

    pub fn count_request(&self, route: &str, status: u16) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((route.to_string(), status)).or_default() += 1;
        }
    }
}

/// Which topic a record came from.
enum Topic {
    Orders,
    Lines,
    Suggestions,
}

/// The change a record means for the figures (`Ok(None)`: nothing, as a tombstone).
fn sales_change(
    topic: &Topic,
    record: &Consumed,
) -> std::result::Result<Option<SalesChange>, String> {
    let value = record.record.value.as_deref();
    match topic {
        Topic::Orders => match decode_with::<OrderRow, SourceTime>(value) {
            Ok(Decoded::Tombstone) => Ok(None),
            Ok(Decoded::Change(e)) => {
                let Some(row) = e.row() else {
                    return Err("a change without a row".into());
                };
                let header = match (&e.after, e.op) {
                    (_, Op::Delete) | (None, _) => None,
                    (Some(after), _) => Some(Header {
                        ordered_at_ms: after
                            .timestamp
                            .as_ref()
                            .and_then(|t| t.millis())
                            .ok_or("an order without a readable timestamp")?,
                        store_id: after.store_id,
                        payment_method_id: after.payment_method_id,
                    }),
                };
                Ok(Some(SalesChange::Header {
                    order_id: row.id.clone(),
                    inserted: e.op == Op::Create,
                    after: header,
                }))
            }
            Err(err) => Err(err.to_string()),
        },
        Topic::Lines => match decode_with::<OrderLineRow, SourceTime>(value) {
            Ok(Decoded::Tombstone) => Ok(None),
            Ok(Decoded::Change(e)) => {
                let Some(row) = e.row() else {
                    return Err("a change without a row".into());
                };
                let after = match (&e.after, e.op) {
                    (_, Op::Delete) | (None, _) => None,
                    (Some(after), _) => Some(Line {
                        quantity: after.quantity,
                        subtotal: after.subtotal,
                        is_suggestion: after.is_suggestion,
                    }),
                };
                Ok(Some(SalesChange::Line {
                    order_id: row.order_id.clone(),
                    product_id: row.product_id.clone(),
                    after,
                }))
            }
            Err(err) => Err(err.to_string()),
        },
        Topic::Suggestions => {
            let Some(value) = value else { return Ok(None) };
            serde_json::from_slice::<Suggestion>(value)
                .map(|s| {
                    Some(SalesChange::Suggested {
                        order_id: s.order_id,
                        subtotal: s.subtotal,
                    })
                })
                .map_err(|e| format!("not a suggestion: {e}"))
        }
    }
}

/// The engines the tail reads.
pub struct TailSources<'a> {
    pub log: &'a dyn EventLog,
    pub source: &'a dyn SourceDb,
    pub lake: &'a Lake,
    pub history: Option<&'a dyn RunHistory>,
}

/// The reader of a view: its consumer, and the batch run whose watermark it starts from.
struct Tail {
    consumer: Box<dyn Consumer>,
    run_id: Option<String>,
}

/// Records a poll takes while a view catches up.
const CATCH_UP_POLL: usize = 5000;

/// Keeps `live` up to date until `shutdown`.
pub async fn run(
    sources: TailSources<'_>,
    settings: TailSettings,
    live: Arc<Live>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let mut retry = Duration::from_millis(200);
    while !*shutdown.borrow() {
        match serve_one_view(&sources, &settings, &live, &mut shutdown).await {
            Ok(()) => retry = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!(error = %e, "the serving layer's view failed; building it again");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = shutdown.changed() => {}
                }
                retry = (retry * 2).min(Duration::from_secs(10));
            }
        }
    }
    Ok(())
}

/// Builds the view of the last published batch run, catches it up, swaps it in, and keeps it
/// up to date until a newer run is published (or `shutdown`).
async fn serve_one_view(
    sources: &TailSources<'_>,
    settings: &TailSettings,
    live: &Live,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let mut batch = BatchView::load(sources.lake).await?;
    let held = std::mem::take(&mut batch.held);
    let batch = Arc::new(batch);
    let names = Arc::new(Names::of(&sources.source.load_reference().await?));
    let mut tail = subscribe(sources, settings, &batch).await?;
    let mut figures = Figures {
        speed: SpeedSales::new(names.cities(), batch.orphans.clone(), held)
            .with_capacity(settings.max_speed_orders),
        batch,
        names,
        lag: 0,
        updated_ms: brewline_ports::now_ms(),
    };
    // Caught up before it is shown (nothing left to read, as the reader's lag says): a new
    // view never shows less than the one it replaces.
    loop {
        let read = fold(&mut tail, settings, live, &mut figures).await?;
        figures.lag = tail.consumer.lag().await?;
        if (figures.lag == 0 && read < CATCH_UP_POLL) || *shutdown.borrow() {
            break;
        }
    }
    resolve_all(&mut figures).await?;
    if figures.speed.is_full() {
        tracing::warn!(
            orders = settings.max_speed_orders,
            dropped = figures.speed.dropped(),
            "the speed view filled up while catching up (serve.max_speed_orders): the figures since the batch watermark are partial until a batch run passes"
        );
    }
    live.install(figures);
    tracing::info!(run = ?tail.run_id, "serving the batch view and the speed layer since it");
    record_history(sources, live).await;

    let mut last_reload = Instant::now();
    let mut last_lookup = Instant::now();
    while !*shutdown.borrow() {
        let records = tail.consumer.poll(2000, Duration::from_millis(200)).await?;
        let lag = tail.consumer.lag().await?;
        let changes = decode(settings, &records, live);
        let mut filled = false;
        live.write(|f| {
            let was_full = f.speed.is_full();
            apply(f, changes);
            f.lag = lag;
            filled = !was_full && f.speed.is_full();
        });
        if filled {
            tracing::warn!(
                orders = settings.max_speed_orders,
                "the speed view is full (serve.max_speed_orders): changes of further orders are dropped and the figures since the batch watermark are partial until a batch run passes; is the batch layer failing?"
            );
        }
        // The lake may be unreachable for a while: the view goes on, its orders waiting.
        if last_lookup.elapsed() >= Duration::from_millis(250) {
            last_lookup = Instant::now();
            if let Err(e) = lookup_unresolved(settings, live).await {
                tracing::warn!(error = %e, "looking orders up in the batch view; trying again");
            }
        }
        if last_reload.elapsed() >= settings.reload_every {
            last_reload = Instant::now();
            record_history(sources, live).await;
            match published_run(sources.lake).await {
                Ok(run) if run != tail.run_id => return Ok(()),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "asking the lake for a newer batch run"),
            }
        }
    }
    Ok(())
}

/// The run id of the published manifest, if any.
async fn published_run(lake: &Lake) -> Result<Option<String>> {
    let Some(bytes) = lake.get_file(MANIFEST).await? else {
        return Ok(None);
    };
    let w: Watermark = serde_json::from_slice(&bytes)
        .map_err(|e| ServeError::Batch(format!("{MANIFEST} is unreadable: {e}")))?;
    Ok(Some(w.run_id))
}

async fn record_history(sources: &TailSources<'_>, live: &Live) {
    let Some(history) = sources.history else {
        return;
    };
    match history.recent(1).await {
        Ok(runs) => {
            if let Ok(mut passed) = live.last_run_passed.lock() {
                *passed = runs.first().map(|r| r.passed);
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading the batch run history"),
    }
}

async fn subscribe(
    sources: &TailSources<'_>,
    settings: &TailSettings,
    batch: &BatchView,
) -> Result<Tail> {
    let mut from = Vec::new();
    for (topic, table) in [
        (&settings.orders_topic, bronze::ORDERS),
        (&settings.order_details_topic, bronze::ORDER_LINES),
        (&settings.suggestions_topic, bronze::SUGGESTIONS),
    ] {
        let partitions = sources.log.partitions(topic).await?;
        for (p, next) in batch
            .landed(table, topic, partitions)
            .await?
            .into_iter()
            .enumerate()
        {
            let p = i32::try_from(p).map_err(|e| ServeError::Batch(e.to_string()))?;
            from.push((topic.clone(), p, next));
        }
    }
    let consumer = sources
        .log
        .consumer(Subscription {
            topics: vec![
                settings.orders_topic.clone(),
                settings.order_details_topic.clone(),
                settings.suggestions_topic.clone(),
            ],
            group: None,
            from,
        })
        .await?;
    Ok(Tail {
        consumer,
        run_id: batch.watermark.as_ref().map(|w| w.run_id.clone()),
    })
}

/// The changes of `records` (undecodable ones are skipped: the recommender dead-letters them,
/// and the batch layer lands them with their error, outside the figures).
fn decode(settings: &TailSettings, records: &[Consumed], live: &Live) -> Vec<SalesChange> {
    let mut out = Vec::with_capacity(records.len());
    let now = brewline_ports::now_ms();
    for r in records {
        let topic = if *r.topic == *settings.orders_topic {
            Topic::Orders
        } else if *r.topic == *settings.order_details_topic {
            Topic::Lines
        } else {
            Topic::Suggestions
        };
        match sales_change(&topic, r) {
            Ok(Some(change)) => {
                if let SalesChange::Header {
                    order_id,
                    inserted: true,
                    after: Some(h),
                } = &change
                {
                    if let Ok(mut recent) = live.recent.lock() {
                        recent.placed(order_id, h.ordered_at_ms, now);
                    }
                }
                out.push(change);
            }
            Ok(None) => {}
            Err(reason) => {
                tracing::debug!(topic = %r.topic, offset = r.offset, %reason, "not folded")
            }
        }
    }
    live.events
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    out
}

fn apply(figures: &mut Figures, changes: Vec<SalesChange>) {
    let now = brewline_ports::now_ms();
    if !changes.is_empty() {
        figures.updated_ms = now;
    }
    for change in changes {
        figures.speed.apply(change, now);
    }
}

/// Folds one poll into `figures` (a view not yet shown); returns the records read.
async fn fold(
    tail: &mut Tail,
    settings: &TailSettings,
    live: &Live,
    figures: &mut Figures,
) -> Result<usize> {
    let records = tail
        .consumer
        .poll(CATCH_UP_POLL, Duration::from_millis(200))
        .await?;
    let changes = decode(settings, &records, live);
    apply(figures, changes);
    Ok(records.len())
}

/// Resolves every order of a view not yet shown.
async fn resolve_all(figures: &mut Figures) -> Result<()> {
    let ids = figures.speed.unresolved(i64::MAX);
    for (id, rows) in figures.batch.orders(&ids).await? {
        figures.speed.resolve(&id, rows);
    }
    Ok(())
}

/// Looks up, in the batch view, the orders of the live view whose insert did not come.
async fn lookup_unresolved(settings: &TailSettings, live: &Live) -> Result<()> {
    let before = brewline_ports::now_ms() - settings.lookup_after.as_millis() as i64;
    let Some((batch, ids)) = live.read(|f| (f.batch.clone(), f.speed.unresolved(before))) else {
        return Ok(());
    };
    if ids.is_empty() {
        return Ok(());
    }
    let found = batch.orders(&ids).await?;
    live.write(|f| {
        for (id, rows) in found {
            f.speed.resolve(&id, rows);
        }
        f.updated_ms = brewline_ports::now_ms();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_orders_count_each_order_once_and_forget_old_minutes() {
        let mut recent = RecentOrders::default();
        let now = 100 * 60_000 + 30_000;
        recent.placed("a", now - 1_000, now);
        recent.placed("a", now - 1_000, now);
        recent.placed("b", now - 61_000, now);
        recent.placed("c", now - 40_000, now);
        recent.placed("old", now - 2 * 3_600_000, now);
        recent.placed("older", now - 32 * 60_000, now);
        assert_eq!(recent.per_minute(now, 2), vec![(98, 0), (99, 2), (100, 1)]);
        assert_eq!(recent.last_minute(now), 2);
        assert!(recent
            .0
            .values()
            .all(|ids| !ids.contains(&id_hash("old")) && !ids.contains(&id_hash("older"))));
    }
}
