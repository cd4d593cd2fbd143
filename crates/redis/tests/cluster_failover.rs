//! A master of the Redis Cluster killed (SIGKILL) while batches of orders are applied: its
//! replica takes over, the batches that failed are applied again, and every order completes,
//! once. Needs the cluster `scripts/test` starts (`TEST_BREWLINE_REDIS_CLUSTER`, and
//! `TEST_BREWLINE_REDIS_CLUSTER_DIR` to kill and start its nodes). Its own test binary, so that
//! no other test uses the cluster while a master is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use brewline_core::Step;
use brewline_ports::{conformance, OrderStore};
use brewline_redis::{RedisConfig, RedisOrders};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run through scripts/test"))
}

/// The node (1 to 6) and port of every node, in the order of the ports file.
fn nodes(dir: &str) -> Vec<(usize, u16)> {
    std::fs::read_to_string(format!("{dir}/ports"))
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, port)| (i + 1, port.trim().parse().unwrap()))
        .collect()
}

/// What node `port` answers to a command (`INFO replication`, `CLUSTER INFO`); none when it
/// does not answer.
async fn ask(port: u16, command: &[&str]) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut c = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd(command.first()?)
        .arg(&command[1..])
        .query_async(&mut c)
        .await
        .ok()
}

/// Whether every node says the cluster is ok and every replica is in sync.
async fn cluster_ok(dir: &str) -> bool {
    for (_, port) in nodes(dir) {
        let cluster = ask(port, &["CLUSTER", "INFO"]).await;
        if !cluster.is_some_and(|i| i.contains("cluster_state:ok")) {
            return false;
        }
        let replication = ask(port, &["INFO", "replication"])
            .await
            .unwrap_or_default();
        if replication.contains("role:slave") && !replication.contains("master_link_status:up") {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Redis Cluster: run scripts/test"]
async fn a_master_killed_mid_run_loses_no_order_and_completes_each_once() {
    let url = env("TEST_BREWLINE_REDIS_CLUSTER");
    let dir = env("TEST_BREWLINE_REDIS_CLUSTER_DIR");
    let scope = format!("failover-{}", brewline_ports::now_us());
    let d = RedisConfig::default();
    let config = RedisConfig {
        static_url: url.clone(),
        dynamic_url: url,
        order_state_prefix: format!("{scope}:{}", d.order_state_prefix),
        open_orders_key: format!("{scope}:{}", d.open_orders_key),
        order_state_epoch_key: format!("{scope}:{}", d.order_state_epoch_key),
        response_timeout_ms: 1_000,
        ..d
    };
    let store = RedisOrders::connect(&config, Duration::from_secs(300))
        .await
        .unwrap();

    // 3 000 orders of two lines: each batch the header of some, a line of others.
    let ids: Vec<String> = (0..3000).map(|i| format!("o{i}")).collect();
    let mut changes = Vec::new();
    for (i, o) in ids.iter().enumerate() {
        changes.push(conformance::applied(
            conformance::placed(o, 2),
            3 * i as i64,
        ));
        changes.push(conformance::applied(
            conformance::line(o, "A"),
            3 * i as i64 + 1,
        ));
        changes.push(conformance::applied(
            conformance::line(o, "B"),
            3 * i as i64 + 2,
        ));
    }
    // Interleaved, so that orders stay open across batches.
    changes.sort_by_key(|a| (a.at.offset % 3, a.at.offset));
    let batches: Vec<_> = changes.chunks(150).collect();

    let master = {
        let mut found = None;
        for (node, port) in nodes(&dir) {
            if ask(port, &["INFO", "replication"])
                .await
                .is_some_and(|i| i.contains("role:master"))
            {
                found = Some((node, port));
                break;
            }
        }
        found.expect("a master")
    };

    // Completions per order, from batches applied (a failed batch is applied again, as the
    // recommender does: nothing of it was sent).
    let mut completed: HashMap<String, usize> = HashMap::new();
    let mut failures = 0;
    let started = Instant::now();
    let mut killed_at = None;
    let mut back_after = None;
    for (i, batch) in batches.iter().enumerate() {
        if i == batches.len() / 3 {
            let pid = std::fs::read_to_string(format!("{dir}/node-{}.pid", master.0)).unwrap();
            let status = std::process::Command::new("kill")
                .args(["-9", pid.trim()])
                .status()
                .unwrap();
            assert!(status.success());
            killed_at = Some(Instant::now());
        }
        let steps = loop {
            match store.apply(batch, &conformance::suggest_x).await {
                Ok(steps) => {
                    if back_after.is_none() && failures > 0 {
                        back_after = killed_at.map(|k: Instant| k.elapsed());
                    }
                    break steps;
                }
                Err(e) => {
                    assert!(e.retryable, "{e}");
                    failures += 1;
                    assert!(
                        started.elapsed() < Duration::from_secs(120),
                        "the cluster never took the batches again: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        for (a, step) in batch.iter().zip(steps) {
            if let Step::Completed(order, suggestion) = step {
                assert_eq!(order.id(), a.change.order_id());
                assert!(suggestion.is_some());
                *completed.entry(order.id().to_string()).or_default() += 1;
            }
        }
    }
    let done_in = killed_at.unwrap().elapsed();
    assert!(failures > 0, "the kill was noticed");
    // Every order complete, each completed once by the batches that went through.
    for o in &ids {
        assert_eq!(completed.get(o), Some(&1), "{o}: {:?}", completed.get(o));
        assert!(store.order(o).await.unwrap().unwrap().is_complete(), "{o}");
    }
    eprintln!(
        "master node {} (port {}) killed: {failures} failed attempts, batches applied again {:.1} s after the kill, all done after {:.1} s",
        master.0,
        master.1,
        back_after.unwrap_or_default().as_secs_f64(),
        done_in.as_secs_f64()
    );

    // The killed node back, as a replica of the one that took over; the cluster whole again
    // for the tests after this one.
    let status = std::process::Command::new(format!("{dir}/start"))
        .arg(master.0.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster_ok(&dir).await {
        assert!(Instant::now() < deadline, "the cluster did not heal");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let role = ask(master.1, &["INFO", "replication"]).await.unwrap();
    assert!(role.contains("role:slave"), "{role}");
}
