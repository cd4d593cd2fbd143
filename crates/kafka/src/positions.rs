//! A capture's positions in a compacted topic, keyed by the capture's name, each written in the
//! Kafka transaction that carries the events before it (as Kafka Connect keeps the offsets of
//! exactly-once sources, KIP-618): a reader of committed records sees exactly the events
//! before the position a restarted capture resumes from, so a kill repeats none.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use brewline_ports::{
    position_record, CheckpointStore, Consumer, PortError, Result, Subscription, Transactions,
};

use crate::{KafkaConfig, KafkaConsumer, KafkaTransactions, ENGINE};

/// How long reading the positions to their end may take: a transaction a killed writer left
/// open holds readers of committed records back until the cluster aborts it.
const READ_FOR: Duration = Duration::from_secs(60);

/// Positions in a topic, written in transactions.
pub struct KafkaPositions {
    config: KafkaConfig,
    topic: String,
    transactions: KafkaTransactions,
}

impl KafkaPositions {
    /// The positions in `topic` (one partition, compacted: made by the caller), written as
    /// `transactional_id`: whatever a predecessor with that id left open is aborted first, so
    /// that what is read next is all that was committed.
    pub async fn open(
        config: &KafkaConfig,
        topic: &str,
        transactional_id: &str,
    ) -> Result<KafkaPositions> {
        let transactions = KafkaTransactions::standalone(config, transactional_id).await?;
        Ok(KafkaPositions {
            config: config.clone(),
            topic: topic.into(),
            transactions,
        })
    }

    /// The topic the positions are in.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The transactions that write events and their position as one.
    pub fn transactions(&self) -> &dyn Transactions {
        &self.transactions
    }
}

#[async_trait]
impl CheckpointStore for KafkaPositions {
    /// The last committed position under `name`: the topic read to its end.
    async fn load(&self, name: &str) -> Result<Option<String>> {
        // Only what was committed, whatever `kafka.consumer` says: a position of an aborted
        // transaction is after events no reader sees.
        let mut config = self.config.clone();
        config
            .consumer
            .insert("isolation.level".into(), "read_committed".into());
        let mut reader = KafkaConsumer::new(
            &config,
            Subscription {
                topics: vec![self.topic.clone()],
                ..Subscription::default()
            },
        )
        .await?;
        let deadline = Instant::now() + READ_FOR;
        let mut last = None;
        loop {
            let records = reader.poll(1000, Duration::from_millis(200)).await?;
            for r in &records {
                if r.record.key.as_deref() == Some(name.as_bytes()) {
                    last = r
                        .record
                        .value
                        .as_deref()
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                }
            }
            if records.is_empty() && reader.lag().await? == 0 {
                return Ok(last);
            }
            if Instant::now() > deadline {
                return Err(PortError::retryable(
                    ENGINE,
                    format!("reading the capture's positions in {}: not read to its end within {READ_FOR:?} (a transaction left open holds readers back until the cluster aborts it)", self.topic),
                ));
            }
        }
    }

    /// Writes `value` under `name` alone, in a transaction of its own.
    async fn save(&self, name: &str, value: &str) -> Result<()> {
        let record = [position_record(name, value)];
        self.transactions
            .commit(&[(self.topic.as_str(), &record)], &[])
            .await
    }
}
