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
        config.check().map_err(|e| PortError::fatal(ENGINE, e))?;
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

/// The records in flight: each one's place among those sent and its delivery.
pub(crate) type InFlight = VecDeque<(usize, DeliveryFuture)>;

/// Hands `records` to librdkafka for `topic`, the i-th one numbered `first + i`: each goes in
/// flight, or to `refused` when librdkafka refuses it at once for what it is. When the local
/// queue is full, waits for the oldest record in flight.
pub(crate) async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    records: &[Record],
    first: usize,
    pending: &mut InFlight,
    refused: &mut Vec<Refused>,
) -> Result<()> {
    for (i, r) in records.iter().enumerate() {
        let index = first + i;
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
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push_back((index, delivery));
                    break;
                }
                // The local queue is full: wait for the oldest record in flight.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    match pending.pop_front() {
                        Some(oldest) => delivered(oldest, topic, refused).await?,
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
    Ok(())
}

/// Sends the records numbered in `only`, each alone; returns those refused.
async fn send_only(
    producer: &FutureProducer,
    topic: &str,
    records: &[Record],
    only: &std::collections::BTreeSet<usize>,
) -> Result<Vec<Refused>> {
    let none = std::collections::BTreeSet::new();
    let mut refused = Vec::new();
    for &i in only {
        if let Some(record) = records.get(i) {
            let one = std::slice::from_ref(record);
            refused.extend(send_batched(producer, topic, one, i, &none).await?);
        }
    }
    Ok(refused)
}

/// Waits for every record in flight: an error for the first that failed other than by being
/// refused; the refused ones are added to `refused`, in their order.
pub(crate) async fn drain(
    pending: InFlight,
    topic: &str,
    refused: &mut Vec<Refused>,
) -> Result<()> {
    for delivery in pending {
        delivered(delivery, topic, refused).await?;
    }
    refused.sort_by_key(|r| r.index);
    Ok(())
}

/// Sends `records` to `topic`, those numbered in `alone` each in a request of its own (the
/// broker refuses a whole batch when one of its records is too large: sent alone, only that
/// one is refused). Returns the refused ones, their indexes offset by `first`.
pub(crate) async fn send_batched(
    producer: &FutureProducer,
    topic: &str,
    records: &[Record],
    first: usize,
    alone: &std::collections::BTreeSet<usize>,
) -> Result<Vec<Refused>> {
    let mut refused = Vec::new();
    let mut pending = InFlight::with_capacity(records.len());
    let mut from = 0;
    for (i, _) in records.iter().enumerate() {
        if !alone.contains(&(first + i)) {
            continue;
        }
        enqueue(
            producer,
            topic,
            &records[from..i],
            first + from,
            &mut pending,
            &mut refused,
        )
        .await?;
        drain(std::mem::take(&mut pending), topic, &mut refused).await?;
        enqueue(
            producer,
            topic,
            &records[i..=i],
            first + i,
            &mut pending,
            &mut refused,
        )
        .await?;
        drain(std::mem::take(&mut pending), topic, &mut refused).await?;
        from = i + 1;
    }
    enqueue(
        producer,
        topic,
        &records[from..],
        first + from,
        &mut pending,
        &mut refused,
    )
    .await?;
    drain(pending, topic, &mut refused).await?;
    refused.sort_by_key(|r| r.index);
    Ok(refused)
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, topic: &str, records: Vec<Record>) -> Result<()> {
        let none = std::collections::BTreeSet::new();
        let mut refused = send_batched(&self.producer, topic, &records, 0, &none).await?;
        if refused.len() > 1 {
            // A batch refused whole: its records again, each alone; only the guilty ones fail.
            let suspects = refused.iter().map(|r| r.index).collect();
            refused = send_only(&self.producer, topic, &records, &suspects).await?;
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(PortError::refused(ENGINE, topic, refused))
        }
    }
}
