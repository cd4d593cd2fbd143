//! The recommender's running counters: one Redis hash, raised with `HINCRBY`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use brewline_ports::{Counted, Counters, Result};

use crate::{Connection, RedisConfig};

/// Counters in the hash `counters_key` of the dynamic database.
#[derive(Clone)]
pub struct RedisCounters {
    connection: Connection,
    key: String,
    add_counted: redis::Script,
}

impl RedisCounters {
    pub async fn connect(config: &RedisConfig) -> Result<RedisCounters> {
        Ok(RedisCounters {
            connection: Connection::open(&config.dynamic_url, config).await?,
            key: config.counters_key.clone(),
            add_counted: redis::Script::new(ADD_COUNTED),
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
        let mut all: BTreeMap<String, u64> = self
            .connection
            .call("reading counters", async |c| cmd.query_async(c).await)
            .await?;
        all.retain(|name, _| !name.starts_with(COUNTED_THROUGH));
        Ok(all)
    }

    async fn add_counted(
        &self,
        scope: &str,
        counts: &[Counted],
        through: &[(String, i32, i64)],
    ) -> Result<()> {
        if counts.is_empty() && through.is_empty() {
            return Ok(());
        }
        let field = |topic: &str, partition: i32| counted_field(scope, topic, partition);
        let mut call = self.add_counted.prepare_invoke();
        call.key(&self.key).arg(through.len());
        for (topic, partition, next) in through {
            call.arg(field(topic, *partition)).arg(*next);
        }
        for c in counts.iter().filter(|c| c.delta > 0) {
            call.arg(field(&c.at.topic, c.at.partition))
                .arg(c.at.offset)
                .arg(c.counter)
                .arg(c.delta);
        }
        self.connection
            .call("raising counters", async |c| {
                call.invoke_async::<i64>(c).await.map(drop)
            })
            .await
    }

    async fn counted_through(&self, scope: &str, partitions: &[(String, i32)]) -> Result<Vec<i64>> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&self.key);
        for (topic, p) in partitions {
            cmd.arg(counted_field(scope, topic, *p));
        }
        let got: Vec<Option<i64>> = self
            .connection
            .call("reading where counting got to", async |c| {
                cmd.query_async(c).await
            })
            .await?;
        Ok(got.into_iter().map(|n| n.unwrap_or(0)).collect())
    }
}

/// Fields of the counters' hash that hold the next offset counted of a partition (not
/// counters: [`Counters::get`] leaves them out).
const COUNTED_THROUGH: &str = "counted-through:";

fn counted_field(scope: &str, topic: &str, partition: i32) -> String {
    format!("{COUNTED_THROUGH}{scope}:{topic}:{partition}")
}

/// KEYS[1]: the counters' hash. ARGV[1]: the number of partitions the batch covers, then per
/// partition its field and the next offset the batch covers; then per count: its partition's
/// field, its record's offset, the counter and the delta. A count is added when its offset is
/// at or past the next offset counted before this call; each partition's next offset counted
/// then moves on to the batch's, never back.
const ADD_COUNTED: &str = r"
local h = KEYS[1]
local np = tonumber(ARGV[1])
local before = {}
local function counted(field)
  local n = before[field]
  if n == nil then
    n = tonumber(redis.call('HGET', h, field) or '0')
    before[field] = n
  end
  return n
end
for j = 0, np - 1 do
  counted(ARGV[2 + j * 2])
end
local i = 2 + np * 2
while i <= #ARGV do
  if tonumber(ARGV[i + 1]) >= counted(ARGV[i]) then
    redis.call('HINCRBY', h, ARGV[i + 2], ARGV[i + 3])
  end
  i = i + 4
end
for j = 0, np - 1 do
  local field = ARGV[2 + j * 2]
  local through = tonumber(ARGV[3 + j * 2])
  if through > before[field] then
    redis.call('HSET', h, field, through)
  end
end
return 0
";
