//! The static lookup cache in Redis: the sets `diamond_customers` and `bank_acb_payment`, a
//! hash `product:{id}` per product, and a version counter.
//!
//! A load builds every key under a temporary name, then renames them all into place in one
//! `MULTI`/`EXEC` with the version raised: a reader sees the old lookups or the new ones, never
//! a set half-filled. Recommenders check the version and reload their in-process copy when it
//! changed. Products are found with `SCAN`, never `KEYS`.
//!
//! On a Redis Cluster every lookup key carries the hash tag `{lookups}` (`{lookups}diamond_customers`,
//! `{lookups}product:CF01`…), so that the swap stays one `MULTI` in one slot. They are read
//! from the masters: with redis-rs' reads from replicas, a reader racing a load saw a mix of
//! two versions (the conformance case `a_reader_never_sees_half_published_lookups` on the
//! cluster), as the commands of one read do not all go to one node.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use brewline_core::suggestion::{Lookups, ProductInfo};
use brewline_ports::{LookupStore, PortError, Result};
use redis::Value;

use crate::{Connection, RedisConfig, ENGINE};

/// Temporary keys live this long if a load dies before renaming them.
const BUILDING_TTL: Duration = Duration::from_secs(600);
/// Raises the version to the next one or to ARGV[1] (the time in ms), whichever is higher.
const NEXT_VERSION: &str =
    "local v = math.max((tonumber(redis.call('GET', KEYS[1])) or 0) + 1, tonumber(ARGV[1])) \
    redis.call('SET', KEYS[1], v) return v";
/// Members per `SADD`.
const CHUNK: usize = 1000;

/// The lookup cache in the static database.
#[derive(Clone)]
pub struct RedisLookups {
    connection: Connection,
    /// The key names, each with the cluster's hash tag before it on a cluster.
    config: RedisConfig,
    /// `{lookups}` on a cluster, else nothing.
    tag: String,
}

impl RedisLookups {
    pub async fn connect(config: &RedisConfig) -> Result<RedisLookups> {
        let connection = Connection::open(&config.static_url, config).await?;
        let tag = connection.tag("lookups");
        let mut config = config.clone();
        for key in [
            &mut config.diamond_customers_key,
            &mut config.acb_payment_key,
            &mut config.product_key_prefix,
            &mut config.affinity_key,
            &mut config.lookups_version_key,
        ] {
            key.insert_str(0, &tag);
        }
        Ok(RedisLookups {
            connection,
            config,
            tag,
        })
    }

    /// Every key that starts with `prefix`, by `SCAN`.
    async fn scan(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .clone();
            let tag = &self.tag;
            let (next, batch): (u64, Vec<String>) = self
                .connection
                .call("listing product keys", async |c| c.at_tag(tag, &scan).await)
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    async fn current_version(&self) -> Result<u64> {
        let get = redis::cmd("GET")
            .arg(&self.config.lookups_version_key)
            .clone();
        let v: Option<u64> = self
            .connection
            .call("reading the lookups' version", async |c| {
                get.query_async(c).await
            })
            .await?;
        Ok(v.unwrap_or(0))
    }
}

fn decode<T: redis::FromRedisValue>(value: &Value, what: &str) -> Result<T> {
    redis::from_redis_value(value)
        .map_err(|e| PortError::fatal(ENGINE, format!("{what} is not what brewline writes: {e}")))
}

#[async_trait]
impl LookupStore for RedisLookups {
    async fn publish(&self, lookups: &Lookups) -> Result<u64> {
        let k = &self.config;
        let existing = self.scan(&k.product_key_prefix).await?;
        let nonce = format!("{}-{}", std::process::id(), brewline_ports::now_us());
        let building = |key: &str| format!("building:{nonce}:{key}");
        let ttl = BUILDING_TTL.as_secs() as i64;

        // Build every key under its temporary name.
        let mut build = redis::pipe();
        let sets = [
            (&k.diamond_customers_key, &lookups.diamond_customers),
            (&k.acb_payment_key, &lookups.acb_payment_methods),
        ];
        for (key, members) in sets {
            let mut sorted: Vec<i64> = members.iter().copied().collect();
            sorted.sort_unstable();
            for chunk in sorted.chunks(CHUNK) {
                build.sadd(building(key), chunk).ignore();
            }
            build.expire(building(key), ttl).ignore();
        }
        for (id, product) in &lookups.products {
            let key = format!("{}{id}", k.product_key_prefix);
            build
                .hset_multiple(
                    building(&key),
                    &[
                        ("name", product.name.clone()),
                        ("unit_price", product.unit_price.to_string()),
                    ],
                )
                .ignore()
                .expire(building(&key), ttl)
                .ignore();
        }
        let affinity = &lookups.affinity.related;
        if !affinity.is_empty() {
            let mut fields: Vec<(&String, String)> = Vec::with_capacity(affinity.len());
            for (product, related) in affinity {
                let json = serde_json::to_string(related).map_err(|e| {
                    PortError::fatal(ENGINE, format!("encoding the affinity of {product}: {e}"))
                })?;
                fields.push((product, json));
            }
            build
                .hset_multiple(building(&k.affinity_key), &fields)
                .ignore()
                .expire(building(&k.affinity_key), ttl)
                .ignore();
        }
        self.connection
            .call("building the lookups", async |c| {
                build.query_async::<()>(c).await
            })
            .await?;

        // Swap them all into place at once, drop products no longer on the menu, and say so.
        let mut swap = redis::pipe();
        swap.atomic();
        for (key, members) in sets {
            if members.is_empty() {
                swap.del(key).ignore();
            } else {
                swap.rename(building(key), key).ignore();
                swap.persist(key).ignore();
            }
        }
        if affinity.is_empty() {
            swap.del(&k.affinity_key).ignore();
        } else {
            swap.rename(building(&k.affinity_key), &k.affinity_key)
                .ignore();
            swap.persist(&k.affinity_key).ignore();
        }
        let mut fresh = Vec::with_capacity(lookups.products.len());
        for id in lookups.products.keys() {
            let key = format!("{}{id}", k.product_key_prefix);
            swap.rename(building(&key), &key).ignore();
            swap.persist(&key).ignore();
            fresh.push(key);
        }
        fresh.sort();
        for stale in existing.iter().filter(|e| fresh.binary_search(e).is_err()) {
            swap.del(stale).ignore();
        }
        // The next version, and never below the time: see `LookupStore::publish`.
        swap.cmd("EVAL")
            .arg(NEXT_VERSION)
            .arg(1)
            .arg(&k.lookups_version_key)
            .arg(brewline_ports::now_ms());
        let (version,): (u64,) = self
            .connection
            .call("swapping the lookups into place", async |c| {
                swap.query_async(c).await
            })
            .await?;
        Ok(version)
    }

    async fn version(&self) -> Result<u64> {
        self.current_version().await
    }

    async fn load(&self) -> Result<(Lookups, u64)> {
        let k = &self.config;
        // A load that swaps keys between the SCAN and the read shows as a new version: read again.
        for _ in 0..10 {
            let before = self.current_version().await?;
            let product_keys = self.scan(&k.product_key_prefix).await?;
            let mut read = redis::pipe();
            read.atomic()
                .get(&k.lookups_version_key)
                .smembers(&k.diamond_customers_key)
                .smembers(&k.acb_payment_key)
                .hgetall(&k.affinity_key);
            for key in &product_keys {
                read.hgetall(key);
            }
            // The version again last: a cluster's pipeline (and a replica's copy) need not be
            // one transaction, and a swap in the middle shows as a version moved on.
            read.get(&k.lookups_version_key);
            let values: Vec<Value> = self
                .connection
                .call("reading the lookups", async |c| read.query_async(c).await)
                .await?;
            let [version, diamond, acb, affinity, products @ .., version_after] = values.as_slice()
            else {
                return Err(PortError::fatal(ENGINE, "reading the lookups: short reply"));
            };
            let version: Option<u64> = decode(version, "the lookups' version")?;
            let version_after: Option<u64> = decode(version_after, "the lookups' version")?;
            let version = version.unwrap_or(0);
            if version != before || version_after.unwrap_or(0) != version {
                continue;
            }
            let mut lookups = Lookups {
                diamond_customers: decode(diamond, &k.diamond_customers_key)?,
                acb_payment_methods: decode(acb, &k.acb_payment_key)?,
                ..Lookups::default()
            };
            let affinity: HashMap<String, String> = decode(affinity, &k.affinity_key)?;
            for (product, json) in affinity {
                let related = serde_json::from_str(&json).map_err(|e| {
                    PortError::fatal(
                        ENGINE,
                        format!("{} {product}: {e}: publish the affinity again (`brewline batch publish-affinity`)", k.affinity_key),
                    )
                })?;
                lookups.affinity.related.insert(product, related);
            }
            let mut gone = false;
            for (key, value) in product_keys.iter().zip(products) {
                let mut fields: HashMap<String, String> = decode(value, key)?;
                if fields.is_empty() {
                    // Listed, then swapped away before the read (or, read from a replica, not
                    // there yet): another version is on its way.
                    gone = true;
                    break;
                }
                let (Some(name), Some(price)) = (fields.remove("name"), fields.get("unit_price"))
                else {
                    return Err(PortError::fatal(
                        ENGINE,
                        format!("{key} lacks `name` or `unit_price`: load the cache again (`brewline cache load`)"),
                    ));
                };
                let unit_price = price.parse().map_err(|_| {
                    PortError::fatal(
                        ENGINE,
                        format!("{key}: unit_price {price:?} is not an integer"),
                    )
                })?;
                let id = key[k.product_key_prefix.len()..].to_string();
                lookups
                    .products
                    .insert(id, ProductInfo { name, unit_price });
            }
            if gone {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
            return Ok((lookups, version));
        }
        Err(PortError::retryable(
            ENGINE,
            "the lookups kept changing while being read",
        ))
    }
}
