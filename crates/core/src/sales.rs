//! The shop's sales figures, and the speed layer's share of them.
//!
//! [`SalesBook::add_order`] is what one order contributes to the figures, by the definitions of
//! the batch layer's marts (`revenue_daily`, `revenue_hourly`, `revenue_store_daily`,
//! `revenue_city_daily`, `revenue_product_daily`, `suggestions_daily`): the serving layer adds
//! the speed layer's increments to the batch view with the same rule, so the merge neither
//! counts an order twice nor misses one.
//!
//! [`SpeedSales`] folds the change events read after the batch run's watermark (the offsets its
//! bronze layer landed) into increments. An order changed since the watermark contributes
//! *its figures now − its figures at the watermark*. Its state at the watermark is the batch's
//! (looked up, [`SpeedSales::resolve`]); when its first header event after the watermark is the
//! insert and the batch certainly holds no header of it ([`HeldOrders`]; else the insert may be
//! one delivered again), it had no header then, and only the rows the batch holds without one
//! (orphans, whose events straddled the watermark). Until its state is known it is *unresolved* and
//! counts nothing, neither before nor after.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::calendar;

/// `YYYY-MM-DD` (UTC), as the marts' `order_date`.
pub type Day = String;

/// An `orders` row, as the figures read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub ordered_at_ms: i64,
    pub store_id: i64,
    pub payment_method_id: i64,
}

impl Header {
    pub fn day(&self) -> Day {
        calendar::date_of_millis(self.ordered_at_ms)
    }

    pub fn hour(&self) -> i32 {
        calendar::hour_of_millis(self.ordered_at_ms)
    }
}

/// An `order_details` row, as the figures read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub quantity: i64,
    pub subtotal: i64,
    pub is_suggestion: bool,
}

/// The rows of one order: its header, its lines by product, and the subtotal of the suggestion
/// the recommender made for it (the latest one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderRows {
    pub header: Option<Header>,
    pub lines: BTreeMap<String, Line>,
    pub suggested: Option<i64>,
}

/// Sums that add and subtract; each view fills the ones its mart has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sales {
    /// Orders (with at least one line, but in the city view: every order).
    pub orders: i64,
    pub lines: i64,
    pub quantity: i64,
    /// VND.
    pub revenue: i64,
    /// Suggested lines the customers took.
    pub accepted: i64,
    pub accepted_revenue: i64,
    /// Suggestions the recommender made.
    pub suggestions: i64,
    pub offered_revenue: i64,
}

impl Sales {
    fn add(&mut self, other: &Sales, sign: i64) {
        self.orders += sign * other.orders;
        self.lines += sign * other.lines;
        self.quantity += sign * other.quantity;
        self.revenue += sign * other.revenue;
        self.accepted += sign * other.accepted;
        self.accepted_revenue += sign * other.accepted_revenue;
        self.suggestions += sign * other.suggestions;
        self.offered_revenue += sign * other.offered_revenue;
    }

    /// These figures and `other`'s together.
    pub fn plus(mut self, other: &Sales) -> Sales {
        self.add(other, 1);
        self
    }

    pub fn is_zero(&self) -> bool {
        *self == Sales::default()
    }
}

/// The city of each store (stores of no known city are left out of the city view, as the
/// batch's inner join to `dim_stores` leaves them out).
pub type StoreCities = HashMap<i64, String>;

/// The sales figures by day, hour, store, city and product.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalesBook {
    pub daily: BTreeMap<Day, Sales>,
    pub hourly: BTreeMap<(Day, i32), Sales>,
    pub stores: BTreeMap<(Day, i64), Sales>,
    pub cities: BTreeMap<(Day, String), Sales>,
    pub products: BTreeMap<(Day, String), Sales>,
}

fn add_to<K: Ord>(map: &mut BTreeMap<K, Sales>, key: K, sales: &Sales, sign: i64) {
    let entry = map.entry(key).or_default();
    entry.add(sales, sign);
}

fn add_all<K: Ord + Clone>(into: &mut BTreeMap<K, Sales>, from: &BTreeMap<K, Sales>, sign: i64) {
    for (key, sales) in from {
        add_to(into, key.clone(), sales, sign);
    }
}

impl SalesBook {
    /// Adds (`sign` 1) or takes away (`sign` −1) what `order` contributes.
    pub fn add_order(&mut self, order: &OrderRows, cities: &StoreCities, sign: i64) {
        let lines = order.lines.iter().map(|(p, l)| (p.as_str(), l));
        self.add_rows(order.header.as_ref(), lines, order.suggested, cities, sign);
    }

    /// What an order of `header`, `lines` (by product) and `suggested` contributes, times
    /// `sign`.
    fn add_rows<'a>(
        &mut self,
        header: Option<&Header>,
        lines: impl Iterator<Item = (&'a str, &'a Line)> + Clone,
        suggested: Option<i64>,
        cities: &StoreCities,
        sign: i64,
    ) {
        let Some(header) = header else {
            return;
        };
        let day = header.day();
        let mut sums = Sales::default();
        for (_, line) in lines.clone() {
            sums.lines += 1;
            sums.quantity += line.quantity;
            sums.revenue += line.subtotal;
            if line.is_suggestion {
                sums.accepted += 1;
                sums.accepted_revenue += line.subtotal;
            }
        }
        let has_lines = sums.lines > 0;
        let with_lines = Sales {
            orders: i64::from(has_lines),
            ..sums
        };
        let mut daily = with_lines;
        if let Some(offered) = suggested {
            daily.suggestions = 1;
            daily.offered_revenue = offered;
        }
        add_to(&mut self.daily, day.clone(), &daily, sign);
        if has_lines {
            add_to(
                &mut self.hourly,
                (day.clone(), header.hour()),
                &with_lines,
                sign,
            );
            add_to(
                &mut self.stores,
                (day.clone(), header.store_id),
                &with_lines,
                sign,
            );
        }
        if let Some(city) = cities.get(&header.store_id) {
            let every_order = Sales { orders: 1, ..sums };
            add_to(
                &mut self.cities,
                (day.clone(), city.clone()),
                &every_order,
                sign,
            );
        }
        for (product, line) in lines {
            let sold = Sales {
                lines: 1,
                quantity: line.quantity,
                revenue: line.subtotal,
                ..Sales::default()
            };
            add_to(
                &mut self.products,
                (day.clone(), product.to_string()),
                &sold,
                sign,
            );
        }
    }

    /// Adds every figure of `other` (the Lambda merge: batch view + speed increments).
    pub fn merge(&mut self, other: &SalesBook) {
        add_all(&mut self.daily, &other.daily, 1);
        add_all(&mut self.hourly, &other.hourly, 1);
        add_all(&mut self.stores, &other.stores, 1);
        add_all(&mut self.cities, &other.cities, 1);
        add_all(&mut self.products, &other.products, 1);
    }

    /// The book without the figures that came to zero (increments that cancelled out).
    pub fn without_zeros(mut self) -> SalesBook {
        self.daily.retain(|_, s| !s.is_zero());
        self.hourly.retain(|_, s| !s.is_zero());
        self.stores.retain(|_, s| !s.is_zero());
        self.cities.retain(|_, s| !s.is_zero());
        self.products.retain(|_, s| !s.is_zero());
        self
    }
}

/// The orders whose `orders` row a batch view holds, as a Bloom filter (fastbloom, 1 % false
/// positives): "not held" is certain; "maybe" is looked up in the view.
#[derive(Debug, Clone, Default)]
pub struct HeldOrders {
    /// `None`: sized for nothing, holds nothing.
    filter: Option<fastbloom::BloomFilter>,
}

/// A fixed seed: the same ids give the same filter in every process (no entropy read).
const HELD_SEED: u128 = 0x6272_6577_6c69_6e65_5f68_656c_6400_0001;

impl HeldOrders {
    /// A filter sized for `orders` ids.
    pub fn with_capacity(orders: usize) -> HeldOrders {
        let filter = fastbloom::BloomFilter::with_false_pos(0.01)
            .seed(&HELD_SEED)
            .expected_items(orders.max(1));
        HeldOrders {
            filter: Some(filter),
        }
    }

    pub fn insert(&mut self, id: &str) {
        if let Some(f) = &mut self.filter {
            f.insert(id);
        }
    }

    /// False when the view certainly holds no row of `id`.
    pub fn may_hold(&self, id: &str) -> bool {
        self.filter.as_ref().is_some_and(|f| f.contains(id))
    }
}

/// One change event read after the watermark, as the figures read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SalesChange {
    /// The `orders` row: `inserted` when the event is an insert (op `c`, no row before), and
    /// the row after it (`None`: deleted).
    Header {
        order_id: String,
        inserted: bool,
        after: Option<Header>,
    },
    /// An `order_details` row after the event (`None`: deleted).
    Line {
        order_id: String,
        product_id: String,
        after: Option<Line>,
    },
    /// A suggestion the recommender made for the order (the latest one counts).
    Suggested { order_id: String, subtotal: i64 },
}

impl SalesChange {
    pub fn order_id(&self) -> &str {
        match self {
            SalesChange::Header { order_id, .. }
            | SalesChange::Line { order_id, .. }
            | SalesChange::Suggested { order_id, .. } => order_id,
        }
    }
}

/// A product's id, shared by every line of it the speed view keeps.
type Product = Arc<str>;

/// One change of an order's rows, without the order's id.
#[derive(Debug, Clone)]
enum RowChange {
    /// The `orders` row after it (`None`: deleted).
    Header(Option<Header>),
    /// An `order_details` row after it (`None`: deleted).
    Line(Product, Option<Line>),
    /// The subtotal of a suggestion made for the order.
    Suggested(i64),
}

/// An order's rows as the speed view keeps them. Compact: a view keeps every order changed
/// since the watermark, so as many as come between two batch runs.
#[derive(Debug, Clone, Default)]
struct Kept {
    header: Option<Header>,
    /// Its lines, sorted by product.
    lines: Vec<(Product, Line)>,
    suggested: Option<i64>,
}

impl Kept {
    /// `rows` (with its products' ids from `products`).
    fn of(rows: &OrderRows, products: &mut Products) -> Kept {
        Kept {
            header: rows.header.clone(),
            lines: rows
                .lines
                .iter()
                .map(|(product, line)| (products.get(product), *line))
                .collect(),
            suggested: rows.suggested,
        }
    }

    fn apply(&mut self, change: RowChange) {
        match change {
            RowChange::Header(after) => self.header = after,
            RowChange::Line(product, after) => {
                let at = self.lines.binary_search_by(|(p, _)| p.cmp(&product));
                match (at, after) {
                    (Ok(i), Some(line)) => self.lines[i].1 = line,
                    (Err(i), Some(line)) => self.lines.insert(i, (product, line)),
                    (Ok(i), None) => {
                        self.lines.remove(i);
                    }
                    (Err(_), None) => {}
                }
            }
            RowChange::Suggested(subtotal) => self.suggested = Some(subtotal),
        }
    }

    /// Adds (`sign` 1) or takes away (`sign` −1) what the order contributes to `book`.
    fn add_to(&self, book: &mut SalesBook, cities: &StoreCities, sign: i64) {
        let lines = self.lines.iter().map(|(p, l)| (&**p, l));
        book.add_rows(self.header.as_ref(), lines, self.suggested, cities, sign);
    }
}

/// The ids of the products the view's lines name, each kept once.
#[derive(Debug, Clone, Default)]
struct Products(HashSet<Product>);

impl Products {
    fn get(&mut self, id: &str) -> Product {
        if let Some(p) = self.0.get(id) {
            return p.clone();
        }
        let p: Product = Arc::from(id);
        self.0.insert(p.clone());
        p
    }
}

/// An order changed after the watermark.
#[derive(Debug, Clone)]
enum Touched {
    /// Its state at the watermark is not known yet: its changes since, in the order read,
    /// and when it was first read (its state is looked up only after its insert had a chance
    /// to arrive).
    Waiting {
        changes: Vec<RowChange>,
        first_read_ms: i64,
    },
    /// Its rows now: its state at the watermark with every change since.
    Known(Kept),
}

/// The speed layer's increments since the watermark.
#[derive(Debug, Clone, Default)]
pub struct SpeedSales {
    cities: StoreCities,
    /// Orders with lines or a suggestion but no header at the watermark (their events
    /// straddled it): their rows then.
    orphans: HashMap<String, OrderRows>,
    /// The orders whose header the batch view holds.
    held: HeldOrders,
    orders: HashMap<Box<str>, Touched>,
    products: Products,
    book: SalesBook,
    unresolved: usize,
    /// The most orders kept (`None`: no bound); changes of orders beyond it are not counted.
    capacity: Option<usize>,
    /// Changes not counted because the view was full.
    dropped: u64,
}

impl SpeedSales {
    /// Increments over a batch view whose stores are in `cities`, whose orders without a
    /// header are `orphans`, and whose orders with one are `held`.
    pub fn new(
        cities: StoreCities,
        orphans: HashMap<String, OrderRows>,
        held: HeldOrders,
    ) -> SpeedSales {
        SpeedSales {
            cities,
            orphans,
            held,
            ..SpeedSales::default()
        }
    }

    /// Keeps at most `orders` orders: memory stays bounded when batch runs stop passing (the
    /// watermark stops moving); past it, changes of orders not kept are dropped
    /// ([`SpeedSales::dropped`]) and the figures since the watermark are partial.
    pub fn with_capacity(mut self, orders: usize) -> SpeedSales {
        self.capacity = Some(orders);
        self
    }

    /// Changes not counted because the view was full: the figures miss them until a batch run
    /// publishes a newer watermark.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether the view keeps no more orders.
    pub fn is_full(&self) -> bool {
        self.capacity.is_some_and(|c| self.orders.len() >= c)
    }

    /// Reads one change (`now_ms`: when it was read).
    pub fn apply(&mut self, change: SalesChange, now_ms: i64) {
        let inserted = matches!(change, SalesChange::Header { inserted: true, .. });
        let (order_id, change) = match change {
            SalesChange::Header {
                order_id, after, ..
            } => (order_id, RowChange::Header(after)),
            SalesChange::Line {
                order_id,
                product_id,
                after,
            } => (
                order_id,
                RowChange::Line(self.products.get(&product_id), after),
            ),
            SalesChange::Suggested { order_id, subtotal } => {
                (order_id, RowChange::Suggested(subtotal))
            }
        };
        if !self.orders.contains_key(order_id.as_str()) {
            if self.is_full() {
                self.dropped += 1;
                return;
            }
            self.unresolved += 1;
            let waiting = Touched::Waiting {
                changes: Vec::new(),
                first_read_ms: now_ms,
            };
            self.orders.insert(order_id.as_str().into(), waiting);
        }
        let Some(touched) = self.orders.get_mut(order_id.as_str()) else {
            return;
        };
        match touched {
            Touched::Known(kept) => {
                kept.add_to(&mut self.book, &self.cities, -1);
                kept.apply(change);
                kept.add_to(&mut self.book, &self.cities, 1);
            }
            Touched::Waiting { changes, .. } => {
                // The first header event is the insert, and the batch certainly holds no
                // header of the order (else the insert is one delivered again): at the
                // watermark the order had no header, and no rows but those the batch holds
                // as orphans.
                let proves_new = inserted
                    && !changes.iter().any(|c| matches!(c, RowChange::Header(_)))
                    && !self.held.may_hold(&order_id);
                changes.push(change);
                if proves_new {
                    let base = self.orphans.remove(&order_id).unwrap_or_default();
                    self.settle(&order_id, base);
                }
            }
        }
    }

    /// Orders whose state at the watermark is still unknown, first read before `read_before_ms`.
    pub fn unresolved(&self, read_before_ms: i64) -> Vec<String> {
        self.orders
            .iter()
            .filter(|(_, t)| {
                matches!(t, Touched::Waiting { first_read_ms, .. } if *first_read_ms < read_before_ms)
            })
            .map(|(id, _)| id.to_string())
            .collect()
    }

    /// How many orders are waiting for their state at the watermark.
    pub fn unresolved_count(&self) -> usize {
        self.unresolved
    }

    /// Sets the order's state at the watermark (the batch's; empty when the batch has none),
    /// so its changes count.
    pub fn resolve(&mut self, order_id: &str, base: OrderRows) {
        self.settle(order_id, base);
    }

    /// Counts a waiting order from its state at the watermark, `base`, and its changes since.
    fn settle(&mut self, order_id: &str, base: OrderRows) {
        let Some(touched) = self.orders.get_mut(order_id) else {
            return;
        };
        let Touched::Waiting { changes, .. } = touched else {
            return;
        };
        let mut kept = Kept::of(&base, &mut self.products);
        for change in std::mem::take(changes) {
            kept.apply(change);
        }
        self.book.add_order(&base, &self.cities, -1);
        kept.add_to(&mut self.book, &self.cities, 1);
        *touched = Touched::Known(kept);
        self.unresolved -= 1;
    }

    /// The increments so far.
    pub fn book(&self) -> &SalesBook {
        &self.book
    }

    /// Orders changed since the watermark.
    pub fn orders_read(&self) -> usize {
        self.orders.len()
    }
}

#[cfg(test)]
mod tests;
