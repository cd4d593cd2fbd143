//! How brewline talks to Kafka.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::security::KafkaSecurity;

/// The cluster and the client settings. Every librdkafka property can be set or overridden
/// in `producer` and `consumer` (see librdkafka's CONFIGURATION.md); brewline's own defaults
/// are listed with [`KafkaConfig::producer_properties`] and
/// [`KafkaConfig::consumer_properties`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// `client.id`: names brewline's connections in the broker's logs and metrics.
    pub client_id: String,
    /// Replication factor of the topics brewline creates [default: 3, or the number of
    /// brokers when the cluster has fewer].
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas` of the topics brewline creates: how many replicas must have a
    /// record before the producer's `acks = all` is answered [default: 2, or the replication
    /// factor when it is 1].
    pub min_insync_replicas: Option<i32>,
    /// Whether the recommender writes its suggestions and dead letters and commits its offsets
    /// in one Kafka transaction per batch, so that a kill leaves no duplicate suggestion:
    /// `"auto"` where the cluster allows it (else at least once, with a warning), `"on"`
    /// (a cluster without transactions is an error), `"off"` [default: "auto"]. Readers of
    /// `order_suggestions` must read committed records only (`isolation.level =
    /// read_committed`, librdkafka's default). A member killed in a transaction holds
    /// readers back until the cluster aborts it, after `transaction.timeout.ms` (brewline's
    /// default 10 000; settable in `producer`).
    pub transactions: TransactionsMode,
    /// Lets `producer` weaken durability: `acks` below `all` (a record acknowledged by the
    /// leader alone is lost when the leader dies before a replica has it) or
    /// `enable.idempotence = false` (retries may repeat or reorder records). Refused unless
    /// this is `true` [default: false].
    pub allow_weaker_durability: bool,
    /// Encryption and authentication: TLS, SASL (SCRAM, PLAIN), mutual TLS.
    pub security: KafkaSecurity,
    /// Extra or overriding producer properties, e.g. `"linger.ms" = "10"`.
    pub producer: BTreeMap<String, String>,
    /// Extra or overriding consumer properties, e.g. `"session.timeout.ms" = "10000"`.
    pub consumer: BTreeMap<String, String>,
}

/// When output and offsets are written in Kafka transactions ([`KafkaConfig::transactions`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TransactionsMode {
    /// Where the cluster allows them.
    #[default]
    Auto,
    /// Always: a cluster without them is an error.
    On,
    /// Never: output is sent, then offsets committed (at least once).
    Off,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            client_id: "brewline".into(),
            replication_factor: None,
            min_insync_replicas: None,
            transactions: TransactionsMode::Auto,
            allow_weaker_durability: false,
            security: KafkaSecurity::default(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The replication factor and `min.insync.replicas` of a new topic on a cluster of
    /// `brokers` brokers: the configured ones, else 3 replicas of which 2 in sync, as far as
    /// the cluster has brokers.
    pub fn replication(&self, brokers: usize) -> (i32, i32) {
        let brokers = i32::try_from(brokers).unwrap_or(i32::MAX).max(1);
        let factor = self.replication_factor.unwrap_or(brokers.min(3));
        (factor, self.min_insync_replicas.unwrap_or(factor.min(2)))
    }

    /// The producer's properties: idempotent (no duplicates or reordering from retries), acks
    /// from all in-sync replicas, Kafka's murmur2 partitioner (a key lands where a Java
    /// producer puts it), batches compressed with lz4 (Debezium's JSON shrinks several times,
    /// which the cluster then stores and replicates: a third more capture throughput on the
    /// test cluster, BENCHMARKS.md), then the configured ones.
    pub fn producer_properties(&self) -> BTreeMap<String, String> {
        let mut p = self.common_properties();
        for (k, v) in [
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("partitioner", "murmur2_random"),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
            ("batch.num.messages", "10000"),
            ("queue.buffering.max.messages", "1000000"),
        ] {
            p.insert(k.into(), v.into());
        }
        p.extend(self.producer.clone());
        p
    }

    /// The consumer's properties: offsets committed by brewline only, after the work they
    /// cover (never automatically), and the earliest record when a group has none; a
    /// read-ahead bounded to 4 MiB per consumer (librdkafka's default is 64 MiB and 100 000
    /// messages per partition), refilled 5 ms after it drained instead of librdkafka's 1 s
    /// (`fetch.queue.backoff.ms`); fetches of at most 256 KiB a partition and 1 MiB in all
    /// (librdkafka: 1 MiB and 50 MiB), as each lz4 batch is held decompressed, several times
    /// its size, while any of its records waits: a recommender at full speed stayed at
    /// 84 MiB (120 MiB with schemas) where these defaults of librdkafka's took 138 MiB (263)
    /// (BENCHMARKS.md); then the configured ones.
    pub fn consumer_properties(&self) -> BTreeMap<String, String> {
        let mut p = self.common_properties();
        for (k, v) in [
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("queued.max.messages.kbytes", "4096"),
            ("queued.min.messages", "10000"),
            ("fetch.queue.backoff.ms", "5"),
            ("max.partition.fetch.bytes", "262144"),
            ("fetch.max.bytes", "1048576"),
        ] {
            p.insert(k.into(), v.into());
        }
        p.extend(self.consumer.clone());
        p
    }

    /// An error naming the setting when `producer` weakens durability (`acks` below `all`,
    /// idempotence off) and [`KafkaConfig::allow_weaker_durability`] does not allow it.
    pub fn check_durability(&self) -> Result<(), String> {
        if self.allow_weaker_durability {
            return Ok(());
        }
        let weaker = |key: &str, strong: &[&str]| {
            self.producer
                .get(key)
                .filter(|v| !strong.contains(&v.trim().to_ascii_lowercase().as_str()))
                .map(|v| format!("kafka.producer sets {key} = {v:?}"))
        };
        match weaker("acks", &["all", "-1"])
            .or_else(|| weaker("request.required.acks", &["all", "-1"]))
            .or_else(|| weaker("enable.idempotence", &["true"]))
        {
            None => Ok(()),
            Some(what) => Err(format!(
                "{what}: brewline writes with acks = all and idempotence on so that no acknowledged record is lost or repeated; remove the setting, or set kafka.allow_weaker_durability = true to accept the risk"
            )),
        }
    }

    /// An error saying what to fix in these settings: durability weakened
    /// ([`KafkaConfig::check_durability`]), security settings that do not go together
    /// ([`KafkaSecurity::check`]).
    pub fn check(&self) -> Result<(), String> {
        self.check_durability()?;
        self.security.check()
    }

    /// What every client sets: where the cluster is, who connects and how
    /// ([`KafkaSecurity`]), and no Nagle delay on its sockets (as Kafka's Java clients): a
    /// small request goes out at once instead of waiting for the last one's TCP
    /// acknowledgement.
    pub fn common_properties(&self) -> BTreeMap<String, String> {
        let mut p = BTreeMap::from([
            ("bootstrap.servers".into(), self.brokers.clone()),
            ("client.id".into(), self.client_id.clone()),
            ("socket.nagle.disable".into(), "true".into()),
        ]);
        p.extend(self.security.properties());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weaker_durability_is_refused_unless_allowed() {
        let mut c = KafkaConfig::default();
        assert_eq!(c.check_durability(), Ok(()));
        for (k, v) in [
            ("acks", "all"),
            ("acks", "-1"),
            ("enable.idempotence", "true"),
        ] {
            c.producer = BTreeMap::from([(k.to_string(), v.to_string())]);
            assert_eq!(c.check_durability(), Ok(()), "{k} = {v}");
        }
        for (k, v) in [
            ("acks", "1"),
            ("acks", "0"),
            ("request.required.acks", "1"),
            ("enable.idempotence", "false"),
        ] {
            c.producer = BTreeMap::from([(k.to_string(), v.to_string())]);
            let e = c.check_durability().unwrap_err();
            assert!(
                e.contains(k) && e.contains("kafka.allow_weaker_durability"),
                "{e}"
            );
        }
        c.allow_weaker_durability = true;
        assert_eq!(c.check_durability(), Ok(()));
    }

    #[test]
    fn topics_are_replicated_three_times_two_in_sync_as_far_as_the_cluster_allows() {
        let c = KafkaConfig::default();
        assert_eq!(c.replication(3), (3, 2));
        assert_eq!(c.replication(5), (3, 2));
        assert_eq!(c.replication(2), (2, 2));
        assert_eq!(c.replication(1), (1, 1));
        assert_eq!(c.replication(0), (1, 1), "no broker known: one replica");
        let set = KafkaConfig {
            replication_factor: Some(5),
            min_insync_replicas: Some(3),
            ..KafkaConfig::default()
        };
        assert_eq!(
            set.replication(3),
            (5, 3),
            "what is configured, checked by the caller"
        );
        let factor_only = KafkaConfig {
            replication_factor: Some(1),
            ..KafkaConfig::default()
        };
        assert_eq!(factor_only.replication(3), (1, 1));
    }
}
