//! brewline's ports on Redis, through redis-rs: the static lookup cache ([`RedisLookups`], the
//! original `lookup_data_cache`), per-order state ([`RedisOrders`]) and the running counters
//! ([`RedisCounters`]), in the two databases SPEC.md names.
//!
//! Connections are `ConnectionManager`s: multiplexed, pipelined, reconnecting after Redis
//! restarts. A failed command is a retryable [`PortError`] when trying again may help (the
//! connection dropped, Redis is loading), so callers retry the same batch.

mod config;
mod counters;
mod lookups;
mod orders;

pub use config::RedisConfig;
pub use counters::RedisCounters;
pub use lookups::RedisLookups;
pub use orders::RedisOrders;

use std::time::Duration;

use brewline_ports::PortError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

const ENGINE: &str = "redis";

/// A redis-rs error as a port error: retryable unless it is the command's own fault.
pub(crate) fn port_error(context: &str, e: redis::RedisError) -> PortError {
    let retryable = e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            redis::ErrorKind::BusyLoadingError | redis::ErrorKind::TryAgain
        );
    let message = format!("{context}: {e}");
    if retryable {
        PortError::retryable(ENGINE, message)
    } else {
        PortError::fatal(ENGINE, message)
    }
}

/// Connects to `url` with the response timeout of `config`; reconnects by itself afterwards.
pub(crate) async fn connect(
    url: &str,
    config: &RedisConfig,
) -> brewline_ports::Result<ConnectionManager> {
    // The URL may hold a password: errors name the address only.
    let client = redis::Client::open(url).map_err(|e| {
        PortError::fatal(
            ENGINE,
            format!("not a Redis URL ({e}); write it as redis://host:port/db"),
        )
    })?;
    let address = client.get_connection_info().addr.to_string();
    let manager = ConnectionManagerConfig::new()
        .set_response_timeout(Duration::from_millis(config.response_timeout_ms))
        .set_connection_timeout(Duration::from_millis(config.response_timeout_ms))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, manager)
        .await
        .map_err(|e| port_error(&format!("connecting to {address}"), e))
}
