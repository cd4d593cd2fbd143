//! The recommender's running counters: one Redis hash, raised with `HINCRBY`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use brewline_ports::{Counters, Result};

use crate::{Connection, RedisConfig};

/// Counters in the hash `counters_key` of the dynamic database.
#[derive(Clone)]
pub struct RedisCounters {
    connection: Connection,
    key: String,
}

impl RedisCounters {
    pub async fn connect(config: &RedisConfig) -> Result<RedisCounters> {
        Ok(RedisCounters {
            connection: Connection::open(&config.dynamic_url, config).await?,
            key: config.counters_key.clone(),
        })
    }
}

#[async_trait]
impl Counters for RedisCounters {
    async fn add(&self, deltas: &[(&str, u64)]) -> Result<()> {
        let mut pipe = redis::pipe();
        for (name, delta) in deltas.iter().filter(|(_, d)| *d > 0) {
            pipe.hincr(&self.key, *name, *delta).ignore();
        }
        self.connection
            .call("raising counters", async |c| {
                pipe.query_async::<()>(c).await
            })
            .await
    }

    async fn get(&self) -> Result<BTreeMap<String, u64>> {
        let cmd = redis::cmd("HGETALL").arg(&self.key).clone();
        self.connection
            .call("reading counters", async |c| cmd.query_async(c).await)
            .await
    }
}
