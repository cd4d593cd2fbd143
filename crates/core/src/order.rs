//! Orders as the tills write them and as the recommender assembles them.

use serde::{Deserialize, Serialize};

/// One product line of a new order: `subtotal = unit_price × quantity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewLine {
    pub product_id: String,
    pub quantity: i64,
    pub unit_price: i64,
    pub subtotal: i64,
}

/// An order as a till writes it: the `orders` row and its `order_details` rows, written in one
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    /// A uuid.
    pub id: String,
    /// Uniform in 1..=1 000 000: most buyers are not registered customers.
    pub customer_id: i64,
    pub store_id: i64,
    pub payment_method_id: i64,
    /// Distinct products, 1 to 3 of them.
    pub lines: Vec<NewLine>,
}

impl NewOrder {
    pub fn num_products(&self) -> i64 {
        self.lines.len() as i64
    }
}

/// What the `orders` row tells the recommender about an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderHeader {
    pub order_id: String,
    pub customer_id: Option<i64>,
    pub store_id: i64,
    pub payment_method_id: i64,
    /// How many distinct products the order has (suggested lines not counted).
    pub num_products: i64,
}

/// An order whose header and every one of its `num_products` lines have arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedOrder {
    pub header: OrderHeader,
    /// The distinct products of the order, sorted.
    pub products: Vec<String>,
}

impl CompletedOrder {
    pub fn id(&self) -> &str {
        &self.header.order_id
    }

    pub fn contains(&self, product_id: &str) -> bool {
        self.products
            .binary_search_by(|p| p.as_str().cmp(product_id))
            .is_ok()
    }
}
