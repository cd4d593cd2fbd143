//! The speed layer with its Redis data on a Redis Cluster (three masters, a replica each), as
//! an operator runs it: `cache load` and two `brewline recommend` processes on
//! `redis+cluster://` URLs, and a master killed with SIGKILL mid-run: its replica takes over,
//! and every eligible order still gets exactly one suggestion content. Needs the servers
//! `scripts/test` starts (`TEST_BREWLINE_REDIS_CLUSTER`, `TEST_BREWLINE_REDIS_CLUSTER_DIR`).
//! Its own test binary: no other test uses the cluster while a master is down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brewline_core::ReferenceData;
use common::*;

/// What `redis-cli -p port ARGS…` prints, or nothing when the node does not answer.
fn redis_cli(port: &str, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", port])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The test cluster's nodes: (number in its folder, port).
fn cluster_nodes() -> Vec<(usize, String)> {
    let dir = env("TEST_BREWLINE_REDIS_CLUSTER_DIR");
    std::fs::read_to_string(format!("{dir}/ports"))
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, p)| (i + 1, p.trim().to_string()))
        .collect()
}

/// Whether every node answers, says the cluster is ok, and every replica is in sync.
fn cluster_whole() -> bool {
    cluster_nodes().iter().all(|(_, port)| {
        let replication = redis_cli(port, &["info", "replication"]);
        redis_cli(port, &["cluster", "info"]).contains("cluster_state:ok")
            && (replication.contains("role:master")
                || replication.contains("master_link_status:up"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and a Redis Cluster: run scripts/test"]
async fn the_speed_layer_on_a_redis_cluster_rides_out_a_master_killed_mid_run() {
    let d = Arc::new(Deployment::on_redis_cluster("rcluster"));
    d.set_up();
    let all = orders(&ReferenceData::bundled().unwrap(), 17, 1600);
    let eligible = eligible(&all);
    assert!(eligible.len() > 300, "{} eligible", eligible.len());
    let work = tempfile::tempdir().unwrap();
    produce_events(&d, work.path(), &all[..800], false).await;
    let mut a = d.start("a", &["recommend", "--instance-id", "a"]);
    let mut b = d.start("b", &["recommend", "--instance-id", "b"]);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A master killed outright while the second half of the orders comes.
    let dir = env("TEST_BREWLINE_REDIS_CLUSTER_DIR");
    let (node, port) = cluster_nodes()
        .into_iter()
        .find(|(_, port)| redis_cli(port, &["role"]).starts_with("master"))
        .expect("a master");
    let pid = std::fs::read_to_string(format!("{dir}/node-{node}.pid")).unwrap();
    assert!(Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap()
        .success());
    let killed = Instant::now();
    produce_events(&d, work.path(), &all[800..], true).await;

    let found = suggestions_for(&d, &eligible, Duration::from_secs(120)).await;
    assert_one_suggestion_each(&found, &eligible, || {
        format!(
            "log a:\n{}\nlog b:\n{}",
            tail_of(&d.log("a")),
            tail_of(&d.log("b"))
        )
    });
    eprintln!(
        "master node {node} (port {port}) killed; every suggestion made {:.1} s after",
        killed.elapsed().as_secs_f64()
    );

    // The killed node back, a replica now; the cluster whole for what runs after.
    assert!(Command::new(format!("{dir}/start"))
        .arg(node.to_string())
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster_whole() {
        assert!(Instant::now() < deadline, "the cluster did not heal");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(redis_cli(&port, &["role"]).starts_with("slave"));
    assert!(terminate(&mut a).success(), "{}", d.log("a"));
    assert!(terminate(&mut b).success(), "{}", d.log("b"));
}
