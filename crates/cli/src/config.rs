//! brewline's configuration: defaults from SPEC.md, then a TOML file (`--config`), then
//! `BREWLINE_*` environment variables (`__` separates sections:
//! `BREWLINE_RECOMMENDER__BATCH=2000`), then command-line flags. Unknown keys are errors, so a
//! typo is reported instead of ignored.

use std::path::{Path, PathBuf};

use brewline_core::names;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Everything brewline can be told.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Names of the topics brewline reads and writes.
    pub topics: TopicsConfig,
    /// Change capture from the source database.
    pub capture: CaptureConfig,
    /// The real-time recommender.
    pub recommender: RecommenderConfig,
    /// The embedded engines.
    pub embedded: EmbeddedConfig,
    /// Kafka: the event log of a deployment.
    pub kafka: brewline_kafka::KafkaConfig,
    /// Redis: the lookup cache and the per-order state of a deployment.
    pub redis: brewline_redis::RedisConfig,
    /// MySQL/MariaDB: the shop's database in a deployment.
    pub mysql: brewline_mysql::MysqlConfig,
    /// The write-back of accepted suggestions.
    pub accept: AcceptConfig,
    /// `brewline cdc`: change capture from the MySQL/MariaDB binlog.
    pub cdc: brewline_mysql::CdcConfig,
    /// The batch layer.
    pub batch: BatchConfig,
    /// The serving layer: `brewline serve` and `demo --serve`.
    pub serve: ServeConfig,
}

/// The serving layer.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Where the API and the dashboard listen.
    pub addr: std::net::SocketAddr,
    /// How often the lake is asked whether a new batch run was published, in seconds.
    pub reload_secs: u64,
    /// How long an order's insert may take to arrive before its state at the batch
    /// watermark is looked up in the lake, in milliseconds.
    pub lookup_after_ms: u64,
    /// How often the dashboard's stream sends the figures, in milliseconds.
    pub refresh_ms: u64,
    /// The most orders changed since the batch watermark the speed view keeps: its memory
    /// bound (about 1.5 KiB of the process' heap an order, `scripts/bench-serve`) while batch
    /// runs fail and the watermark stays. Past it,
    /// changes of further orders are dropped, said in the log, `/healthz` (degraded) and
    /// `brewline_serve_speed_dropped`.
    pub max_speed_orders: usize,
    /// The most dashboards connected to the live stream (`/api/live`) at once; more get 503.
    pub max_live_clients: usize,
    /// A token every route but `/healthz` asks for: `Authorization: Bearer <token>` from
    /// scripts and Prometheus, or the session cookie the login page (`/login`) sets for the
    /// dashboard. Set it from the environment (`BREWLINE_SERVE__TOKEN`), never in a file you
    /// commit. Unset: everything is open, for a dashboard on loopback only.
    pub token: Option<String>,
    /// The longest a request may take before it gets 503, in milliseconds (the live stream
    /// aside).
    pub request_timeout_ms: u64,
    /// Mark the session cookie `Secure` (sent over HTTPS only): set it when a TLS proxy
    /// serves the dashboard (with `tls_certificate` it always is).
    pub secure_cookie: bool,
    /// Serve over HTTPS with this certificate chain (PEM, the server's certificate first);
    /// with `tls_key`. Unset: plain HTTP, for loopback or behind a TLS proxy.
    pub tls_certificate: Option<std::path::PathBuf>,
    /// The private key of `tls_certificate` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<std::path::PathBuf>,
    /// Also answer `/metrics` (and `/healthz`) on this address, without the token and without
    /// TLS: for Prometheus on an internal network no one else reaches. Unset: `/metrics` only
    /// on `addr`, behind the token.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            reload_secs: 5,
            lookup_after_ms: 1000,
            refresh_ms: 1000,
            max_speed_orders: 1_000_000,
            max_live_clients: brewline_serve::live::DEFAULT_LIVE_CLIENTS,
            token: None,
            request_timeout_ms: 10_000,
            secure_cookie: false,
            tls_certificate: None,
            tls_key: None,
            metrics_addr: None,
        }
    }
}

impl Config {
    /// The serving layer's tail of the topics.
    pub fn tail_settings(&self) -> brewline_serve::TailSettings {
        brewline_serve::TailSettings {
            orders_topic: self.topics.orders.clone(),
            order_details_topic: self.topics.order_details.clone(),
            suggestions_topic: self.topics.suggestions.clone(),
            reload_every: std::time::Duration::from_secs(self.serve.reload_secs),
            lookup_after: std::time::Duration::from_millis(self.serve.lookup_after_ms),
            max_speed_orders: self.serve.max_speed_orders,
        }
    }
}

/// The batch layer's lake.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// The lake's root: a folder, or s3://bucket/prefix [default: lake/ in the data dir].
    pub lake: Option<String>,
    /// How to reach an s3:// lake (endpoint, region, keys; e.g.
    /// `BREWLINE_BATCH__S3__SECRET_ACCESS_KEY`).
    pub s3: brewline_batch::S3Settings,
    /// Where run history goes: a postgres:// URL (TLS with `?sslmode=require`; set it from
    /// the environment, `BREWLINE_BATCH__HISTORY`, when it holds a password), or a SQLite file
    /// [default: batch_history.sqlite in the data dir].
    pub history: Option<String>,
    /// For a PostgreSQL history over TLS: a PEM file of the authorities its certificate must
    /// chain to [default: the system's].
    pub history_ca: Option<std::path::PathBuf>,
    /// With --servers: publish the product affinity to redis.static_url after each run that
    /// passes.
    pub publish_affinity: bool,
    /// Related products kept per product in the affinity lookup.
    pub affinity_top: usize,
    /// Orders a pair of products must share to count as related.
    pub affinity_min_together: i64,
    /// When events after those landed were deleted from a topic (retention) before a run
    /// landed them, land from the earliest event left instead of failing the bronze gates
    /// (`brewline batch run --accept-lost-events` for one run).
    pub accept_lost_events: bool,
    /// The most memory a batch run's queries hold: they share 60 % of it and spill sorts and
    /// aggregations to `spill_dir` past that; the steps that join orders or days (the facts,
    /// the baskets' pairs) run in slices of them when their joins' tables would not fit in half
    /// of that share. A number of bytes or a size: "2GiB", "512MiB".
    #[schemars(with = "String")]
    pub memory_limit: brewline_batch::ByteSize,
    /// Where a run's queries spill [default: the system's temporary folder].
    pub spill_dir: Option<std::path::PathBuf>,
    /// The most rows of orders or days a step's joins hold at once; more, and it runs in
    /// slices [default: what fits in the memory limit, about 2.5 million rows at 2GiB].
    pub slice_rows: Option<u64>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        let rule = brewline_batch::AffinityRule::default();
        BatchConfig {
            lake: None,
            s3: brewline_batch::S3Settings::default(),
            history: None,
            history_ca: None,
            publish_affinity: false,
            affinity_top: rule.top,
            affinity_min_together: rule.min_together,
            accept_lost_events: false,
            memory_limit: brewline_batch::Compute::DEFAULT_MEMORY_LIMIT,
            spill_dir: None,
            slice_rows: None,
        }
    }
}

impl BatchConfig {
    /// The memory and spill folder of a run's queries.
    pub fn compute(&self) -> brewline_batch::Compute {
        brewline_batch::Compute {
            memory_limit: self.memory_limit,
            spill_dir: self.spill_dir.clone(),
            slice_rows: self.slice_rows,
        }
    }

    pub fn affinity_rule(&self) -> brewline_batch::AffinityRule {
        brewline_batch::AffinityRule {
            top: self.affinity_top,
            min_together: self.affinity_min_together,
        }
    }
}

/// `brewline accept`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AcceptConfig {
    /// Consumer group reading the suggestions.
    pub group: String,
}

impl Default for AcceptConfig {
    fn default() -> Self {
        AcceptConfig {
            group: "brewline-accept".into(),
        }
    }
}

/// Topic names and partitions.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Change events of `orders`.
    pub orders: String,
    /// Change events of `order_details`.
    pub order_details: String,
    /// Suggestions, keyed by order id.
    pub suggestions: String,
    /// Records that could not be handled, with the reason in their headers.
    pub dead_letters: String,
    /// Partitions of the CDC and suggestion topics when brewline creates them.
    pub partitions: i32,
    /// Days the dead-letter topic keeps a record (its `retention.ms` when brewline creates it
    /// on Kafka; the embedded log keeps every record).
    pub dead_letter_retention_days: u32,
    /// Days the CDC and suggestion topics keep a record (their `retention.ms` when brewline
    /// creates them on Kafka). The batch layer must land events before they go: a gap fails
    /// its bronze gate.
    pub retention_days: u32,
    /// The capture's positions, each committed with the events before it when
    /// `kafka.transactions` allows (one partition, compacted), keyed by the capture's name.
    pub capture_positions: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            orders: names::ORDERS_TOPIC.into(),
            order_details: names::ORDER_DETAILS_TOPIC.into(),
            suggestions: names::SUGGESTIONS_TOPIC.into(),
            dead_letters: names::DEAD_LETTER_TOPIC.into(),
            partitions: names::CDC_PARTITIONS,
            dead_letter_retention_days: 14,
            retention_days: 7,
            capture_positions: names::CAPTURE_POSITIONS_TOPIC.into(),
        }
    }
}

/// How change events are written.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Logical server name: `source.name` of each event and the first part of its topic.
    /// The captured database is `mysql.database` (on the embedded engines too).
    pub topic_prefix: String,
    /// Write Kafka Connect's `schema` part with every event (as JsonConverter with
    /// `schemas.enable=true`).
    pub schemas: bool,
    /// Row changes read and sent per batch. A batch is sent once the one before it is
    /// acknowledged, so larger batches keep more in flight on a catch-up: 16 384 captured a
    /// backlog of 1.25 M row changes a third faster than 4 096 on the test cluster, at 142
    /// MiB instead of 67 (BENCHMARKS.md). A live capture's batches are as small as what
    /// arrives, whatever this says.
    pub batch: usize,
    /// In Kafka transactions, the most row changes of one source transaction the capture holds
    /// to commit whole (about 1 KiB of memory each). A larger one stops the capture, saying
    /// so: raise this (and the producer's `transaction.timeout.ms`, which its sending must
    /// fit in), or capture without transactions (`kafka.transactions = "off"`, which sends it
    /// in pieces, and a kill repeats them).
    pub max_transaction_changes: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            topic_prefix: names::CDC_TOPIC_PREFIX.into(),
            schemas: false,
            batch: 16_384,
            max_transaction_changes: 100_000,
        }
    }
}

/// The recommender.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RecommenderConfig {
    /// Consumer group.
    pub group: String,
    /// Records per batch, at most: a batch takes what the consumer has read ahead up to
    /// this. With Kafka transactions each batch is one transaction (some 100 ms of round
    /// trips on a replicated cluster), so larger batches cost fewer of them when the topics
    /// lag: 16 384 read 1.7× the line events a second of 4 096, for some 70 MiB more peak
    /// RSS (BENCHMARKS.md).
    pub batch: usize,
    /// How long a poll waits for records, in milliseconds.
    pub poll_wait_ms: u64,
    /// Seconds an order's state lives after its last change.
    pub order_ttl_secs: u64,
    /// Seeds the random choices of suggestions: the same seed gives the same suggestions.
    pub seed: u64,
    /// Payment methods of this bank make an order eligible.
    pub eligible_bank: String,
    /// How often expired order state is swept and counted, in seconds.
    pub expire_every_secs: u64,
    /// How often the lookups' version is checked, in seconds.
    pub lookups_every_secs: u64,
    /// Static group membership (Kafka's `group.instance.id`): worker N of this process joins
    /// as `{instance_id}-{N}`, so a restarted process takes its partitions back at once instead
    /// of after the session timeout. Give every process its own (e.g. the host name).
    pub instance_id: Option<String>,
}

impl Default for RecommenderConfig {
    fn default() -> Self {
        RecommenderConfig {
            group: names::RECOMMENDER_GROUP.into(),
            batch: 16_384,
            poll_wait_ms: 100,
            order_ttl_secs: names::ORDER_STATE_TTL_SECS,
            seed: 42,
            eligible_bank: names::ELIGIBLE_BANK.into(),
            expire_every_secs: 5,
            lookups_every_secs: 5,
            instance_id: None,
        }
    }
}

/// The embedded engines.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// Directory of the embedded databases.
    pub data_dir: PathBuf,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            data_dir: PathBuf::from("./brewline-data"),
        }
    }
}

impl Config {
    /// Defaults, then `file`, then the `BREWLINE_*` environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            anyhow::ensure!(
                path.is_file(),
                "config file {} does not exist (check --config or BREWLINE_CONFIG)",
                path.display()
            );
            figment = figment.merge(Toml::file(path));
        }
        let env = Env::prefixed("BREWLINE_")
            .split("__")
            .ignore(&["config", "log", "log_format"]);
        figment.merge(env).extract().map_err(|e| {
            let moved = e.path.iter().map(String::as_str).eq(["capture", "database"]);
            let hint = if moved {
                "capture.database is now mysql.database, which names the captured database on every engine"
            } else {
                "invalid configuration (keys and types are listed in `brewline config`)"
            };
            anyhow::Error::new(e).context(hint)
        })
    }

    /// The accept stage's topics, with the share of customers who accept.
    pub fn accept_settings(&self, share: f64) -> brewline_speed::accept::AcceptSettings {
        brewline_speed::accept::AcceptSettings {
            suggestions_topic: self.topics.suggestions.clone(),
            dead_letter_topic: self.topics.dead_letters.clone(),
            share,
        }
    }

    /// The recommender's topics and pacing.
    pub fn recommender_settings(&self) -> brewline_speed::recommender::RecommenderSettings {
        let r = &self.recommender;
        let t = &self.topics;
        brewline_speed::recommender::RecommenderSettings {
            orders_topic: t.orders.clone(),
            order_details_topic: t.order_details.clone(),
            suggestions_topic: t.suggestions.clone(),
            dead_letter_topic: t.dead_letters.clone(),
            group: r.group.clone(),
            batch: r.batch,
            poll_wait: std::time::Duration::from_millis(r.poll_wait_ms),
            expire_every: std::time::Duration::from_secs(r.expire_every_secs),
            order_ttl: std::time::Duration::from_secs(r.order_ttl_secs),
            lookups_every: std::time::Duration::from_secs(r.lookups_every_secs),
        }
    }

    /// Checks values no type can rule out.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.topics.partitions >= 1,
            "topics.partitions must be at least 1"
        );
        anyhow::ensure!(self.capture.batch >= 1, "capture.batch must be at least 1");
        anyhow::ensure!(
            self.recommender.batch >= 1,
            "recommender.batch must be at least 1"
        );
        anyhow::ensure!(
            self.recommender.order_ttl_secs >= 1,
            "recommender.order_ttl_secs must be at least 1"
        );
        anyhow::ensure!(
            self.serve.reload_secs >= 1 && self.serve.refresh_ms >= 100,
            "serve.reload_secs must be at least 1 and serve.refresh_ms at least 100"
        );
        self.kafka.check().map_err(anyhow::Error::msg)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_moved_capture_database_says_where_it_went() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(&path, "[capture]\ndatabase = \"shop\"\n").unwrap();
        let e = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(e.contains("mysql.database"), "{e}");
    }

    #[test]
    fn weaker_durability_in_the_config_is_refused_with_the_way_to_allow_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(&path, "[kafka.producer]\nacks = \"1\"\n").unwrap();
        let e = format!(
            "{:#}",
            Config::load(Some(&path))
                .and_then(|c| c.validate())
                .unwrap_err()
        );
        assert!(
            e.contains("acks") && e.contains("kafka.allow_weaker_durability"),
            "{e}"
        );
        std::fs::write(
            &path,
            "[kafka]\nallow_weaker_durability = true\n[kafka.producer]\nacks = \"1\"\n",
        )
        .unwrap();
        Config::load(Some(&path)).unwrap().validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_types_are_rejected_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(&path, "[topics]\nsugestions = \"x\"\n").unwrap();
        let e = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(e.contains("sugestions"), "{e}");

        std::fs::write(&path, "[recommender]\nbatch = \"many\"\n").unwrap();
        let e = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(e.contains("batch"), "{e}");

        let e = Config::load(Some(&dir.path().join("missing.toml"))).unwrap_err();
        assert!(e.to_string().contains("does not exist"));
    }

    #[test]
    fn file_values_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(
            &path,
            "[topics]\nsuggestions = \"recs\"\n[recommender]\nbatch = 7\n",
        )
        .unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.topics.suggestions, "recs");
        assert_eq!(c.recommender.batch, 7);
        assert_eq!(
            c.topics.orders, "mysql.coffee_shop.orders",
            "others keep their defaults"
        );
        assert_eq!(c.recommender.order_ttl_secs, 90);
    }
}
