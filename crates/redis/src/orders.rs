//! Per-order state in Redis (the dynamic database), with the completion decided atomically.
//!
//! The rule of assembly is [`OrderState::apply`], the same code the embedded store runs and the
//! property tests check; Redis makes it atomic by compare-and-set. A batch reads the states of
//! its orders (`MGET`), applies its changes to them in Rust — making each suggestion as its
//! order completes — and writes them back with a Lua script that first checks that every state
//! is still the one read. If another worker changed one meanwhile (two workers around a
//! rebalance), nothing is written and the batch is applied again on fresh states. So an order
//! completes once, with one suggestion, whichever worker gets there; a redelivered completing
//! event finds the state that recorded its suggestion and repeats it.
//!
//! Where the original pipeline kept `ordered_products:{order}`, `message_count:{order}`, the
//! header and `order_status:{order}` as four keys changed by separate commands (which is how it
//! counted redelivered events twice), brewline keeps one value per order (the
//! [`OrderState`] in postcard, compact binary: 10 % faster than JSON in `bench --brokers`),
//! `order_state:{order}`, so that one atomic write moves all of it. Every write sets the TTL.
//! Open orders are also in a sorted set by expiry time, so that orders whose state expires
//! incomplete are counted once ([`OrderStore::expire`]) rather than vanishing.
//!
//! Every write checks the epoch (`order_state_epoch`), a value set when the state starts: a
//! database flushed or restarted without persistence has lost it, and the worker is told
//! ([`PortError::state_lost`]) to rebuild its state from the log.
//!
//! On a Redis Cluster the orders are spread over `redis.order_state_buckets` groups by the
//! CRC16 of their id; a group's keys carry its hash tag (`{o7}order_state:…`, `{o7}open_orders`,
//! `{o7}order_state_epoch`), so that its compare-and-set is one script in one slot, and a
//! batch runs one per group it touches, all at once. A group whose orders changed meanwhile
//! is applied again alone. Before a batch's outcome is handed back, `WAIT 1` on every master
//! makes sure its writes reached a replica: a master killed afterwards is replaced by a
//! replica that has them.

use std::time::Duration;

use async_trait::async_trait;
use brewline_core::assembly::{OrderState, Step};
use brewline_ports::{Applied, OrderStore, PortError, Result, Suggest};
use redis::Script;
use rustc_hash::FxHashMap;

use crate::{Connection, RedisConfig, ENGINE};

/// KEYS[1]: the open-orders set; KEYS[2]: the epoch; KEYS[3..]: the orders' state keys.
/// ARGV[1]: TTL (ms); ARGV[2]: expiry time of what is written (ms); ARGV[3]: the epoch this
/// handle knows; then per order: the state read ('' = none), the new state, '1' if the order
/// is still open (its expiry is moved), '0' if it was open in the set and no longer is, '-' if
/// neither, the order id. Returns 0 when written, -1 when the epoch is not the one known (the
/// state was lost: nothing written), else the number of the first order whose state changed
/// since it was read.
const COMPARE_AND_SET: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[3] then
  return -1
end
local n = #KEYS - 2
for i = 1, n do
  local current = redis.call('GET', KEYS[i + 2]) or ''
  if current ~= ARGV[4 + (i - 1) * 4] then
    return i
  end
end
for i = 1, n do
  local at = 4 + (i - 1) * 4
  redis.call('SET', KEYS[i + 2], ARGV[at + 1], 'PX', ARGV[1])
  local open = ARGV[at + 2]
  if open == '1' then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[at + 3])
  elseif open == '0' then
    redis.call('ZREM', KEYS[1], ARGV[at + 3])
  end
end
return 0
";

/// KEYS[1]: the open-orders set; ARGV[1]: now (ms). Takes out and returns the orders whose
/// state has expired while open: each is returned once, whichever worker sweeps.
const TAKE_EXPIRED: &str = r"
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
end
return expired
";

/// Attempts of one batch before giving up (each lost to another worker's write).
const ATTEMPTS: usize = 20;

/// How long a batch waits for its writes to reach a replica on a cluster; past it the batch
/// goes on (a master with no replica left cannot say more) and the wait is reported.
const REPLICATED_WITHIN_MS: u64 = 200;

/// Per-order state in the dynamic database. Each handle (each clone) knows the epoch of the
/// state it wrote, so that every worker finds out on its own that the state was lost.
pub struct RedisOrders {
    connection: Connection,
    prefix: String,
    open_orders: String,
    epoch_key: String,
    /// Each group's hash tag: one group with none on one Redis (the key names as configured).
    tags: Vec<String>,
    /// Per group, the epoch this handle's writes belong to.
    epochs: std::sync::Mutex<Vec<String>>,
    ttl: Duration,
    compare_and_set: Script,
    take_expired: Script,
    /// Whether the last wait for replicas saw every master's writes reach one.
    replicated: std::sync::atomic::AtomicBool,
}

impl Clone for RedisOrders {
    fn clone(&self) -> RedisOrders {
        RedisOrders {
            connection: self.connection.clone(),
            prefix: self.prefix.clone(),
            open_orders: self.open_orders.clone(),
            epoch_key: self.epoch_key.clone(),
            tags: self.tags.clone(),
            epochs: std::sync::Mutex::new(self.known_epochs()),
            ttl: self.ttl,
            compare_and_set: self.compare_and_set.clone(),
            take_expired: self.take_expired.clone(),
            replicated: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

/// The orders of a batch in one group: their changes, and where each stands in the batch.
struct Group<'a> {
    group: usize,
    changes: Vec<&'a Applied>,
    at: Vec<usize>,
}

impl RedisOrders {
    /// Connects to the dynamic database; order state lives for `ttl` after its last change.
    pub async fn connect(config: &RedisConfig, ttl: Duration) -> Result<RedisOrders> {
        let connection = Connection::open(&config.dynamic_url, config).await?;
        let groups = if connection.cluster() {
            usize::from(config.order_state_buckets.max(1))
        } else {
            1
        };
        let tags = (0..groups)
            .map(|g| match groups {
                1 => String::new(),
                _ => connection.tag(&format!("o{g}")),
            })
            .collect();
        let orders = RedisOrders {
            connection,
            prefix: config.order_state_prefix.clone(),
            open_orders: config.open_orders_key.clone(),
            epoch_key: config.order_state_epoch_key.clone(),
            tags,
            epochs: std::sync::Mutex::new(vec![String::new(); groups]),
            ttl,
            compare_and_set: Script::new(COMPARE_AND_SET),
            take_expired: Script::new(TAKE_EXPIRED),
            replicated: std::sync::atomic::AtomicBool::new(true),
        };
        let all: Vec<usize> = (0..groups).collect();
        futures_util::future::try_join_all(all.into_iter().map(|g| orders.join_epoch(g))).await?;
        Ok(orders)
    }

    fn known_epochs(&self) -> Vec<String> {
        self.epochs.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn known_epoch(&self, group: usize) -> String {
        self.known_epochs().get(group).cloned().unwrap_or_default()
    }

    /// Starts the epoch of `group` if there is none (a new or emptied database) and makes it
    /// this handle's.
    async fn join_epoch(&self, group: usize) -> Result<()> {
        let fresh = format!("{}-{}", std::process::id(), brewline_ports::now_us());
        let key = self.epoch_key(group);
        let set = redis::cmd("SET").arg(&key).arg(&fresh).arg("NX").clone();
        let get = redis::cmd("GET").arg(&key).clone();
        let epoch: String = self
            .connection
            .call("starting the order state's epoch", async |c| {
                let _: Option<String> = set.query_async(c).await?;
                get.query_async(c).await
            })
            .await?;
        if let Ok(mut epochs) = self.epochs.lock() {
            if let Some(e) = epochs.get_mut(group) {
                *e = epoch;
            }
        }
        Ok(())
    }

    /// The group of an order: by the CRC16 of its id, stable across processes and versions.
    fn group(&self, order_id: &str) -> usize {
        match self.tags.len() {
            0 | 1 => 0,
            n => usize::from(crate::crc16(order_id.as_bytes())) % n,
        }
    }

    fn tag(&self, group: usize) -> &str {
        self.tags.get(group).map_or("", String::as_str)
    }

    fn key(&self, order_id: &str) -> String {
        let tag = self.tag(self.group(order_id));
        format!("{tag}{}{order_id}", self.prefix)
    }

    fn open_orders_key(&self, group: usize) -> String {
        format!("{}{}", self.tag(group), self.open_orders)
    }

    fn epoch_key(&self, group: usize) -> String {
        format!("{}{}", self.tag(group), self.epoch_key)
    }

    /// The changes of a batch by group, in the batch's order within each.
    fn groups<'a>(&self, changes: &'a [Applied]) -> Vec<Group<'a>> {
        let mut groups: Vec<Group<'a>> = Vec::new();
        let mut index: FxHashMap<usize, usize> = FxHashMap::default();
        for (at, a) in changes.iter().enumerate() {
            let group = self.group(a.change.order_id());
            let i = *index.entry(group).or_insert_with(|| {
                groups.push(Group {
                    group,
                    changes: Vec::new(),
                    at: Vec::new(),
                });
                groups.len() - 1
            });
            groups[i].changes.push(a);
            groups[i].at.push(at);
        }
        groups
    }

    /// On a cluster, waits until every master's writes so far reached a replica (at most
    /// [`REPLICATED_WITHIN_MS`]); says so when one did not, and again when all do.
    async fn wait_for_replicas(&self) -> Result<()> {
        if !self.connection.cluster() {
            return Ok(());
        }
        let wait = redis::cmd("WAIT").arg(1).arg(REPLICATED_WITHIN_MS).clone();
        let replicas: i64 = self
            .connection
            .call("waiting for replicas", async |c| wait.query_async(c).await)
            .await?;
        let now = replicas >= 1;
        let before = self
            .replicated
            .swap(now, std::sync::atomic::Ordering::Relaxed);
        if before && !now {
            tracing::warn!(
                within_ms = REPLICATED_WITHIN_MS,
                "a master of the cluster has no replica that took its writes: a failover of it now may lose order state (then rebuilt from the log)"
            );
        } else if now && !before {
            tracing::info!("every master's writes reach a replica again");
        }
        Ok(())
    }

    /// The key of an order's state (for checks and tests): `order_state:{order}`, with its
    /// group's hash tag before it on a cluster.
    pub fn state_key(&self, order_id: &str) -> String {
        self.key(order_id)
    }

    /// The state of one order, if it has not expired (for checks and tests).
    pub async fn order(&self, order_id: &str) -> Result<Option<OrderState>> {
        let get = redis::cmd("GET").arg(self.key(order_id)).clone();
        let value: Option<Vec<u8>> = self
            .connection
            .call("reading order state", async |c| get.query_async(c).await)
            .await?;
        value.map(|v| parse(&self.key(order_id), &v)).transpose()
    }

    /// One attempt at the changes of one group: `Ok(None)` when another worker changed one
    /// of its orders meanwhile.
    async fn try_apply(
        &self,
        group: usize,
        changes: &[&Applied],
        suggest: Suggest<'_>,
    ) -> Result<Option<Vec<Step>>> {
        let mut ids: Vec<&str> = Vec::new();
        let mut index: FxHashMap<&str, usize> = FxHashMap::default();
        for a in changes {
            let id = a.change.order_id();
            index.entry(id).or_insert_with(|| {
                ids.push(id);
                ids.len() - 1
            });
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key(id)).collect();
        let mget = redis::cmd("MGET").arg(&keys).clone();
        let read: Vec<Option<Vec<u8>>> = self
            .connection
            .call("reading order state", async |c| mget.query_async(c).await)
            .await?;
        let mut states = Vec::with_capacity(ids.len());
        for (key, value) in keys.iter().zip(&read) {
            states.push(match value {
                Some(v) => parse(key, v)?,
                None => OrderState::default(),
            });
        }
        // Orders in the open set before this batch: only they need taking out of it.
        let was_open: Vec<bool> = read
            .iter()
            .zip(&states)
            .map(|(r, s)| r.is_some() && s.is_open())
            .collect();
        let steps: Vec<Step> = changes
            .iter()
            .map(|a| states[index[a.change.order_id()]].apply(&a.change, &a.at, suggest))
            .collect();
        let now = brewline_ports::now_ms();
        let ttl_ms = self.ttl.as_millis() as u64;
        let mut call = self.compare_and_set.prepare_invoke();
        call.key(self.open_orders_key(group))
            .key(self.epoch_key(group))
            .arg(ttl_ms)
            .arg(now as u64 + ttl_ms)
            .arg(self.known_epoch(group));
        for (i, state) in states.iter().enumerate() {
            let new = postcard::to_allocvec(state)
                .map_err(|e| PortError::fatal(ENGINE, format!("cannot encode order state: {e}")))?;
            call.key(&keys[i])
                .arg(read[i].as_deref().unwrap_or(b""))
                .arg(new)
                .arg(match (state.is_open(), was_open[i]) {
                    (true, _) => "1",
                    (false, true) => "0",
                    (false, false) => "-",
                })
                .arg(ids[i]);
        }
        let lost: i64 = self
            .connection
            .call("writing order state", async |c| call.invoke_async(c).await)
            .await?;
        if lost < 0 {
            self.join_epoch(group).await?;
            return Err(PortError::state_lost(
                ENGINE,
                format!(
                    "the order state this worker wrote is gone ({} vanished or changed: the dynamic Redis was flushed, or restarted without persistence); rebuilding it from the log",
                    self.epoch_key(group)
                ),
            ));
        }
        Ok((lost == 0).then_some(steps))
    }
}

fn parse(key: &str, value: &[u8]) -> Result<OrderState> {
    postcard::from_bytes(value).map_err(|e| {
        PortError::fatal(
            ENGINE,
            format!("{key} does not hold an order state brewline wrote: {e}"),
        )
    })
}

#[async_trait]
impl OrderStore for RedisOrders {
    async fn apply(&self, changes: &[Applied], suggest: Suggest<'_>) -> Result<Vec<Step>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut steps: Vec<Option<Step>> = vec![None; changes.len()];
        let mut pending = self.groups(changes);
        for attempt in 1..=ATTEMPTS {
            let tries = pending
                .iter()
                .map(|g| self.try_apply(g.group, &g.changes, suggest));
            let outcomes = futures_util::future::join_all(tries).await;
            let mut again = Vec::new();
            for (group, outcome) in pending.into_iter().zip(outcomes) {
                match outcome? {
                    Some(done) => {
                        for (at, step) in group.at.iter().zip(done) {
                            steps[*at] = Some(step);
                        }
                    }
                    None => again.push(group),
                }
            }
            if again.is_empty() {
                self.wait_for_replicas().await?;
                return Ok(steps.into_iter().flatten().collect());
            }
            tracing::debug!(
                attempt,
                "another worker changed these orders meanwhile; applying again"
            );
            pending = again;
        }
        Err(PortError::retryable(
            ENGINE,
            format!("order state kept changing under this batch ({ATTEMPTS} attempts): are two workers reading the same partitions?"),
        ))
    }

    async fn expire(&self) -> Result<Vec<String>> {
        let now = brewline_ports::now_ms();
        let sweeps = (0..self.tags.len()).map(|group| async move {
            let mut sweep = self.take_expired.key(self.open_orders_key(group));
            sweep.arg(now);
            self.connection
                .call("sweeping expired orders", async |c| {
                    sweep.invoke_async::<Vec<String>>(c).await
                })
                .await
        });
        let mut expired: Vec<String> = futures_util::future::try_join_all(sweeps)
            .await?
            .into_iter()
            .flatten()
            .collect();
        expired.sort();
        Ok(expired)
    }
}
