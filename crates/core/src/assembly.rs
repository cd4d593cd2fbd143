//! Order assembly: an order's `orders` row and its `order_details` rows arrive as separate
//! change events, in any order and possibly more than once; the order is complete, exactly once,
//! when its header and all `num_products` distinct lines are in.
//!
//! The state of one order is plain data ([`OrderState`]) that a state store keeps between events;
//! [`OrderState::apply`] is the whole rule, and what each change event means for its order is in
//! `changes.rs`. Stores that cannot run it atomically themselves run this same Rust rule on the
//! states they read, and write them back under compare-and-set (`brewline-redis`: `MGET`, the
//! rule in Rust, a Lua script that writes only states nobody changed meanwhile); every store is
//! tested against the same cases.

mod changes;

pub use changes::Changes;

use serde::{Deserialize, Serialize};

use crate::order::{CompletedOrder, OrderHeader};
use crate::suggestion::Suggestion;

/// Where a change event was read: its topic, partition and offset. Two deliveries of the same
/// record have the same reference; a duplicate written twice to the log does not.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventRef {
    /// Shared: every record of a topic names the same topic.
    pub topic: std::sync::Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

impl std::fmt::Display for EventRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// What a change event means for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderChange {
    /// The `orders` row was inserted, read by a snapshot or updated.
    Placed(OrderHeader),
    /// The `orders` row was deleted.
    Cancelled { order_id: String },
    /// A (non-suggested) line was inserted, read or updated.
    LineAdded {
        order_id: String,
        product_id: String,
    },
    /// A (non-suggested) line was deleted.
    LineRemoved {
        order_id: String,
        product_id: String,
    },
}

impl OrderChange {
    pub fn order_id(&self) -> &str {
        match self {
            OrderChange::Placed(h) => &h.order_id,
            OrderChange::Cancelled { order_id }
            | OrderChange::LineAdded { order_id, .. }
            | OrderChange::LineRemoved { order_id, .. } => order_id,
        }
    }
}

/// Where an order stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Waiting for its header or lines.
    #[default]
    Open,
    /// Complete; `by` is the event that completed it.
    Completed { by: EventRef },
    /// Deleted before it completed: it never completes.
    Cancelled,
}

/// The state of one order between its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    pub header: Option<OrderHeader>,
    /// Distinct products seen so far, sorted.
    pub products: Vec<String>,
    /// Change events applied, duplicates included (observability only).
    pub message_count: u64,
    pub status: Status,
    /// The suggestion made when the order completed, if any.
    pub suggestion: Option<Suggestion>,
}

/// What applying one change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Still waiting for the header or for lines.
    Pending,
    /// This change completed the order: happens once per order. With the suggestion made for
    /// it, which the state records in the same step.
    Completed(CompletedOrder, Option<Suggestion>),
    /// The very event that completed the order was delivered again (a redelivery after a crash
    /// or a rebalance): what followed its first delivery may not have happened, so it may be
    /// done again, with the identical order — and the suggestion recorded for it, if any, which
    /// is the one to send again.
    Replayed(CompletedOrder, Option<Suggestion>),
    /// The order was complete already: a duplicate or late event.
    AlreadyComplete,
    /// The order was deleted before it completed.
    Cancelled,
}

impl OrderState {
    /// Applies one change, delivered from `at`. When it completes the order, `suggest` makes the
    /// order's suggestion, which is recorded with the completion: a replay repeats it rather
    /// than making it again from lookups or a seed that may have changed since.
    pub fn apply(
        &mut self,
        change: &OrderChange,
        at: &EventRef,
        suggest: impl FnOnce(&CompletedOrder) -> Option<Suggestion>,
    ) -> Step {
        self.message_count += 1;
        // Only a header or an added line can have completed the order: a removal delivered
        // with the same record (a line that changed its product) is not the completing change.
        let can_complete = matches!(
            change,
            OrderChange::Placed(_) | OrderChange::LineAdded { .. }
        );
        match &self.status {
            Status::Completed { by } if by == at && can_complete => {
                return match self.completed() {
                    Some(order) => Step::Replayed(order, self.suggestion.clone()),
                    None => Step::AlreadyComplete,
                }
            }
            Status::Completed { .. } => return Step::AlreadyComplete,
            Status::Cancelled => return Step::Cancelled,
            Status::Open => {}
        }
        match change {
            OrderChange::Placed(header) => self.header = Some(header.clone()),
            OrderChange::Cancelled { .. } => {
                self.status = Status::Cancelled;
                return Step::Cancelled;
            }
            OrderChange::LineAdded { product_id, .. } => {
                if let Err(i) = self.products.binary_search(product_id) {
                    self.products.insert(i, product_id.clone());
                }
            }
            OrderChange::LineRemoved { product_id, .. } => {
                if let Ok(i) = self.products.binary_search(product_id) {
                    self.products.remove(i);
                }
            }
        }
        match self.completed() {
            Some(order) => {
                self.status = Status::Completed { by: at.clone() };
                self.suggestion = suggest(&order);
                Step::Completed(order, self.suggestion.clone())
            }
            None => Step::Pending,
        }
    }

    /// The order, if its header and all its lines are in.
    fn completed(&self) -> Option<CompletedOrder> {
        let header = self.header.as_ref()?;
        (self.products.len() as i64 >= header.num_products).then(|| CompletedOrder {
            header: header.clone(),
            products: self.products.clone(),
        })
    }

    pub fn is_complete(&self) -> bool {
        matches!(self.status, Status::Completed { .. })
    }

    /// Open orders whose state expires are counted as expired incomplete.
    pub fn is_open(&self) -> bool {
        self.status == Status::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(n: i64) -> OrderHeader {
        OrderHeader {
            order_id: "o1".into(),
            customer_id: Some(3),
            store_id: 1,
            payment_method_id: 9,
            num_products: n,
        }
    }

    fn line(p: &str) -> OrderChange {
        OrderChange::LineAdded {
            order_id: "o1".into(),
            product_id: p.into(),
        }
    }

    fn none(_: &CompletedOrder) -> Option<Suggestion> {
        None
    }

    fn at(offset: i64) -> EventRef {
        EventRef {
            topic: "t".into(),
            partition: 0,
            offset,
        }
    }

    /// The events of one order with `n` lines: the header and one event per line.
    fn events(n: usize) -> Vec<OrderChange> {
        let mut v = vec![OrderChange::Placed(header(n as i64))];
        v.extend((0..n).map(|i| line(&format!("P{i}"))));
        v
    }

    /// The events of an order of 1 to 3 lines, every one at least once and some again, in any
    /// order (proptest's own shuffle, so that a failing case shrinks).
    fn deliveries() -> impl Strategy<Value = (usize, Vec<OrderChange>)> {
        (1usize..=3, proptest::collection::vec(0usize..4, 0..12)).prop_flat_map(|(n, again)| {
            let base = events(n);
            let mut delivered = base.clone();
            delivered.extend(again.iter().map(|i| base[i % base.len()].clone()));
            (Just(n), Just(delivered).prop_shuffle())
        })
    }

    proptest! {
        /// Any permutation with any duplicates completes the order exactly once, with all its
        /// products, and never replays when every delivery is a different record.
        #[test]
        fn any_order_and_duplicates_complete_exactly_once((n, delivered) in deliveries()) {
            let mut state = OrderState::default();
            let mut completed = vec![];
            for (offset, change) in delivered.iter().enumerate() {
                match state.apply(change, &at(offset as i64), none) {
                    Step::Completed(o, _) => completed.push(o),
                    Step::Replayed(..) | Step::Cancelled => prop_assert!(false, "unexpected step"),
                    Step::Pending | Step::AlreadyComplete => {}
                }
            }
            prop_assert_eq!(completed.len(), 1);
            let products: Vec<_> = (0..n).map(|i| format!("P{i}")).collect();
            prop_assert_eq!(&completed[0].products, &products);
            prop_assert_eq!(state.message_count, delivered.len() as u64);
        }

        /// Delivering the completing record again replays the identical order; any other
        /// delivery of a complete order does nothing.
        #[test]
        fn redelivery_of_the_completing_record_replays_it(n in 1usize..=3, extra in 0usize..4) {
            let mut state = OrderState::default();
            let mut first = None;
            for (offset, change) in events(n).iter().enumerate() {
                if let Step::Completed(o, _) = state.apply(change, &at(offset as i64), none) {
                    first = Some((o, offset));
                }
            }
            let (order, offset) = first.expect("completes");
            prop_assert_eq!(
                state.apply(&events(n)[offset], &at(offset as i64), none),
                Step::Replayed(order, None)
            );
            let again = &events(n)[extra % (n + 1)];
            prop_assert_eq!(state.apply(again, &at(100), none), Step::AlreadyComplete);
        }
    }

    #[test]
    fn header_last_completes_and_removed_line_is_awaited_again() {
        let mut s = OrderState::default();
        assert_eq!(s.apply(&line("A"), &at(0), none), Step::Pending);
        assert_eq!(s.apply(&line("B"), &at(1), none), Step::Pending);
        let removed = OrderChange::LineRemoved {
            order_id: "o1".into(),
            product_id: "B".into(),
        };
        assert_eq!(s.apply(&removed, &at(2), none), Step::Pending);
        assert_eq!(
            s.apply(&OrderChange::Placed(header(2)), &at(3), none),
            Step::Pending
        );
        assert!(
            matches!(s.apply(&line("C"), &at(4), none), Step::Completed(o, _) if o.products == ["A", "C"])
        );
    }

    #[test]
    fn a_replayed_record_that_removes_and_adds_replays_once() {
        let mut s = OrderState::default();
        s.apply(&OrderChange::Placed(header(2)), &at(0), none);
        s.apply(&line("A"), &at(1), none);
        // Record 2 changes line A to B: a removal then an addition, both from offset 2.
        let removed_a = OrderChange::LineRemoved {
            order_id: "o1".into(),
            product_id: "A".into(),
        };
        assert_eq!(s.apply(&removed_a, &at(2), none), Step::Pending);
        assert_eq!(
            s.apply(&line("B"), &at(2), none),
            Step::Pending,
            "one line, two wanted"
        );
        assert!(
            matches!(s.apply(&line("C"), &at(3), none), Step::Completed(o, _) if o.products == ["B", "C"])
        );
        // The completing record again replays; a removal sharing its record never does.
        assert!(matches!(
            s.apply(&line("C"), &at(3), none),
            Step::Replayed(..)
        ));
        let removed_c = OrderChange::LineRemoved {
            order_id: "o1".into(),
            product_id: "C".into(),
        };
        assert_eq!(s.apply(&removed_c, &at(3), none), Step::AlreadyComplete);
    }

    #[test]
    fn cancelled_before_completion_never_completes() {
        let mut s = OrderState::default();
        s.apply(&OrderChange::Placed(header(2)), &at(0), none);
        s.apply(&line("A"), &at(1), none);
        let cancel = OrderChange::Cancelled {
            order_id: "o1".into(),
        };
        assert_eq!(s.apply(&cancel, &at(2), none), Step::Cancelled);
        assert_eq!(s.apply(&line("B"), &at(3), none), Step::Cancelled);
        assert!(!s.is_complete() && !s.is_open());
    }

    #[test]
    fn cancelled_after_completion_stays_complete() {
        let mut s = OrderState::default();
        s.apply(&OrderChange::Placed(header(1)), &at(0), none);
        assert!(matches!(
            s.apply(&line("A"), &at(1), none),
            Step::Completed(..)
        ));
        let cancel = OrderChange::Cancelled {
            order_id: "o1".into(),
        };
        assert_eq!(s.apply(&cancel, &at(2), none), Step::AlreadyComplete);
        assert!(s.is_complete());
    }

    #[test]
    fn updated_header_with_more_products_waits_for_them() {
        let mut s = OrderState::default();
        s.apply(&OrderChange::Placed(header(3)), &at(0), none);
        s.apply(&line("A"), &at(1), none);
        s.apply(&line("B"), &at(2), none);
        assert!(matches!(
            s.apply(&OrderChange::Placed(header(2)), &at(3), none),
            Step::Completed(..)
        ));
    }

    fn suggestion_of(order: &CompletedOrder, product: &str) -> Suggestion {
        Suggestion {
            order_id: order.id().to_string(),
            product_id: product.into(),
            product_name: product.into(),
            quantity: 1,
            unit_price: 100,
            discount_percent: 10,
            subtotal: 90,
            is_suggestion: true,
            customer_id: order.header.customer_id,
            store_id: order.header.store_id,
            payment_method_id: order.header.payment_method_id,
            order_products: order.products.clone(),
            strategy: "random".into(),
        }
    }

    #[test]
    fn the_suggestion_is_made_once_at_completion_and_replayed_as_recorded() {
        let mut s = OrderState::default();
        let mut calls = 0;
        s.apply(&OrderChange::Placed(header(1)), &at(0), |_| {
            calls += 1;
            None
        });
        let Step::Completed(order, Some(made)) =
            s.apply(&line("A"), &at(1), |o| Some(suggestion_of(o, "X")))
        else {
            panic!("the line completes the order with a suggestion");
        };
        assert_eq!(calls, 0, "no suggestion is made before completion");
        assert_eq!(made.product_id, "X");
        assert_eq!(s.suggestion.as_ref(), Some(&made));
        // Redelivered, with a suggester that would now choose differently: the recorded one.
        let replay = s.apply(&line("A"), &at(1), |o| Some(suggestion_of(o, "Y")));
        assert_eq!(replay, Step::Replayed(order, Some(made)));
        assert_eq!(
            s.apply(&line("A"), &at(2), |o| Some(suggestion_of(o, "Y"))),
            Step::AlreadyComplete
        );
    }
}
