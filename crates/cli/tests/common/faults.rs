//! Faults the end-to-end tests inject: a Kafka node killed and started again, a Redis of a
//! test's own stopped, killed or flushed, the test MariaDB restarted; and the checks that
//! nothing was lost.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::ClientConfig;
use serde_json::Value;

use super::{
    database, env, free_port, lines_by_sql, read_all, tail_of, terminate, Deployment, Process,
};

/// A node of the test cluster (`TEST_BREWLINE_KAFKA_NODES/node-N`), started again when the
/// test ends, whatever happened, so that the tests after it have the whole cluster.
pub struct KafkaNode {
    dir: PathBuf,
    down: bool,
}

impl KafkaNode {
    pub fn new(id: i32) -> KafkaNode {
        KafkaNode {
            dir: PathBuf::from(env("TEST_BREWLINE_KAFKA_NODES")).join(format!("node-{id}")),
            down: false,
        }
    }

    pub fn kill(&mut self) {
        let pid = std::fs::read_to_string(self.dir.join("pid")).unwrap();
        let status = std::process::Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "could not kill Kafka node {pid}");
        self.down = true;
    }

    pub fn start(&mut self) {
        let status = std::process::Command::new(self.dir.join("start"))
            .status()
            .unwrap();
        assert!(status.success(), "could not start {:?}", self.dir);
        self.down = false;
    }
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        if self.down {
            self.start();
        }
    }
}

pub fn metadata_client(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap()
}

/// The node that leads partition 0 of `topic`.
pub fn leader_of(brokers: &str, topic: &str) -> i32 {
    let metadata = metadata_client(brokers)
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .find(|p| p.id() == 0)
        .unwrap()
        .leader()
}

/// Waits until every partition of `topics` has all three replicas in sync again.
pub fn wait_in_sync(brokers: &str, topics: &[String], within: Duration) {
    let client = metadata_client(brokers);
    let deadline = Instant::now() + within;
    loop {
        let short: Vec<String> = topics
            .iter()
            .flat_map(|t| {
                let metadata = client
                    .fetch_metadata(Some(t), Duration::from_secs(10))
                    .unwrap();
                metadata.topics()[0]
                    .partitions()
                    .iter()
                    .filter(|p| p.isr().len() < 3)
                    .map(|p| format!("{t}/{}: in sync {:?}", p.id(), p.isr()))
                    .collect::<Vec<_>>()
            })
            .collect();
        if short.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas not back in sync: {short:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every row change (binlog file, position and row) is there once: the capture commits its
/// events and its position in Kafka transactions, so a kill repeats none. Only a snapshot
/// taken again repeats its reads (which all stand at the snapshot's position: told apart by
/// their row), identically. Returns the changes per key, in the order they were read.
pub fn changes_once(events: &[(String, Value)]) -> BTreeMap<String, Vec<Value>> {
    let mut seen: BTreeMap<(String, String, i64, i64, String), Value> = BTreeMap::new();
    let mut per_key: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (key, payload) in events {
        let s = &payload["source"];
        let at = (
            key.clone(),
            s["file"].as_str().unwrap().to_string(),
            s["pos"].as_i64().unwrap(),
            s["row"].as_i64().unwrap(),
            if payload["op"] == "r" {
                payload["after"].to_string()
            } else {
                String::new()
            },
        );
        let change = serde_json::json!({
            "op": payload["op"], "before": payload["before"], "after": payload["after"],
        });
        match seen.get(&at) {
            Some(first) => {
                assert_eq!(payload["op"], "r", "{at:?} captured twice");
                assert_eq!(first, &change, "a repeat of {at:?} differs");
            }
            None => {
                seen.insert(at, change.clone());
                per_key.entry(key.clone()).or_default().push(change);
            }
        }
    }
    per_key
}

/// The killed node is a full replica of the deployment's topics again.
pub fn node_back_in_sync(d: &Deployment) {
    let topics: Vec<String> = ["orders", "order_details", "suggestions"]
        .iter()
        .map(|t| d.topic(t))
        .collect();
    wait_in_sync(&d.brokers, &topics, Duration::from_secs(120));
}

/// A Redis of the test's own, with an append-only file, that can be stopped and started again.
pub struct OwnRedis {
    dir: tempfile::TempDir,
    port: u16,
    process: Option<Child>,
    fsync: &'static str,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        OwnRedis::with_fsync("always")
    }

    /// A Redis whose append-only file is flushed to disk `fsync` (`always`, `everysec`).
    pub fn with_fsync(fsync: &'static str) -> OwnRedis {
        let mut r = OwnRedis {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            process: None,
            fsync,
        };
        r.up();
        r
    }

    pub fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/services installs it)");
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops Redis as an operator's restart does (SIGTERM: the append-only file is flushed).
    pub fn down(&mut self) {
        if let Some(child) = self.process.take() {
            terminate(&mut Process(child));
        }
    }

    /// Kills Redis without a word (SIGKILL): what the append-only file had not flushed is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Empties every database (FLUSHALL), as an operator's mistake does.
    pub fn flush_all(&self) {
        let mut c = redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("FLUSHALL").query::<()>(&mut c).unwrap();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until every line of the deployment's database (items and written-back suggestions)
/// is among the captured change events, every change there once ([`changes_once`]), and checks
/// that every order was captured once; returns how many orders the database holds.
pub async fn every_row_captured(d: &Deployment) -> usize {
    let captured = |table: &'static str| async move {
        read_all(d, &d.topic(table), Duration::from_secs(3))
            .await
            .into_iter()
            .filter_map(|r| {
                let key = String::from_utf8(r.record.key.clone()?).unwrap();
                let value: Value = serde_json::from_slice(r.record.value.as_ref()?).unwrap();
                Some((key, value.get("payload").cloned().unwrap_or(value)))
            })
            .collect::<Vec<_>>()
    };
    let mut in_db = lines_by_sql(d, false).await;
    in_db.extend(lines_by_sql(d, true).await);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let captured_lines: BTreeSet<(String, String)> =
            changes_once(&captured("order_details").await)
                .values()
                .flatten()
                .filter(|c| !c["after"].is_null())
                .map(|c| {
                    (
                        c["after"]["order_id"].as_str().unwrap().to_string(),
                        c["after"]["product_id"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
        if in_db.is_subset(&captured_lines) {
            break;
        }
        // The write-backs of the last suggestions may still be on their way through cdc.
        assert!(
            Instant::now() < deadline,
            "{} lines of the database never captured\ncdc log:\n{}",
            in_db.difference(&captured_lines).count(),
            tail_of(&d.log("cdc"))
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let orders = changes_once(&captured("orders").await);
    let mut db = database(d).await;
    let order_count: usize = mysql_async::prelude::Queryable::query_first::<usize, _>(
        &mut db,
        "SELECT COUNT(*) FROM orders",
    )
    .await
    .unwrap()
    .unwrap();
    db.disconnect().await.unwrap();
    assert_eq!(orders.len(), order_count, "every order captured");
    assert!(orders.values().all(|changes| changes.len() == 1));
    order_count
}
