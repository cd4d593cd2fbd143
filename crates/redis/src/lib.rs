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
    let hint = match e.kind() {
        redis::ErrorKind::AuthenticationFailed => ": check the user and password in the Redis URL",
        _ if e.code() == Some("NOPERM") => {
            ": the URL's ACL user may not do this; grant it, or use the user of this role"
        }
        _ => "",
    };
    let message = format!("{context}: {e}{hint}");
    if retryable {
        PortError::retryable(ENGINE, message)
    } else {
        PortError::fatal(ENGINE, message)
    }
}

/// A client of `url`: over TLS for `rediss://`, trusting the authorities of `config.ca` (else
/// the system's).
fn client(url: &str, config: &RedisConfig) -> Result<redis::Client> {
    let not_a_url = |e: redis::RedisError| {
        PortError::fatal(
            ENGINE,
            format!("not a Redis URL ({e}); write it as redis://host:port/db, or rediss://user:password@host:port/db over TLS"),
        )
    };
    let tls = url.starts_with("rediss://");
    if tls {
        // rustls needs one process-wide choice of cryptography; ring, as the rest of brewline.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    match (&config.ca, tls) {
        (Some(ca), true) => {
            let root_cert = std::fs::read(ca).map_err(|e| {
                PortError::fatal(
                    ENGINE,
                    format!("redis.ca: cannot read {}: {e}", ca.display()),
                )
            })?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            redis::Client::build_with_tls(url, certificates).map_err(not_a_url)
        }
        (Some(_), false) => Err(PortError::fatal(
            ENGINE,
            "redis.ca is set but the URL is not rediss://: connect over TLS, or unset redis.ca",
        )),
        (None, _) => redis::Client::open(url).map_err(not_a_url),
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
        let client = client(url, config)?;
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
            .map_err(|e| {
                let mut e = port_error(&format!("connecting to {}", self.address), e);
                e.message.push_str(self.connect_hint(&e.message));
                e
            })?;
        *current = Some(c.clone());
        Ok(c)
    }

    /// What may be wrong when a connection failed with `message`: TLS on one side only, or
    /// a server certificate not trusted.
    fn connect_hint(&self, message: &str) -> &'static str {
        let tls = matches!(
            self.client.get_connection_info().addr,
            redis::ConnectionAddr::TcpTls { .. }
        );
        if tls && (message.contains("certificate") || message.contains("UnknownIssuer")) {
            "; the server's certificate is not trusted: set redis.ca to the PEM file of the authority that signed it"
        } else if !tls && !message.contains("refused") {
            "; a server that speaks TLS only needs a rediss:// URL"
        } else {
            ""
        }
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
