//! The consumer: a member of a consumer group whose offsets brewline commits itself, or a
//! reader of every partition from the beginning.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use brewline_ports::{Consumed, Consumer, PortError, Record, Result, Subscription, Transactions};
use futures_util::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::transactions::KafkaTransactions;
use crate::{client_config, port_error, KafkaConfig, ENGINE};

/// Logs and counts rebalances, and keeps the consumer lag librdkafka reports in its
/// statistics.
#[derive(Default)]
pub struct Context {
    /// Records not yet committed in the assigned partitions; -1 until the first statistics.
    lag: AtomicI64,
    /// Partitions taken away or handed over so far ([`Consumer::assignments`]).
    assignments: AtomicU64,
    /// The low and high watermarks of each partition, as of the last statistics.
    watermarks: Mutex<HashMap<(String, i32), (i64, i64)>>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            // Partition -1 is librdkafka's internal one; a negative lag is not known yet.
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        self.lag.store(lag, Ordering::Relaxed);
        if let Ok(mut marks) = self.watermarks.lock() {
            for (topic, t) in &statistics.topics {
                for p in t.partitions.values() {
                    if p.partition >= 0 && p.lo_offset >= 0 && p.hi_offset >= 0 {
                        marks.insert((topic.clone(), p.partition), (p.lo_offset, p.hi_offset));
                    }
                }
            }
        }
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if !matches!(rebalance, Rebalance::Error(_)) {
            self.assignments.fetch_add(1, Ordering::SeqCst);
        }
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }
}

/// A consumer on one cluster.
pub struct KafkaConsumer {
    consumer: Arc<StreamConsumer<Context>>,
    /// Topic names, shared by every record read from the topic.
    topics: HashMap<String, Arc<str>>,
    /// Without a group: the next offset to read per assigned partition (`None`: its beginning,
    /// nothing read yet), from which `lag` counts what is left.
    /// Keyed by topic, then partition: a record's topic is looked up without copying it.
    positions: Option<HashMap<String, HashMap<i32, Option<i64>>>>,
    /// The member's output and progress written as one, when it writes in transactions.
    transactions: Option<KafkaTransactions>,
}

impl KafkaConsumer {
    /// Joins `subscription.group` and subscribes to its topics; without a group, reads every
    /// partition of the topics from the beginning (or `subscription.from`) and commits nothing.
    pub async fn new(config: &KafkaConfig, subscription: Subscription) -> Result<KafkaConsumer> {
        crate::preflight(config).await?;
        let mut properties = config.consumer_properties();
        // A reader without a group learns where the log ends from the statistics: often.
        let interval = if subscription.group.is_some() {
            "1000"
        } else {
            "100"
        };
        properties
            .entry("statistics.interval.ms".into())
            .or_insert_with(|| interval.into());
        let group = subscription.group.clone().unwrap_or_else(|| {
            format!(
                "brewline-reader-{}-{}",
                std::process::id(),
                brewline_ports::now_us()
            )
        });
        properties.insert("group.id".into(), group);
        let consumer: StreamConsumer<Context> = client_config(&properties)
            .create_with_context(Context {
                lag: AtomicI64::new(-1),
                ..Context::default()
            })
            .map_err(|e| port_error("creating the consumer", e))?;
        let consumer = Arc::new(consumer);
        let topics: Vec<&str> = subscription.topics.iter().map(String::as_str).collect();
        let mut positions = None;
        if subscription.group.is_some() {
            consumer
                .subscribe(&topics)
                .map_err(|e| port_error("subscribing", e))?;
        } else {
            let c = consumer.clone();
            let names: Vec<String> = subscription.topics.clone();
            let from: HashMap<(String, i32), i64> = subscription
                .from
                .iter()
                .map(|(t, p, o)| ((t.clone(), *p), *o))
                .collect();
            let assignment = tokio::task::spawn_blocking(move || {
                let mut tpl = TopicPartitionList::new();
                for topic in &names {
                    for p in 0..partitions_of(c.as_ref(), topic)? {
                        let offset = match from.get(&(topic.clone(), p)) {
                            Some(o) => Offset::Offset(*o),
                            None => Offset::Beginning,
                        };
                        tpl.add_partition_offset(topic, p, offset)
                            .map_err(|e| port_error("assigning partitions", e))?;
                    }
                }
                Ok(tpl)
            })
            .await
            .map_err(|e| PortError::fatal(ENGINE, format!("reading metadata: {e}")))??;
            consumer
                .assign(&assignment)
                .map_err(|e| port_error("assigning partitions", e))?;
            let mut assigned: HashMap<String, HashMap<i32, Option<i64>>> = HashMap::new();
            for e in assignment.elements() {
                let next = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                assigned
                    .entry(e.topic().to_string())
                    .or_default()
                    .insert(e.partition(), next);
            }
            positions = Some(assigned);
        }
        Ok(KafkaConsumer {
            consumer,
            topics: subscription
                .topics
                .iter()
                .map(|t| (t.clone(), Arc::from(t.as_str())))
                .collect(),
            positions,
            transactions: None,
        })
    }

    /// Makes this group member write its output and commit its offsets in Kafka transactions
    /// ([`brewline_ports::Transactions`]) as `transactional_id`, which no other live member
    /// may share: a member started again with the same id aborts what its predecessor left
    /// open at once, a new id waits for the cluster's transaction timeout.
    pub async fn use_transactions(
        &mut self,
        config: &KafkaConfig,
        transactional_id: &str,
    ) -> Result<()> {
        if self.positions.is_some() {
            return Err(PortError::fatal(
                ENGINE,
                "transactions commit a group's offsets, and this reader has no group",
            ));
        }
        let t =
            KafkaTransactions::new(config, Some(self.consumer.clone()), transactional_id).await?;
        self.transactions = Some(t);
        Ok(())
    }

    /// The topics read, for messages.
    fn topic_list(&self) -> String {
        let mut t: Vec<&str> = self.topics.keys().map(String::as_str).collect();
        t.sort_unstable();
        t.join(", ")
    }

    fn consumed(&mut self, m: &BorrowedMessage<'_>) -> Consumed {
        if let Some(positions) = &mut self.positions {
            if let Some(next) = positions
                .get_mut(m.topic())
                .and_then(|p| p.get_mut(&m.partition()))
            {
                *next = Some(m.offset() + 1);
            }
        }
        let topic = match self.topics.get(m.topic()) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = Arc::from(m.topic());
                self.topics.insert(m.topic().to_string(), t.clone());
                t
            }
        };
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Consumed {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
            record: Record {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
            },
        }
    }
}

/// How many partitions `topic` has, from the cluster's metadata (blocks).
fn partitions_of<C, K>(client: &K, topic: &str) -> Result<i32>
where
    C: ConsumerContext,
    K: rdkafka::consumer::Consumer<C>,
{
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| port_error(&format!("reading metadata of {topic}"), e))?;
    let n = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .sum::<usize>();
    if n == 0 {
        return Err(PortError::fatal(
            ENGINE,
            format!("topic {topic} does not exist"),
        ));
    }
    Ok(n as i32)
}

/// How many partitions `topic` has.
pub(crate) async fn partitions(config: &KafkaConfig, topic: &str) -> Result<i32> {
    let client: rdkafka::consumer::BaseConsumer = client_config(&config.common_properties())
        .create()
        .map_err(|e| port_error("creating a metadata client", e))?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || partitions_of(&client, &topic))
        .await
        .map_err(|e| PortError::fatal(ENGINE, format!("reading metadata: {e}")))?
}

/// How long reading a partition's watermarks is tried again while its leader is being elected
/// (a node died).
const WATERMARKS_PATIENCE: Duration = Duration::from_secs(60);

/// The low watermark of each partition of `topic`: its first offset not deleted. A partition
/// whose leader is down is asked again until another node leads it.
pub(crate) async fn earliest(config: &KafkaConfig, topic: &str) -> Result<Vec<(i32, i64)>> {
    let client: rdkafka::consumer::BaseConsumer = client_config(&config.common_properties())
        .create()
        .map_err(|e| port_error("creating a metadata client", e))?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + WATERMARKS_PATIENCE;
        let mut out = Vec::new();
        for p in 0..partitions_of(&client, &topic)? {
            loop {
                match client.fetch_watermarks(&topic, p, Duration::from_secs(10)) {
                    Ok((low, _)) => {
                        out.push((p, low));
                        break;
                    }
                    Err(e) => {
                        let e = port_error(&format!("reading the start of {topic}/{p}"), e);
                        if !e.retryable || std::time::Instant::now() >= deadline {
                            return Err(e);
                        }
                        tracing::warn!(error = %e, "asking again");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| PortError::fatal(ENGINE, format!("reading watermarks: {e}")))?
}

/// How many records the topics hold: the sum of their partitions' end offsets (a topic
/// never trimmed by retention; else the records ever written).
pub async fn records_in(config: &KafkaConfig, topics: &[String]) -> Result<i64> {
    let client: rdkafka::consumer::BaseConsumer = client_config(&config.common_properties())
        .create()
        .map_err(|e| port_error("creating a metadata client", e))?;
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut total = 0;
        for topic in &topics {
            for p in 0..partitions_of(&client, topic)? {
                let (_, high) = client
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .map_err(|e| port_error(&format!("reading the end of {topic}/{p}"), e))?;
                total += high;
            }
        }
        Ok(total)
    })
    .await
    .map_err(|e| PortError::fatal(ENGINE, format!("reading watermarks: {e}")))?
}

/// Commit failures that mean the partitions moved to another member: the records will be
/// delivered to it, which is at-least-once, not an error of this worker.
fn lost_partitions(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::AssignmentLost
                | RDKafkaErrorCode::State
        )
    )
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Consumed>> {
        let consumer = self.consumer.clone();
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        // The first record, waiting up to `wait`. librdkafka reports a broker it cannot reach
        // (a node down, a leader moving) as an error of the stream and goes on by itself with
        // the others: those are logged, not returned; what it cannot mend is.
        while out.is_empty() {
            let next = if wait.is_zero() {
                consumer.recv().now_or_never()
            } else {
                tokio::time::timeout_at(deadline, consumer.recv())
                    .await
                    .ok()
            };
            match next {
                None => return Ok(out),
                Some(Ok(m)) => out.push(self.consumed(&m)),
                Some(Err(e)) => {
                    let e = port_error(&format!("reading {}", self.topic_list()), e);
                    if !e.retryable {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "a broker is out of reach; reading on from the others");
                    if wait.is_zero() {
                        return Ok(out);
                    }
                }
            }
        }
        // Rebalances happen inside `recv`: records read before one are dropped (the member
        // reads its partitions again from the committed offsets after it).
        let mut since = self.assignments();
        while out.len() < max {
            let next = consumer.recv().now_or_never();
            if self.assignments() != since {
                since = self.assignments();
                out.clear();
            }
            match next {
                Some(Ok(m)) => out.push(self.consumed(&m)),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "reading failed; handing over what was read");
                    break;
                }
                None => break,
            }
        }
        Ok(out)
    }

    async fn commit(&mut self, next_offsets: &[(String, i32, i64)]) -> Result<()> {
        if next_offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in next_offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| port_error("committing", e))?;
        }
        let consumer = self.consumer.clone();
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
                .await
                .map_err(|e| PortError::fatal(ENGINE, format!("committing: {e}")))?;
        match committed {
            Ok(()) => Ok(()),
            Err(e) if lost_partitions(&e) => {
                tracing::warn!(error = %e, "not committed: the partitions went to another member, which reads these records again");
                Ok(())
            }
            Err(e) => Err(port_error("committing", e)),
        }
    }

    async fn rewind(&mut self) -> Result<()> {
        if self.positions.is_some() {
            return Err(PortError::fatal(
                ENGINE,
                "a reader without a group has no committed offsets to go back to",
            ));
        }
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            let committed = consumer
                .committed(Duration::from_secs(10))
                .map_err(|e| port_error("reading the committed offsets", e))?;
            let mut to = TopicPartitionList::new();
            for e in committed.elements() {
                let offset = match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ => Offset::Beginning,
                };
                to.add_partition_offset(e.topic(), e.partition(), offset)
                    .map_err(|e| port_error("rewinding", e))?;
            }
            if to.count() > 0 {
                consumer
                    .seek_partitions(to, Duration::from_secs(10))
                    .map_err(|e| port_error("rewinding to the committed offsets", e))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| PortError::fatal(ENGINE, format!("rewinding: {e}")))?
    }

    fn transactions(&self) -> Option<&dyn Transactions> {
        self.transactions.as_ref().map(|t| t as &dyn Transactions)
    }

    fn assignments(&self) -> u64 {
        self.consumer.context().assignments.load(Ordering::SeqCst)
    }

    async fn lag(&mut self) -> Result<u64> {
        let Some(positions) = &self.positions else {
            let lag = self.consumer.context().lag.load(Ordering::Relaxed);
            return Ok(lag.max(0) as u64);
        };
        // Without a group nothing is committed: the lag is the high watermark less the next
        // offset this reader reads. A partition whose watermarks are not known yet has an
        // unknown lag, counted as 1: not read to its end. A partition written in transactions
        // ends with a marker no record is read from: librdkafka's position steps over it.
        let stepped = self
            .consumer
            .position()
            .map_err(|e| port_error("reading the positions", e))?;
        let marks = self
            .consumer
            .context()
            .watermarks
            .lock()
            .map_err(|_| PortError::fatal(ENGINE, "watermarks lock poisoned"))?;
        let mut lag = 0u64;
        for (topic, partitions) in positions {
            for (partition, next) in partitions {
                let stepped = match stepped
                    .find_partition(topic, *partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                };
                let next = next.max(&stepped).unwrap_or(0);
                lag += match marks.get(&(topic.clone(), *partition)) {
                    None => 1,
                    Some(&(lo, hi)) => (hi - next.max(lo)).max(0) as u64,
                };
            }
        }
        Ok(lag)
    }
}
