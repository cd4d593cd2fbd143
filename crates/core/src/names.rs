//! Default names from SPEC.md: topics, consumer group, lookup keys and the state TTL.
//!
//! These are only defaults: every one of them can be changed in configuration.

/// Topic of change events of `coffee_shop.orders`.
pub const ORDERS_TOPIC: &str = "mysql.coffee_shop.orders";
/// Topic of change events of `coffee_shop.order_details`.
pub const ORDER_DETAILS_TOPIC: &str = "mysql.coffee_shop.order_details";
/// Topic the recommender publishes suggestions to, keyed by order id.
pub const SUGGESTIONS_TOPIC: &str = "order_suggestions";
/// Dead-letter topic: events that could not be handled, with their reason.
pub const DEAD_LETTER_TOPIC: &str = "brewline.dlq";
/// Topic of the capture's positions, each committed with the events before it (compacted).
pub const CAPTURE_POSITIONS_TOPIC: &str = "brewline.cdc.positions";
/// Consumer group of the real-time recommender.
pub const RECOMMENDER_GROUP: &str = "realtime-recs";
/// Partitions of the change-event topics in the embedded log.
pub const CDC_PARTITIONS: i32 = 3;

/// Static lookup: customer ids of tier diamond.
pub const DIAMOND_CUSTOMERS_KEY: &str = "diamond_customers";
/// Static lookup: ids of every payment method whose bank is ACB.
pub const ACB_PAYMENT_KEY: &str = "bank_acb_payment";
/// Static lookup: hash `product:{id}` with `name` and `unit_price`.
pub const PRODUCT_KEY_PREFIX: &str = "product:";

/// Hash of the batch layer's product affinity: field = product id, value = JSON
/// `[[other_product_id, lift], ...]`, best first.
pub const AFFINITY_KEY: &str = "product_affinity";
/// The bank whose payment methods make an order eligible.
pub const ELIGIBLE_BANK: &str = "ACB";

/// How long per-order state lives, in seconds.
pub const ORDER_STATE_TTL_SECS: u64 = 90;

/// Debezium-style logical server name, the first part of every CDC topic.
pub const CDC_TOPIC_PREFIX: &str = "mysql";
/// The operational database.
pub const SOURCE_DATABASE: &str = "coffee_shop";

/// The name of a capture's stored position: `cdc.{prefix}.{db}`, the same for `brewline cdc`
/// and the embedded capture, and another for another topic prefix (another set of topics).
pub fn capture_checkpoint(prefix: &str, db: &str) -> String {
    format!("cdc.{prefix}.{db}")
}

/// The CDC topic of a table: `{prefix}.{db}.{table}`.
pub fn cdc_topic(prefix: &str, db: &str, table: &str) -> String {
    format!("{prefix}.{db}.{table}")
}
