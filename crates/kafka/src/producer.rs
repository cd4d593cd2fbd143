//! The producer: idempotent, keyed with Kafka's own partitioner, and a `send` that returns
//! once every record is acknowledged.

use std::collections::VecDeque;

use async_trait::async_trait;
use brewline_ports::{PortError, Producer, Record, Refused, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::{client_config, port_error, KafkaConfig, ENGINE};

/// A producer on one cluster; cheap to share between tasks.
#[derive(Clone)]
pub struct KafkaProducer {
    producer: FutureProducer,
}

impl KafkaProducer {
    pub fn new(config: &KafkaConfig) -> Result<KafkaProducer> {
        let producer = client_config(&config.producer_properties())
            .create()
            .map_err(|e| port_error("creating the producer", e))?;
        Ok(KafkaProducer { producer })
    }
}

/// Whether the broker (or librdkafka before it) refused a record for what it is, which no retry
/// mends.
fn refuses_the_record(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// Waits for the delivery of the record at `index`: acknowledged, refused (added to
/// `refused`), or failed otherwise.
async fn delivered(
    (index, delivery): (usize, DeliveryFuture),
    topic: &str,
    refused: &mut Vec<Refused>,
) -> Result<()> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) if refuses_the_record(&e) => {
            refused.push(Refused {
                index,
                reason: e.to_string(),
            });
            Ok(())
        }
        Ok(Err((e, _))) => Err(port_error(&format!("delivering to {topic}"), e)),
        Err(_) => Err(PortError::retryable(
            ENGINE,
            format!("delivering to {topic}: the producer was closed"),
        )),
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, topic: &str, records: Vec<Record>) -> Result<()> {
        let mut pending: VecDeque<(usize, DeliveryFuture)> = VecDeque::with_capacity(records.len());
        let mut refused = Vec::new();
        for (index, r) in records.iter().enumerate() {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
            if let Some(key) = &r.key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = &r.value {
                record = record.payload(value.as_slice());
            }
            if !r.headers.is_empty() {
                let headers = r.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
                    h.insert(Header {
                        key: k,
                        value: Some(v),
                    })
                });
                record = record.headers(headers);
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push_back((index, delivery));
                        break;
                    }
                    // The local queue is full: wait for the oldest record in flight.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        match pending.pop_front() {
                            Some(oldest) => delivered(oldest, topic, &mut refused).await?,
                            None => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                        }
                    }
                    Err((e, _)) if refuses_the_record(&e) => {
                        refused.push(Refused {
                            index,
                            reason: e.to_string(),
                        });
                        break;
                    }
                    Err((e, _)) => return Err(port_error(&format!("sending to {topic}"), e)),
                }
            }
        }
        for delivery in pending {
            delivered(delivery, topic, &mut refused).await?;
        }
        if refused.is_empty() {
            Ok(())
        } else {
            refused.sort_by_key(|r| r.index);
            Err(PortError::refused(ENGINE, topic, refused))
        }
    }
}
