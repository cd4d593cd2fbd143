//! Dead letters: a record that cannot be handled goes to the dead-letter topic unchanged, with
//! where it was read and why in its headers (the convention of Kafka Connect's error handling),
//! and processing goes on. A record the log refuses for what it is (too large) is
//! dead-lettered too, cut short, with the topic it was for and where it came from.

use brewline_ports::{Consumed, Producer, Record, Result};

use crate::with_retries;

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

/// Header with the length in bytes of the value a dead letter cut short.
pub const TRUNCATED_HEADER: &str = "brewline.error.truncated";
/// Header with where a record the log refused came from, when it was never read from a topic
/// (a captured change: its binlog position).
pub const SOURCE_HEADER: &str = "brewline.error.source";
/// The most of a refused record's value its dead letter keeps.
pub const MAX_DEAD_LETTER_VALUE: usize = 64 * 1024;

/// The dead letter for `record`, which the log refused to take into `topic` for `reason`:
/// its key, its value cut to [`MAX_DEAD_LETTER_VALUE`] (the original length in a header), the
/// topic it was for, and where it came from (`origin` headers). A dead letter refused in its
/// turn keeps the headers that say where it was read.
pub fn refused_letter(
    topic: &str,
    record: &Record,
    reason: &str,
    origin: Vec<(String, Vec<u8>)>,
) -> Record {
    let is_letter = record.headers.iter().any(|(k, _)| k == TOPIC_HEADER);
    let mut headers = if is_letter {
        record.headers.clone()
    } else {
        let mut h = vec![
            (REASON_HEADER.into(), reason.as_bytes().to_vec()),
            (TOPIC_HEADER.into(), topic.as_bytes().to_vec()),
        ];
        h.extend(origin);
        h
    };
    let value = record.value.as_ref().map(|v| {
        if v.len() > MAX_DEAD_LETTER_VALUE {
            headers.push((TRUNCATED_HEADER.into(), v.len().to_string().into_bytes()));
            v[..MAX_DEAD_LETTER_VALUE].to_vec()
        } else {
            v.clone()
        }
    });
    Record {
        key: record.key.clone(),
        value,
        headers,
    }
}

/// Sends `records` to `topic` (retrying what a retry may mend); the records the log refuses for
/// what they are go to `dead_letter_topic` instead ([`refused_letter`], `origin(i)` saying
/// where the i-th record came from), and the rest goes on. Returns how many were
/// dead-lettered.
pub async fn send_or_dead_letter(
    producer: &dyn Producer,
    topic: &str,
    records: &[Record],
    dead_letter_topic: &str,
    origin: impl Fn(usize) -> Vec<(String, Vec<u8>)>,
) -> Result<u64> {
    let refused =
        match with_retries("sending records", || producer.send(topic, records.to_vec())).await {
            Ok(()) => return Ok(0),
            Err(e) if !e.refused.is_empty() => e.refused,
            Err(e) => return Err(e),
        };
    let letters: Vec<Record> = refused
        .iter()
        .filter_map(|r| {
            let record = records.get(r.index)?;
            tracing::warn!(topic, reason = %r.reason, bytes = record.size(), "the log refused a record; dead-lettered");
            Some(refused_letter(topic, record, &r.reason, origin(r.index)))
        })
        .collect();
    // Cut short, a letter fits: refused again, it says what is wrong with the log.
    with_retries("sending dead letters", || {
        producer.send(dead_letter_topic, letters.clone())
    })
    .await?;
    Ok(letters.len() as u64)
}

/// Takes the records `refused` (numbered through all the groups, in order) out of `groups`
/// (per topic) and returns their dead letters, `letter(topic, record, reason)`.
pub fn retain_accepted<T>(
    groups: &mut [(String, Vec<T>)],
    refused: &[brewline_ports::Refused],
    mut letter: impl FnMut(&str, T, &str) -> Record,
) -> Vec<Record> {
    let mut letters = Vec::new();
    let mut first = 0;
    for (topic, records) in groups.iter_mut() {
        let n = records.len();
        let mut kept = Vec::with_capacity(n);
        for (i, record) in std::mem::take(records).into_iter().enumerate() {
            match refused.iter().find(|r| r.index == first + i) {
                None => kept.push(record),
                Some(r) => {
                    tracing::warn!(topic = %topic, reason = %r.reason, "the log refused a record; dead-lettered");
                    letters.push(letter(topic, record, &r.reason));
                }
            }
        }
        *records = kept;
        first += n;
    }
    letters
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a Record, name: &str) -> Option<&'a [u8]> {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn a_refused_record_is_cut_short_and_says_what_where_and_how_long() {
        let big = Record::keyed("o-1", Some(vec![b'x'; MAX_DEAD_LETTER_VALUE + 10]));
        let origin = vec![(SOURCE_HEADER.to_string(), b"binlog.000001:4".to_vec())];
        let letter = refused_letter("t", &big, "too large", origin);
        assert_eq!(letter.key.as_deref(), Some(&b"o-1"[..]));
        assert_eq!(
            letter.value.as_ref().map(Vec::len),
            Some(MAX_DEAD_LETTER_VALUE)
        );
        assert_eq!(header(&letter, REASON_HEADER), Some(&b"too large"[..]));
        assert_eq!(header(&letter, TOPIC_HEADER), Some(&b"t"[..]));
        assert_eq!(
            header(&letter, SOURCE_HEADER),
            Some(&b"binlog.000001:4"[..])
        );
        let length = (MAX_DEAD_LETTER_VALUE + 10).to_string();
        assert_eq!(header(&letter, TRUNCATED_HEADER), Some(length.as_bytes()));
        let small = Record::keyed("o-2", Some(b"{}".to_vec()));
        let letter = refused_letter("t", &small, "invalid", Vec::new());
        assert_eq!(letter.value, small.value);
        assert_eq!(header(&letter, TRUNCATED_HEADER), None);
    }

    #[test]
    fn a_refused_dead_letter_keeps_where_it_was_read() {
        let read = Consumed {
            topic: "src".into(),
            partition: 2,
            offset: 7,
            timestamp_ms: 0,
            record: Record::keyed("k", Some(vec![b'y'; MAX_DEAD_LETTER_VALUE * 2])),
        };
        let letter = dead_letter(&read, "bad");
        let again = refused_letter("dlq", &letter, "too large", Vec::new());
        assert_eq!(header(&again, TOPIC_HEADER), Some(&b"src"[..]));
        assert_eq!(header(&again, OFFSET_HEADER), Some(&b"7"[..]));
        assert_eq!(header(&again, REASON_HEADER), Some(&b"bad"[..]));
        assert!(header(&again, TRUNCATED_HEADER).is_some());
    }
}
