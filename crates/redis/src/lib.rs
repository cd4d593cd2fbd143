//! brewline's ports on Redis, through redis-rs: the static lookup cache ([`RedisLookups`], the
//! original `lookup_data_cache`), per-order state ([`RedisOrders`]) and the running counters
//! ([`RedisCounters`]), in the two databases SPEC.md names.
//!
//! Each store holds a [`Connection`]: multiplexed, pipelined, every call bounded by a timeout,
//! reconnecting after Redis restarts. (redis-rs' `ConnectionManager` was tried first: after
//! Redis went away it answered no call again, even once Redis was back.) A failed command is a
//! retryable [`PortError`] when trying again may help (the connection dropped, Redis is
//! loading), so callers retry the same batch.

mod config;
mod counters;
mod lookups;
mod orders;

pub use config::RedisConfig;
pub use counters::RedisCounters;
pub use lookups::RedisLookups;
pub use orders::RedisOrders;

use std::sync::Arc;
use std::time::Duration;

use brewline_ports::{PortError, Result};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

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

/// A connection to one Redis database, multiplexed and pipelined. Every call is bounded by the
/// configured timeout; after a failure of the connection (or no answer in time) the next call
/// connects afresh, so a restarted Redis is picked up by the retry of the same call.
#[derive(Clone)]
pub(crate) struct Connection {
    client: redis::Client,
    current: Arc<tokio::sync::Mutex<Option<MultiplexedConnection>>>,
    timeout: Duration,
    /// host:port, for messages (the URL may hold a password).
    address: String,
}

impl Connection {
    /// Connects to `url` with the timeouts of `config`.
    pub(crate) async fn open(url: &str, config: &RedisConfig) -> Result<Connection> {
        let client = redis::Client::open(url).map_err(|e| {
            PortError::fatal(
                ENGINE,
                format!("not a Redis URL ({e}); write it as redis://host:port/db"),
            )
        })?;
        let connection = Connection {
            address: client.get_connection_info().addr.to_string(),
            client,
            current: Arc::default(),
            timeout: Duration::from_millis(config.response_timeout_ms),
        };
        connection.get().await?;
        Ok(connection)
    }

    async fn get(&self) -> Result<MultiplexedConnection> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| port_error(&format!("connecting to {}", self.address), e))?;
        *current = Some(c.clone());
        Ok(c)
    }

    /// Runs `call` on the connection, within the timeout.
    pub(crate) async fn call<T>(
        &self,
        context: &str,
        call: impl AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let mut c = self.get().await?;
        let failed = match tokio::time::timeout(self.timeout, call(&mut c)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => port_error(context, e),
            Err(_) => PortError::retryable(
                ENGINE,
                format!(
                    "{context}: no answer from {} within {:?}",
                    self.address, self.timeout
                ),
            ),
        };
        if failed.retryable {
            // The connection may be gone: the next call makes a new one.
            *self.current.lock().await = None;
        }
        Err(failed)
    }
}
