//! Dead letters: a record that cannot be handled goes to the dead-letter topic unchanged, with
//! where it was read and why in its headers (the convention of Kafka Connect's error handling),
//! and processing goes on.

use brewline_ports::{Consumed, Record};

/// Header with the reason the record was dead-lettered.
pub const REASON_HEADER: &str = "brewline.error.reason";
/// Header with the topic the record was read from.
pub const TOPIC_HEADER: &str = "brewline.error.topic";
/// Header with the partition the record was read from.
pub const PARTITION_HEADER: &str = "brewline.error.partition";
/// Header with the offset the record was read from.
pub const OFFSET_HEADER: &str = "brewline.error.offset";

/// The dead letter for `record`: its original key and bytes, and the reason.
pub fn dead_letter(record: &Consumed, reason: &str) -> Record {
    Record {
        key: record.record.key.clone(),
        value: record.record.value.clone(),
        headers: vec![
            (REASON_HEADER.into(), reason.as_bytes().to_vec()),
            (TOPIC_HEADER.into(), record.topic.as_bytes().to_vec()),
            (
                PARTITION_HEADER.into(),
                record.partition.to_string().into_bytes(),
            ),
            (OFFSET_HEADER.into(), record.offset.to_string().into_bytes()),
        ],
    }
}
