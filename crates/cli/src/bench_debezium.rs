//! The capture benchmark's contenders on one binlog: `brewline cdc` (its own process) and
//! Debezium's MariaDB connector on Kafka Connect (`scripts/connect`, configured as
//! `deploy/connect/mysql-source.json`), each reading the same backlog into topics of its own
//! on the same cluster, measured the same way: row events over the time from its first record
//! in its topics to its last, and its peak resident memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use brewline_kafka::connect::{connector_properties, DebeziumSource};
use brewline_kafka::records_in;
use brewline_mysql::MysqlSource;

use crate::bench_kafka::{peak_rss_mib, KillOnDrop};
use crate::config::Config;

/// What one capture did on the backlog.
pub struct Measured {
    /// Records it wrote (row events, and a tombstone after each delete).
    pub records: i64,
    /// From its first record in its topics to its last.
    pub seconds: f64,
    /// From its start to its last record.
    pub wall: f64,
    pub peak_rss_mib: f64,
}

impl Measured {
    pub fn per_second(&self) -> f64 {
        self.records as f64 / self.seconds.max(1e-9)
    }
}

/// When a watched capture is done.
enum Until {
    /// It exits by itself (`brewline cdc --until-caught-up`).
    Exit,
    /// Its topics hold this many more records (then it is stopped with SIGTERM).
    Records(i64),
}

/// Watches `child` write into `topics` (their end offsets polled every 50 ms; `before`
/// records were there when it started) until it is done, with its peak memory.
async fn watch(
    mut child: KillOnDrop,
    config: &Config,
    topics: &[String],
    before: i64,
    until: Until,
    began: Instant,
) -> anyhow::Result<Measured> {
    let (mut first, mut last, mut written, mut peak) = (None, began, 0, 0.0f64);
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(peak_rss_mib(child.0.id()).unwrap_or(0.0));
        let now = records_in(&config.kafka, topics).await? - before;
        if now > written {
            written = now;
            last = Instant::now();
            first.get_or_insert(last);
        }
        match until {
            Until::Records(n) if written >= n => {
                stop(&mut child.0);
                break;
            }
            Until::Exit => {
                if let Some(status) = child.0.try_wait()? {
                    anyhow::ensure!(status.success(), "the capture failed ({status})");
                    break;
                }
            }
            Until::Records(n) => {
                if let Some(status) = child.0.try_wait()? {
                    anyhow::bail!("the capture exited ({status}) after {written} of {n} records");
                }
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{written} records after 30 minutes"
        );
    }
    Ok(Measured {
        records: written,
        seconds: first.map_or(0.0, |f| (last - f).as_secs_f64()),
        wall: (last - began).as_secs_f64(),
        peak_rss_mib: peak,
    })
}

/// SIGTERM, then a wait for the process to end (its shutdown flushes what it must).
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// `brewline cdc --until-caught-up` of `c` as its own process, from its stored position.
pub async fn brewline_cdc(c: &Config, work: &Path) -> anyhow::Result<Measured> {
    let config_file = work.join("cdc.toml");
    std::fs::write(&config_file, toml::to_string(c)?)?;
    let topics = vec![c.topics.orders.clone(), c.topics.order_details.clone()];
    let before = records_in(&c.kafka, &topics).await?;
    let began = Instant::now();
    let child = Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(&config_file)
        .args(["cdc", "--until-caught-up"])
        .stdout(Stdio::null())
        .spawn()
        .context("starting `brewline cdc`")?;
    watch(KillOnDrop(child), c, &topics, before, Until::Exit, began).await
}

/// Debezium on the database of `c`, in a Connect worker of its own.
pub struct Debezium {
    script: PathBuf,
    dir: PathBuf,
    connector: PathBuf,
    topics: Vec<String>,
}

impl Debezium {
    /// Starts Debezium on the database of `c` (writing `debezium.{database}.{table}`), waits
    /// until it streams the binlog (a probe order, written after its snapshot, arrives), and
    /// stops it: its stored offsets then point at the binlog's end, where it goes on from when
    /// started again.
    pub async fn prepare(
        c: &Config,
        script: &Path,
        deployed: &Path,
        work: &Path,
    ) -> anyhow::Result<Debezium> {
        let address = c.mysql.address().map_err(anyhow::Error::msg)?;
        let deployed = std::fs::read_to_string(deployed)
            .with_context(|| format!("reading {}", deployed.display()))?;
        let prefix = "debezium";
        let properties = connector_properties(
            &deployed,
            &DebeziumSource {
                host: address.host,
                port: address.port,
                user: address.user,
                password: address.password,
                database: c.mysql.database.clone(),
                topic_prefix: prefix.into(),
                server_id: c.cdc.server_id + 1,
                brokers: c.kafka.brokers.clone(),
                schemas: c.capture.schemas,
                extra: Default::default(),
            },
        )
        .map_err(anyhow::Error::msg)?;
        let dir = work.join("connect");
        std::fs::create_dir_all(&dir)?;
        let connector = dir.join("connector.properties");
        std::fs::write(&connector, properties)?;
        let d = Debezium {
            script: script.to_path_buf(),
            dir,
            connector,
            topics: ["orders", "order_details"]
                .iter()
                .map(|t| format!("{prefix}.{}.{t}", c.mysql.database))
                .collect(),
        };
        let log = brewline_kafka::KafkaLog::new(c.kafka.clone());
        for topic in &d.topics {
            brewline_ports::EventLog::create_topic(&log, topic, c.topics.partitions).await?;
        }
        let worker = d.start()?;
        let began = Instant::now();
        MysqlSource::new(&c.mysql)?
            .execute(&["INSERT INTO orders (id, timestamp, customer_id, store_id, payment_method_id, num_products)
                        VALUES ('probe-debezium', NOW(3), NULL, 1, 1, 1)".to_string()])
            .await?;
        watch(worker, c, &d.topics, 0, Until::Records(1), began)
            .await
            .context("Debezium did not stream a probe order")?;
        Ok(d)
    }

    fn start(&self) -> anyhow::Result<KillOnDrop> {
        let log = std::fs::File::create(self.dir.join("connect.log"))?;
        let brokers = std::fs::read_to_string(&self.connector)?
            .lines()
            .find_map(|l| l.strip_prefix("schema.history.internal.kafka.bootstrap.servers="))
            .unwrap_or_default()
            .to_string();
        Ok(KillOnDrop(
            Command::new(&self.script)
                .arg(&self.dir)
                .arg(brokers)
                .arg("false")
                .arg(&self.connector)
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", self.script.display()))?,
        ))
    }

    /// Starts Debezium again and measures it reading the backlog until its topics hold
    /// `expected` more records.
    pub async fn catch_up(&self, c: &Config, expected: i64) -> anyhow::Result<Measured> {
        let before = records_in(&c.kafka, &self.topics).await?;
        let began = Instant::now();
        let worker = self.start()?;
        watch(
            worker,
            c,
            &self.topics,
            before,
            Until::Records(expected),
            began,
        )
        .await
        .with_context(|| {
            format!(
                "Debezium's log is {}",
                self.dir.join("connect.log").display()
            )
        })
    }
}
