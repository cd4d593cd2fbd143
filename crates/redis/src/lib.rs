//! brewline's ports on Redis, through redis-rs: the static lookup cache ([`RedisLookups`], the
//! original `lookup_data_cache`), per-order state ([`RedisOrders`]) and the running counters
//! ([`RedisCounters`]), in the two databases SPEC.md names.
//!
//! Each store holds a [`Connection`]: multiplexed, pipelined, every call bounded by a timeout,
//! reconnecting after Redis restarts. A URL `redis+cluster://host:port,host:port` (or
//! `rediss+cluster://` over TLS) is a Redis Cluster: keys that change together carry one hash
//! tag, so that they live in one slot ([`Connection::tag`]). (redis-rs' `ConnectionManager` was tried first: after
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
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};

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

/// The authorities of `config.ca` for a TLS URL; none (the system's) when unset.
fn authorities(config: &RedisConfig, tls: bool) -> Result<Option<redis::TlsCertificates>> {
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
            Ok(Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            }))
        }
        (Some(_), false) => Err(PortError::fatal(
            ENGINE,
            "redis.ca is set but the URL is not rediss:// (or rediss+cluster://): connect over TLS, or unset redis.ca",
        )),
        (None, _) => Ok(None),
    }
}

/// A client of one Redis or of a cluster.
#[derive(Clone)]
enum Client {
    One(redis::Client),
    Cluster(ClusterClient),
}

/// The schemes of a cluster's URL.
const CLUSTER_SCHEMES: [(&str, &str); 2] = [
    ("redis+cluster://", "redis://"),
    ("rediss+cluster://", "rediss://"),
];

/// A client of `url`: over TLS for `rediss://` (and `rediss+cluster://`), trusting the
/// authorities of `config.ca` (else the system's). Also says where it connects (host:port, or
/// the cluster's nodes), for messages.
fn client(url: &str, config: &RedisConfig) -> Result<(Client, String)> {
    let not_a_url = |e: redis::RedisError| {
        PortError::fatal(
            ENGINE,
            format!("not a Redis URL ({e}); write it as redis://host:port/db, rediss://user:password@host:port/db over TLS, or redis+cluster://host:port,host:port for a cluster"),
        )
    };
    if let Some((scheme, node_scheme)) = CLUSTER_SCHEMES.iter().find(|(s, _)| url.starts_with(s)) {
        let rest = &url[scheme.len()..];
        let (login, nodes) = match rest.rsplit_once('@') {
            Some((login, nodes)) => (Some(login), nodes),
            None => (None, rest),
        };
        if nodes.contains('/') {
            return Err(PortError::fatal(
                ENGINE,
                format!("a Redis Cluster has no numbered databases: write the URL as {scheme}host:port,host:port without /db (the static and dynamic keys may share one cluster: their names differ)"),
            ));
        }
        let nodes: Vec<String> = nodes
            .split(',')
            .filter(|n| !n.is_empty())
            .map(|n| format!("{node_scheme}{n}"))
            .collect();
        if nodes.is_empty() {
            return Err(PortError::fatal(
                ENGINE,
                format!("{scheme} URL names no node: write {scheme}host:port,host:port"),
            ));
        }
        let mut builder = ClusterClient::builder(nodes.clone());
        if let Some(login) = login {
            let (user, password) = match login.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => ("", Some(login)),
            };
            if !user.is_empty() {
                builder = builder.username(user.to_string());
            }
            if let Some(password) = password {
                builder = builder.password(password.to_string());
            }
        }
        if let Some(certificates) = authorities(config, node_scheme.starts_with("rediss"))? {
            builder = builder.certs(certificates);
        }
        let timeout = Duration::from_millis(config.response_timeout_ms);
        let client = builder
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()
            .map_err(not_a_url)?;
        let address = nodes
            .iter()
            .map(|n| n.trim_start_matches(node_scheme))
            .collect::<Vec<_>>()
            .join(",");
        return Ok((Client::Cluster(client), address));
    }
    let client = match authorities(config, url.starts_with("rediss://"))? {
        Some(certificates) => redis::Client::build_with_tls(url, certificates),
        None => redis::Client::open(url),
    }
    .map_err(not_a_url)?;
    let address = client.get_connection_info().addr.to_string();
    Ok((Client::One(client), address))
}

/// A connection to one Redis or to a cluster, for the commands of [`Connection::call`].
#[derive(Clone)]
pub(crate) enum Link {
    One(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::One(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::One(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::One(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

impl Link {
    /// Runs `cmd` where the keys of hash tag `tag` live: on a cluster, on the master of its
    /// slot (for a command whose keys the client cannot see, such as `SCAN`).
    pub(crate) async fn at_tag<T: redis::FromRedisValue>(
        &mut self,
        tag: &str,
        cmd: &Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            Link::One(c) => cmd.query_async(c).await,
            Link::Cluster(c) => {
                let route = Route::new(slot(tag.as_bytes()), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value = c.route_command(cmd, routing).await?;
                redis::from_redis_value(&value)
            }
        }
    }
}

/// The cluster slot of a key: CRC16 (XMODEM) of its hash tag (what is between its first `{`
/// and the next `}`, when not empty) or of the whole key, modulo 16 384, as Redis computes it.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % 16_384
}

/// CRC16/XMODEM (polynomial 0x1021, initial 0), as Redis Cluster hashes keys.
pub(crate) fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A connection to one Redis database, multiplexed and pipelined. Every call is bounded by the
/// configured timeout; after a failure of the connection (or no answer in time) the next call
/// connects afresh, so a restarted Redis is picked up by the retry of the same call.
#[derive(Clone)]
pub(crate) struct Connection {
    client: Client,
    current: Arc<tokio::sync::Mutex<Option<Link>>>,
    timeout: Duration,
    /// host:port, for messages (the URL may hold a password).
    address: String,
}

impl Connection {
    /// Connects to `url` with the timeouts of `config`.
    pub(crate) async fn open(url: &str, config: &RedisConfig) -> Result<Connection> {
        let (client, address) = client(url, config)?;
        let connection = Connection {
            address,
            client,
            current: Arc::default(),
            timeout: Duration::from_millis(config.response_timeout_ms),
        };
        connection.get().await?;
        Ok(connection)
    }

    /// Whether this is a cluster.
    pub(crate) fn cluster(&self) -> bool {
        matches!(self.client, Client::Cluster(_))
    }

    /// The hash tag that puts keys of `group` in one slot on a cluster (`{group}`, written
    /// before their names); nothing on one Redis, whose key names stay as configured.
    pub(crate) fn tag(&self, group: &str) -> String {
        if self.cluster() {
            format!("{{{group}}}")
        } else {
            String::new()
        }
    }

    async fn get(&self) -> Result<Link> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let connected = match &self.client {
            Client::One(client) => client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Link::One),
            Client::Cluster(client) => client.get_async_connection().await.map(Link::Cluster),
        };
        let c = connected.map_err(|e| {
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
        let tls = match &self.client {
            Client::One(client) => matches!(
                client.get_connection_info().addr,
                redis::ConnectionAddr::TcpTls { .. }
            ),
            Client::Cluster(_) => false,
        };
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
        call: impl AsyncFnOnce(&mut Link) -> redis::RedisResult<T>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_ones_redis_computes() {
        // CLUSTER KEYSLOT answers, and the check value of CRC16/XMODEM.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot(b"foo"), 12_182);
        assert_eq!(slot(b"bar"), 5_061);
        assert_eq!(slot(b"somekey"), 11_058);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"{o7}order_state:x"), slot(b"{o7}open_orders"));
        assert_eq!(
            slot(b"foo{}{bar}"),
            slot(b"foo{}{bar}"),
            "an empty tag: the whole key"
        );
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
    }

    #[test]
    fn cluster_urls_name_their_nodes_and_refuse_a_database() {
        let config = RedisConfig::default();
        let (made, address) =
            client("redis+cluster://u:p@127.0.0.1:7000,127.0.0.1:7001", &config).unwrap();
        assert!(matches!(made, Client::Cluster(_)));
        assert_eq!(
            address, "127.0.0.1:7000,127.0.0.1:7001",
            "no password in messages"
        );
        let err = client("redis+cluster://127.0.0.1:7000/1", &config)
            .err()
            .unwrap();
        assert!(err.message.contains("without /db"), "{err}");
        let err = client("redis+cluster://", &config).err().unwrap();
        assert!(err.message.contains("names no node"), "{err}");
        let (made, _) = client("redis://127.0.0.1:6379/1", &config).unwrap();
        assert!(matches!(made, Client::One(_)));
    }
}
