//! Where brewline's Redis data lives: two databases and the names of its keys.

use brewline_core::names;
use serde::{Deserialize, Serialize};

/// The Redis databases and key names. The defaults are the original pipeline's names (SPEC.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// The static database: the lookup cache (`redis://host:port/db`; over TLS
    /// `rediss://host:port/db`; an ACL user and password go in the URL,
    /// `rediss://user:password@host:port/db`: set the URL from the environment,
    /// `BREWLINE_REDIS__STATIC_URL`). A Redis Cluster: `redis+cluster://host:port,host:port`
    /// (any of its nodes; `rediss+cluster://` over TLS), with no database number.
    pub static_url: String,
    /// The dynamic database: per-order state and counters (`BREWLINE_REDIS__DYNAMIC_URL`).
    pub dynamic_url: String,
    /// For `rediss://` URLs: a PEM file of the authorities the server's certificate must chain
    /// to [default: the system's].
    pub ca: Option<std::path::PathBuf>,
    /// Set of customer ids of tier diamond.
    pub diamond_customers_key: String,
    /// Set of the ids of every payment method of the eligible bank.
    pub acb_payment_key: String,
    /// Prefix of the hashes `product:{id}` (`name`, `unit_price`).
    pub product_key_prefix: String,
    /// Hash of the product affinity the batch layer publishes (product → JSON list of
    /// `[other product, lift]`, best first).
    pub affinity_key: String,
    /// Counter raised by every lookup load: recommenders reload their copy when it changes.
    pub lookups_version_key: String,
    /// Prefix of the per-order state keys `order_state:{order}` (see [`crate::RedisOrders`]).
    pub order_state_prefix: String,
    /// Sorted set of open orders by the time their state expires.
    pub open_orders_key: String,
    /// Hash of the recommender's running counters.
    pub counters_key: String,
    /// A value written when order state starts and checked with every write of it: when it is
    /// gone or another (the database was flushed, or restarted without persistence), the
    /// recommenders know their order state was lost and rebuild it from the log.
    pub order_state_epoch_key: String,
    /// Milliseconds a command may take before it fails (and is retried).
    pub response_timeout_ms: u64,
    /// On a Redis Cluster (`redis+cluster://` URLs): into how many groups the orders are
    /// spread, each in one slot with its own open-orders set and epoch (keys
    /// `{o7}order_state:…`, `{o7}open_orders`, `{o7}order_state_epoch`), so that each group's
    /// compare-and-set is one script on one node. More groups spread the load over more
    /// masters; each is one more call per batch. Unused on one Redis.
    pub order_state_buckets: u16,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            static_url: "redis://127.0.0.1:6379/0".into(),
            dynamic_url: "redis://127.0.0.1:6379/1".into(),
            ca: None,
            diamond_customers_key: names::DIAMOND_CUSTOMERS_KEY.into(),
            acb_payment_key: names::ACB_PAYMENT_KEY.into(),
            product_key_prefix: names::PRODUCT_KEY_PREFIX.into(),
            affinity_key: names::AFFINITY_KEY.into(),
            lookups_version_key: "lookups_version".into(),
            order_state_prefix: "order_state:".into(),
            open_orders_key: "open_orders".into(),
            counters_key: "brewline_counters".into(),
            order_state_epoch_key: "order_state_epoch".into(),
            response_timeout_ms: 5_000,
            order_state_buckets: 64,
        }
    }
}
