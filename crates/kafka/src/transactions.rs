//! Kafka transactions: a group member's output and its offsets committed as one (KIP-98), the
//! offsets fenced by the group's generation (KIP-447), so that a member that lost its
//! partitions cannot commit over the one that took them; or, for a writer that reads no topic
//! (a capture), its output alone, its position among that output ([`crate::KafkaPositions`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brewline_ports::{PortError, Progress, Record, Result, Transactions};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::consumer::Context;
use crate::producer::send_batched;
use crate::{client_config, port_error, KafkaConfig, ENGINE};

/// How long a transaction may stay open before the cluster aborts it: the longest a member
/// killed in the middle of one holds back readers of what is committed.
pub const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// How long one transactional call may take: the transaction timeout, after which the
/// cluster aborts the transaction anyway.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a transactional call is waited for before the producer is given up as stuck:
/// librdkafka does not always keep the timeout it is given (`send_offsets_to_transaction`
/// waits for ever while the group's coordinator is down: confluentinc/librdkafka#5456, seen
/// in the chaos test when a Kafka node was killed).
const STUCK_AFTER: Duration = Duration::from_secs(12);

/// How often a transaction whose sending failed in a way a retry may mend is made again
/// before the error is returned.
const SEND_TRIES: u32 = 5;

/// What a committed offset's metadata says: the next offset whose output is sent.
const SENT_THROUGH: &str = "brewline.sent_through=";

/// A member's transactional producer, beside its consumer.
pub struct KafkaTransactions {
    /// Made anew when it breaks (fenced after a coordinator moved, failed for good, or stuck
    /// in a call).
    producer: std::sync::Mutex<FutureProducer>,
    /// A call of the producer in use never returned: it is replaced before the next
    /// transaction.
    stuck: std::sync::atomic::AtomicBool,
    /// The member whose offsets are committed; `None` for a writer that reads no topic.
    consumer: Option<Arc<StreamConsumer<Context>>>,
    properties: std::collections::BTreeMap<String, String>,
}

/// What to do after a transactional call failed.
enum Failed {
    /// Call it again.
    Retry(PortError),
    /// Abort the transaction: nothing of it becomes visible.
    Abort(PortError),
    /// The producer cannot go on (fenced by a newer one with its id, or broken).
    Fatal(PortError),
}

fn failed(context: &str, e: KafkaError) -> Failed {
    let (retriable, abort, fatal) = match &e {
        KafkaError::Transaction(t) => (t.is_retriable(), t.txn_requires_abort(), t.is_fatal()),
        _ => (false, true, false),
    };
    let e = port_error(context, e);
    if fatal {
        Failed::Fatal(PortError::fatal(ENGINE, e.message))
    } else if retriable {
        Failed::Retry(e)
    } else if abort {
        Failed::Abort(e)
    } else {
        Failed::Fatal(PortError::fatal(ENGINE, e.message))
    }
}

impl KafkaTransactions {
    /// A transactional producer with `transactional_id` for the member `consumer`, its
    /// transactions initialised (which aborts any a predecessor with this id left open).
    pub(crate) async fn new(
        config: &KafkaConfig,
        consumer: Option<Arc<StreamConsumer<Context>>>,
        transactional_id: &str,
    ) -> Result<KafkaTransactions> {
        config.check().map_err(|e| PortError::fatal(ENGINE, e))?;
        let mut properties = config.producer_properties();
        properties.insert("transactional.id".into(), transactional_id.into());
        properties
            .entry("transaction.timeout.ms".into())
            .or_insert_with(|| TRANSACTION_TIMEOUT_MS.into());
        let producer = initialised(&properties).await?;
        Ok(KafkaTransactions {
            producer: std::sync::Mutex::new(producer),
            stuck: std::sync::atomic::AtomicBool::new(false),
            consumer,
            properties,
        })
    }

    /// The producer in use.
    fn producer(&self) -> FutureProducer {
        self.producer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Transactions of a writer that reads no topic: its output alone, committed as one
    /// (`progress` must be empty). Initialising them as `transactional_id` aborts whatever a
    /// predecessor with that id left open.
    pub async fn standalone(
        config: &KafkaConfig,
        transactional_id: &str,
    ) -> Result<KafkaTransactions> {
        KafkaTransactions::new(config, None, transactional_id).await
    }

    /// Replaces a producer that cannot go on by a new one with the same id, which aborts what
    /// the old one left open.
    async fn renew(&self) -> Result<()> {
        let producer = initialised(&self.properties).await?;
        *self
            .producer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = producer;
        Ok(())
    }

    /// Sends the output in the open transaction, the records numbered in `alone` each in a
    /// request of its own; refused records fail it.
    async fn send(
        &self,
        producer: &FutureProducer,
        output: &[(&str, &[Record])],
        alone: &BTreeSet<usize>,
    ) -> Result<()> {
        let mut refused = Vec::new();
        let mut first = 0;
        for (topic, records) in output {
            refused.extend(send_batched(producer, topic, records, first, alone).await?);
            first += records.len();
            if !refused.is_empty() {
                // The transaction can only be aborted now: what follows would fail with an
                // erroneous state and hide the refusal. Refusals in the topics after it are
                // found when it is made again without these.
                break;
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        let topics: Vec<&str> = output.iter().map(|(t, _)| *t).collect();
        Err(PortError::refused(ENGINE, &topics.join(", "), refused))
    }

    /// Adds the progress to the open transaction and commits it, calling again what may be
    /// called again.
    async fn commit_progress(
        &self,
        producer: &FutureProducer,
        progress: &[Progress],
    ) -> std::result::Result<(), Failed> {
        if !progress.is_empty() {
            self.send_offsets(producer, progress).await?;
        }
        self.until_done("committing the transaction", || {
            let p = producer.clone();
            move || p.commit_transaction(CALL_TIMEOUT)
        })
        .await
    }

    /// Makes the transactional call `call()` gives (each on a thread of its own, [`blocking`])
    /// until it succeeds or fails in a way calling again would not mend.
    async fn until_done<F>(
        &self,
        context: &str,
        call: impl Fn() -> F,
    ) -> std::result::Result<(), Failed>
    where
        F: FnOnce() -> rdkafka::error::KafkaResult<()> + Send + 'static,
    {
        loop {
            let done = blocking(call()).await.map_err(|e| self.gave_up(e))?;
            match done.map_err(|e| failed(context, e)) {
                Ok(()) => return Ok(()),
                Err(Failed::Retry(e)) => tracing::warn!(error = %e, "trying again"),
                Err(other) => return Err(other),
            }
        }
    }

    /// Adds the member's progress to the open transaction.
    async fn send_offsets(
        &self,
        producer: &FutureProducer,
        progress: &[Progress],
    ) -> std::result::Result<(), Failed> {
        let mut offsets = TopicPartitionList::new();
        for p in progress {
            let mut e = offsets.add_partition(&p.topic, p.partition);
            e.set_offset(Offset::Offset(p.next))
                .map_err(|e| failed("committing offsets", e))?;
            e.set_metadata(format!("{SENT_THROUGH}{}", p.sent_through));
        }
        let group = self
            .consumer
            .as_ref()
            .and_then(|c| c.group_metadata())
            .ok_or_else(|| {
                Failed::Fatal(PortError::fatal(
                ENGINE,
                "a transaction commits offsets for a consumer group, and this consumer has none",
            ))
            })?;
        let group = Arc::new(group);
        let offsets = Arc::new(offsets);
        self.until_done("adding the offsets to the transaction", || {
            let (p, o, g) = (producer.clone(), offsets.clone(), group.clone());
            move || p.send_offsets_to_transaction(&o, &g, CALL_TIMEOUT)
        })
        .await
    }

    /// A call that failed to run or never returned: the producer is to be replaced (a stuck
    /// one has its transaction aborted by the cluster, or fenced by its successor).
    fn gave_up(&self, e: PortError) -> Failed {
        if e.aborted {
            tracing::warn!(error = %e, "a transactional call is stuck; replacing the producer");
            self.stuck.store(true, std::sync::atomic::Ordering::SeqCst);
            Failed::Abort(e)
        } else {
            Failed::Fatal(e)
        }
    }

    /// Aborts the open transaction; `why` is the error returned.
    async fn abort(&self, producer: &FutureProducer, why: PortError) -> PortError {
        loop {
            let p = producer.clone();
            let aborted = match blocking(move || p.abort_transaction(CALL_TIMEOUT)).await {
                Ok(aborted) => aborted,
                Err(e) => {
                    let _ = self.gave_up(e);
                    return why;
                }
            };
            match aborted.map_err(|e| failed("aborting the transaction", e)) {
                Ok(()) => {
                    tracing::warn!(error = %why, "transaction aborted; nothing of it is visible");
                    return why;
                }
                Err(Failed::Retry(e)) => tracing::warn!(error = %e, "trying again"),
                Err(Failed::Abort(e) | Failed::Fatal(e)) => {
                    return PortError::fatal(ENGINE, format!("{why}; then {e}"))
                }
            }
        }
    }
}

/// A transactional producer with `properties`, its transactions initialised.
async fn initialised(
    properties: &std::collections::BTreeMap<String, String>,
) -> Result<FutureProducer> {
    let producer: FutureProducer = client_config(properties)
        .create()
        .map_err(|e| port_error("creating the transactional producer", e))?;
    let p = producer.clone();
    let id = properties
        .get("transactional.id")
        .cloned()
        .unwrap_or_default();
    blocking(move || p.init_transactions(CALL_TIMEOUT))
        .await?
        .map_err(|e| {
            port_error(
                &format!("initialising transactions as {id} (the cluster must allow them: Kafka 2.5 or later, and the principal needs WRITE and DESCRIBE on this transactional id)"),
                e,
            )
        })?;
    Ok(producer)
}

/// Runs a blocking librdkafka call on a thread of its own, waiting at most [`STUCK_AFTER`]:
/// past that the call is left to itself (its thread detached, so that it holds up neither
/// the worker nor the process's exit) and [`PortError::aborted`] returned.
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rdk:txn-call".into())
        .spawn(move || {
            let _ = done.send(call());
        })
        .map_err(|e| PortError::fatal(ENGINE, format!("starting a transactional call: {e}")))?;
    match tokio::time::timeout(STUCK_AFTER, result).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(PortError::fatal(ENGINE, "a transactional call failed")),
        Err(_) => Err(PortError::aborted(
            ENGINE,
            format!("a transactional call did not return within {STUCK_AFTER:?} (librdkafka#5456); the producer is replaced"),
        )),
    }
}

impl KafkaTransactions {
    /// One batch's output and progress, with `producer`.
    async fn attempt(
        &self,
        producer: &FutureProducer,
        output: &[(&str, &[Record])],
        progress: &[Progress],
    ) -> Result<()> {
        // The broker refuses a whole batch when one of its records is too large: those of a
        // refused batch are sent again each alone, in a new transaction, so that only the
        // guilty ones are reported.
        let mut alone = BTreeSet::new();
        let mut tries = 0;
        loop {
            tries += 1;
            producer
                .begin_transaction()
                .map_err(|e| port_error("beginning a transaction", e))?;
            match self.send(producer, output, &alone).await {
                Ok(()) => break,
                Err(e)
                    if e.refused.iter().any(|r| !alone.contains(&r.index))
                        && e.refused.len() > 1 =>
                {
                    alone.extend(e.refused.iter().map(|r| r.index));
                    let e = self.abort(producer, e).await;
                    if !e.refused.is_empty() {
                        continue;
                    }
                    return Err(e);
                }
                // A record purged while the producer starts a new epoch after an aborted
                // transaction: the transaction is made again.
                Err(e) if e.retryable && tries < SEND_TRIES => {
                    tracing::warn!(error = %e, "sending in a transaction failed; making it again");
                    let e = self.abort(producer, e).await;
                    if !e.retryable {
                        return Err(e);
                    }
                }
                Err(e) => return Err(self.abort(producer, e).await),
            }
        }
        match self.commit_progress(producer, progress).await {
            Ok(()) => Ok(()),
            Err(Failed::Abort(e) | Failed::Retry(e)) => {
                let e = PortError::aborted(ENGINE, e.message);
                if self.stuck.load(std::sync::atomic::Ordering::SeqCst) {
                    // Another call would wait as long: its successor aborts the transaction.
                    return Err(e);
                }
                Err(self.abort(producer, e).await)
            }
            Err(Failed::Fatal(e)) => Err(e),
        }
    }
}

#[async_trait]
impl Transactions for KafkaTransactions {
    async fn commit(&self, output: &[(&str, &[Record])], progress: &[Progress]) -> Result<()> {
        if self.stuck.load(std::sync::atomic::Ordering::SeqCst) {
            // Its successor, with the same id, fences it and aborts its open transaction.
            self.renew().await?;
            self.stuck.store(false, std::sync::atomic::Ordering::SeqCst);
        }
        let producer = self.producer();
        let result = self.attempt(&producer, output, progress).await;
        let Some((_, broken)) = producer.client().fatal_error() else {
            return result;
        };
        // Fenced (its epoch bumped while a coordinator moved) or broken for good: nothing of
        // its open transaction becomes visible; a new producer goes on from the committed
        // offsets.
        tracing::warn!(error = %broken, "the transactional producer cannot go on; making a new one");
        self.renew().await?;
        Err(PortError::aborted(
            ENGINE,
            format!("the transactional producer was made anew after: {broken}"),
        ))
    }

    async fn sent_through(&self, partitions: &[(String, i32)]) -> Result<Vec<i64>> {
        let mut asked = TopicPartitionList::new();
        for (topic, partition) in partitions {
            asked.add_partition(topic, *partition);
        }
        let Some(consumer) = self.consumer.clone() else {
            return Err(PortError::fatal(
                ENGINE,
                "a writer without a consumer group commits no offsets",
            ));
        };
        let committed = blocking(move || consumer.committed_offsets(asked, CALL_TIMEOUT))
            .await?
            .map_err(|e| port_error("reading the committed offsets", e))?;
        Ok(partitions
            .iter()
            .map(|(topic, partition)| {
                committed
                    .find_partition(topic, *partition)
                    .map_or(0, |e| sent_through(e.metadata(), e.offset()))
            })
            .collect())
    }
}

/// The next offset whose output is sent, from a committed offset and its metadata: the one the
/// metadata gives, else the offset itself (everything before it was sent), else 0.
fn sent_through(metadata: &str, offset: Offset) -> i64 {
    let committed = match offset {
        Offset::Offset(o) => o,
        _ => 0,
    };
    metadata
        .strip_prefix(SENT_THROUGH)
        .and_then(|n| n.parse::<i64>().ok())
        .map_or(committed, |sent| sent.max(committed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sent_mark_is_read_back_and_never_below_the_committed_offset() {
        assert_eq!(
            sent_through("brewline.sent_through=42", Offset::Offset(7)),
            42
        );
        assert_eq!(
            sent_through("brewline.sent_through=3", Offset::Offset(7)),
            7
        );
        assert_eq!(
            sent_through("", Offset::Offset(7)),
            7,
            "committed without a mark"
        );
        assert_eq!(sent_through("other", Offset::Offset(7)), 7);
        assert_eq!(sent_through("brewline.sent_through=x", Offset::Invalid), 0);
        assert_eq!(sent_through("", Offset::Invalid), 0, "nothing committed");
    }
}
