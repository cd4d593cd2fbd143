//! The recommender's running counters: one Redis hash, raised with `HINCRBY`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use brewline_ports::{Counters, Result};
use redis::aio::ConnectionManager;

use crate::{connect, port_error, RedisConfig};

/// Counters in the hash `counters_key` of the dynamic database.
#[derive(Clone)]
pub struct RedisCounters {
    connection: ConnectionManager,
    key: String,
}

impl RedisCounters {
    pub async fn connect(config: &RedisConfig) -> Result<RedisCounters> {
        Ok(RedisCounters {
            connection: connect(&config.dynamic_url, config).await?,
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
        pipe.query_async::<()>(&mut self.connection.clone())
            .await
            .map_err(|e| port_error("raising counters", e))
    }

    async fn get(&self) -> Result<BTreeMap<String, u64>> {
        redis::cmd("HGETALL")
            .arg(&self.key)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| port_error("reading counters", e))
    }
}
