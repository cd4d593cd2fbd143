//! What a change event means for its order: the meaning of a change of an `orders` row and of
//! an `order_details` row, as [`Changes`] that [`super::OrderState::apply`] takes.

use super::OrderChange;
use crate::debezium::{ChangeEvent, DecodeError, Op, OrderLineRow, OrderRow};
use crate::order::OrderHeader;

/// What one change event means for its order: nothing, one change, or — for a line whose
/// product changed, or that became a suggested line — a removal followed by an addition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes(Option<OrderChange>, Option<OrderChange>);

impl Changes {
    pub fn none() -> Changes {
        Changes(None, None)
    }

    pub fn one(change: OrderChange) -> Changes {
        Changes(Some(change), None)
    }

    /// `first`, then `then`, each if present (kept in canonical form: a lone change first).
    pub fn both(first: Option<OrderChange>, then: Option<OrderChange>) -> Changes {
        match first {
            Some(first) => Changes(Some(first), then),
            None => Changes(then, None),
        }
    }
}

impl IntoIterator for Changes {
    type Item = OrderChange;
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<OrderChange>, 2>>;

    fn into_iter(self) -> Self::IntoIter {
        [self.0, self.1].into_iter().flatten()
    }
}

impl<S> ChangeEvent<OrderRow, S> {
    /// What this change of an `orders` row means for the order's assembly.
    pub fn order_changes(&self) -> Result<Changes, DecodeError> {
        match (self.op, &self.after, &self.before) {
            (Op::Truncate, _, _) => Ok(Changes::none()),
            (Op::Delete, _, Some(before)) => Ok(Changes::one(OrderChange::Cancelled {
                order_id: before.id.clone(),
            })),
            (_, Some(row), _) => {
                if row.num_products < 1 {
                    return Err(DecodeError::Invalid(format!(
                        "order {} has num_products {}, expected at least 1",
                        row.id, row.num_products
                    )));
                }
                Ok(Changes::one(OrderChange::Placed(OrderHeader {
                    order_id: row.id.clone(),
                    customer_id: row.customer_id,
                    store_id: row.store_id,
                    payment_method_id: row.payment_method_id,
                    num_products: row.num_products,
                })))
            }
            _ => Err(DecodeError::Invalid("change has no row".into())),
        }
    }
}

impl OrderLineRow {
    /// The line leaving its order, unless it is a suggested line (never an item).
    fn removed(&self) -> Option<OrderChange> {
        (!self.is_suggestion).then(|| OrderChange::LineRemoved {
            order_id: self.order_id.clone(),
            product_id: self.product_id.clone(),
        })
    }

    /// The line as an item of its order, unless it is a suggested line.
    fn added(&self) -> Result<Option<OrderChange>, DecodeError> {
        if self.is_suggestion {
            return Ok(None);
        }
        if self.quantity < 1 || self.subtotal < 0 {
            return Err(DecodeError::Invalid(format!(
                "line {}/{} has quantity {} and subtotal {}",
                self.order_id, self.product_id, self.quantity, self.subtotal
            )));
        }
        Ok(Some(OrderChange::LineAdded {
            order_id: self.order_id.clone(),
            product_id: self.product_id.clone(),
        }))
    }
}

impl<S> ChangeEvent<OrderLineRow, S> {
    /// What this change of an `order_details` row means for the order's assembly. Suggested
    /// lines are never items of the order; a line whose product changed (binlog capture reports
    /// a key update as one update) or that became a suggested line is removed first.
    pub fn order_changes(&self) -> Result<Changes, DecodeError> {
        match (self.op, &self.before, &self.after) {
            (Op::Truncate, _, _) => Ok(Changes::none()),
            (Op::Delete, Some(before), _) => Ok(Changes::both(before.removed(), None)),
            (Op::Update, Some(before), Some(after)) => {
                let moved = before.product_id != after.product_id
                    || before.order_id != after.order_id
                    || after.is_suggestion;
                let removed = if moved { before.removed() } else { None };
                Ok(Changes::both(removed, after.added()?))
            }
            (_, _, Some(after)) => Ok(Changes::both(None, after.added()?)),
            _ => Err(DecodeError::Invalid("change has no row".into())),
        }
    }
}
