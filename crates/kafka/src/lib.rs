//! brewline's event log on Kafka, through rdkafka (librdkafka): an idempotent producer keyed
//! like Java clients, group consumers whose offsets brewline commits itself after the work
//! they cover, and topic creation. Only standard Kafka protocol and client settings are used,
//! so any Kafka-protocol broker works; what a broker needs differently is configuration
//! ([`KafkaConfig`]).

mod config;
pub mod connect;
mod consumer;
mod positions;
mod preflight;
mod producer;
mod security;
#[cfg(feature = "testing")]
pub mod testing;
mod transactions;

pub use config::{KafkaConfig, TransactionsMode};
pub use consumer::{records_in, KafkaConsumer};
pub use positions::KafkaPositions;
pub use preflight::preflight;
pub use producer::KafkaProducer;
pub use security::{KafkaSecurity, SaslMechanism, SecurityProtocol};
pub use transactions::{KafkaTransactions, TRANSACTION_TIMEOUT_MS};

use std::time::Duration;

use async_trait::async_trait;
use brewline_ports::{Consumer, EventLog, PortError, Producer, Result, Subscription};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientConfig;

const ENGINE: &str = "kafka";

/// A librdkafka client configuration from properties.
pub(crate) fn client_config(
    properties: &std::collections::BTreeMap<String, String>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// What the principal lacks when the cluster refuses it with `code`, if it is a refusal.
fn refused_for(code: RDKafkaErrorCode) -> Option<&'static str> {
    Some(match code {
        RDKafkaErrorCode::TopicAuthorizationFailed => "an ACL on the topic for this operation (READ to read it, WRITE to write it, DESCRIBE to see it)",
        RDKafkaErrorCode::GroupAuthorizationFailed => "an ACL allowing READ on the consumer group",
        RDKafkaErrorCode::TransactionalIdAuthorizationFailed => "an ACL allowing WRITE and DESCRIBE on its transactional id",
        RDKafkaErrorCode::ClusterAuthorizationFailed => "an ACL on the cluster for this operation",
        RDKafkaErrorCode::SaslAuthenticationFailed => "the right user name and password (kafka.security.username, BREWLINE_KAFKA__SECURITY__PASSWORD) and mechanism (kafka.security.sasl_mechanism)",
        _ => return None,
    })
}

/// A Kafka error as a port error: retryable unless it cannot mend by itself. A refusal by
/// the cluster's authorizer or authentication says what the principal lacks.
pub(crate) fn port_error(context: &str, e: KafkaError) -> PortError {
    let code = e.rdkafka_error_code();
    let refused = code.and_then(refused_for);
    let fatal = refused.is_some()
        || matches!(
            code,
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::InvalidConfig
                    | RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::Fatal
            )
        )
        || matches!(
            e,
            KafkaError::ClientConfig(..) | KafkaError::ClientCreation(..)
        );
    let message = match refused {
        Some(lacks) => {
            format!("{context}: {e}: the cluster refused the principal; it needs {lacks}")
        }
        None => format!("{context}: {e}"),
    };
    if fatal {
        PortError::fatal(ENGINE, message)
    } else {
        PortError::retryable(ENGINE, message)
    }
}

/// A Kafka cluster.
#[derive(Debug, Clone)]
pub struct KafkaLog {
    config: KafkaConfig,
}

impl KafkaLog {
    pub fn new(config: KafkaConfig) -> KafkaLog {
        KafkaLog { config }
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        self.create_topic_with(topic, partitions, &[]).await
    }

    fn producer(&self) -> Result<Box<dyn Producer>> {
        Ok(Box::new(KafkaProducer::new(&self.config)?))
    }

    async fn consumer(&self, subscription: Subscription) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(
            KafkaConsumer::new(&self.config, subscription).await?,
        ))
    }

    async fn partitions(&self, topic: &str) -> Result<i32> {
        consumer::partitions(&self.config, topic).await
    }

    async fn earliest(&self, topic: &str) -> Result<Vec<(i32, i64)>> {
        consumer::earliest(&self.config, topic).await
    }
}

impl KafkaLog {
    /// [`EventLog::create_topic`] with topic-level settings (`retention.ms` …) besides the
    /// replication brewline always sets; an existing topic is left as it is.
    pub async fn create_topic_with(
        &self,
        topic: &str,
        partitions: i32,
        settings: &[(&str, String)],
    ) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            client_config(&self.config.common_properties())
                .create()
                .map_err(|e| port_error("creating an admin client", e))?;
        let brokers = preflight(&self.config).await?;
        let (factor, min_insync) = self.config.replication(brokers);
        if factor as usize > brokers {
            return Err(PortError::fatal(
                ENGINE,
                format!("creating topic {topic}: kafka.replication_factor is {factor} but the cluster has {brokers} broker(s); lower it to at most {brokers}"),
            ));
        }
        let min_insync = min_insync.to_string();
        let new = settings.iter().fold(
            NewTopic::new(topic, partitions, TopicReplication::Fixed(factor))
                .set("min.insync.replicas", &min_insync),
            |t, (k, v)| t.set(k, v),
        );
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&new], &options)
            .await
            .map_err(|e| port_error(&format!("creating topic {topic}"), e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                // A principal without CREATE (a least-privilege one) is refused even a topic
                // that exists: that one is there to use.
                Err((name, RDKafkaErrorCode::TopicAuthorizationFailed))
                    if consumer::partitions(&self.config, &name).await.is_ok() => {}
                Err((name, RDKafkaErrorCode::TopicAuthorizationFailed)) => {
                    return Err(PortError::fatal(
                        ENGINE,
                        format!("creating topic {name}: the principal may not create topics: create it as an administrator (`brewline topics create`), or grant CREATE on it"),
                    ))
                }
                Err((name, code)) => {
                    return Err(PortError::fatal(
                        ENGINE,
                        format!("creating topic {name}: {code}"),
                    ))
                }
            }
        }
        Ok(())
    }
}
