//! The orders a worker holds open, by where their first events are in the log, so that offsets
//! are committed only below the oldest of them.
//!
//! An order's events may be spread over many records; its state lives in the order store until
//! it completes. Were the offsets committed past an open order's first event, a store that
//! lost its data (a Redis flushed, restarted without persistence, evicting) would leave the
//! order incomplete for good: its earlier events would never be read again. Held back to the
//! oldest open order's first event, the committed offsets are a point from which the log
//! rebuilds every open order's state: after a restart, a rebalance, or a loss the worker
//! detects (it rewinds to them).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use brewline_core::assembly::EventRef;

type Partition = (Arc<str>, i32);

/// One open order: where its first event is in each topic-partition it was read from, when it
/// was last touched, and whether any of its events was read past where output is sent.
#[derive(Debug, Default)]
struct Open {
    first: Vec<(Partition, i64)>,
    touched_ms: i64,
    unsent: bool,
}

/// The open orders a worker saw, and per partition how many of them start at each offset.
#[derive(Debug, Default)]
pub struct OpenOrders {
    orders: HashMap<String, Open>,
    starts: HashMap<Partition, BTreeMap<i64, u32>>,
}

impl OpenOrders {
    /// Notes that `order`, read at `at` (past where output is sent: `unsent`), is open after
    /// it (`open`) or not (completed, cancelled): an open order keeps the first offset it was
    /// read at in each partition; a closed one is forgotten. Returns whether any event of the
    /// order read since the worker (re)started reading, this one included, was unsent: an
    /// order all of whose events come before where output is sent had its output sent, one
    /// with an event after it had not, whichever event completes it as the log is read again.
    pub fn note(
        &mut self,
        order: &str,
        at: &EventRef,
        open: bool,
        unsent: bool,
        now_ms: i64,
    ) -> bool {
        if !open {
            let before = self.orders.get(order).is_some_and(|o| o.unsent);
            self.forget(order);
            return before || unsent;
        }
        let entry = match self.orders.get_mut(order) {
            Some(e) => e,
            None => self.orders.entry(order.to_string()).or_default(),
        };
        entry.touched_ms = now_ms;
        entry.unsent |= unsent;
        let any_unsent = entry.unsent;
        let partition = (at.topic.clone(), at.partition);
        if entry.first.iter().any(|(p, _)| *p == partition) {
            return any_unsent;
        }
        entry.first.push((partition.clone(), at.offset));
        *self
            .starts
            .entry(partition)
            .or_default()
            .entry(at.offset)
            .or_default() += 1;
        any_unsent
    }

    fn forget(&mut self, order: &str) {
        let Some(open) = self.orders.remove(order) else {
            return;
        };
        for (partition, offset) in open.first {
            if let Some(starts) = self.starts.get_mut(&partition) {
                if let Some(n) = starts.get_mut(&offset) {
                    *n -= 1;
                    if *n == 0 {
                        starts.remove(&offset);
                    }
                }
                if starts.is_empty() {
                    self.starts.remove(&partition);
                }
            }
        }
    }

    /// The offsets to commit for `next` (the next offset of each partition a batch covers):
    /// each held back to the first event of the oldest order open in its partition.
    pub fn hold(&self, next: &[(String, i32, i64)]) -> Vec<(String, i32, i64)> {
        next.iter()
            .map(|(topic, p, offset)| {
                let oldest = self
                    .starts
                    .iter()
                    .find(|((t, q), _)| q == p && **t == **topic)
                    .and_then(|(_, starts)| starts.keys().next().copied());
                let held = oldest.map_or(*offset, |o| o.min(*offset));
                (topic.clone(), *p, held)
            })
            .collect()
    }

    /// Forgets the orders not touched since `before_ms`: the store expires their state, and
    /// they hold the commits no longer. Returns how many.
    pub fn expire(&mut self, before_ms: i64) -> usize {
        let stale: Vec<String> = self
            .orders
            .iter()
            .filter(|(_, o)| o.touched_ms < before_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stale {
            self.forget(id);
        }
        stale.len()
    }

    /// Forgets every order (the log is read again from the committed offsets).
    pub fn clear(&mut self) {
        self.orders.clear();
        self.starts.clear();
    }

    /// How many orders are open.
    pub fn len(&self) -> usize {
        self.orders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(topic: &str, offset: i64) -> EventRef {
        EventRef {
            topic: topic.into(),
            partition: 0,
            offset,
        }
    }

    fn next(topic: &str, offset: i64) -> Vec<(String, i32, i64)> {
        vec![(topic.to_string(), 0, offset)]
    }

    #[test]
    fn commits_stop_at_the_oldest_open_order_and_move_on_when_it_closes() {
        let mut open = OpenOrders::default();
        open.note("a", &at("orders", 10), true, true, 0);
        open.note("b", &at("orders", 12), true, true, 0);
        open.note("a", &at("lines", 40), true, true, 0);
        assert_eq!(open.hold(&next("orders", 20)), next("orders", 10));
        assert_eq!(open.hold(&next("lines", 50)), next("lines", 40));
        open.note("a", &at("lines", 41), false, true, 0);
        assert_eq!(open.hold(&next("orders", 20)), next("orders", 12));
        assert_eq!(open.hold(&next("lines", 50)), next("lines", 50));
        open.note("b", &at("lines", 45), false, true, 0);
        assert_eq!(open.hold(&next("orders", 20)), next("orders", 20));
        assert!(open.is_empty());
    }

    #[test]
    fn an_order_with_an_event_past_the_sent_mark_is_unsent_whichever_event_completes_it() {
        let mut open = OpenOrders::default();
        // Read again after a rewind: a line past the mark first, then the header before it.
        assert!(open.note("a", &at("lines", 40), true, true, 0));
        assert!(open.note("a", &at("orders", 10), false, false, 0));
        // Every event before the mark: sent before.
        assert!(!open.note("b", &at("lines", 30), true, false, 0));
        assert!(!open.note("b", &at("orders", 11), false, false, 0));
        // The completing event past the mark: unsent.
        assert!(!open.note("c", &at("orders", 12), true, false, 0));
        assert!(open.note("c", &at("lines", 50), false, true, 0));
        assert!(open.is_empty());
    }

    #[test]
    fn an_order_read_again_keeps_its_first_offset_and_expired_orders_hold_nothing() {
        let mut open = OpenOrders::default();
        open.note("a", &at("orders", 10), true, true, 0);
        open.note("a", &at("orders", 15), true, true, 5);
        assert_eq!(open.hold(&next("orders", 30)), next("orders", 10));
        open.note("b", &at("orders", 20), true, true, 100);
        assert_eq!(open.expire(50), 1);
        assert_eq!(open.hold(&next("orders", 30)), next("orders", 20));
        assert_eq!(open.len(), 1);
        open.clear();
        assert_eq!(open.hold(&next("orders", 30)), next("orders", 30));
    }
}
