//! Three recommenders as three hosts: each in a network namespace of its own with its own
//! address (`scripts/netns-hosts`: veth pairs on a bridge, made and removed by the test),
//! against the Kafka cluster and the Redis Cluster. One host is cut off from the network
//! mid-run (its link down, nothing killed): its partitions move to the others after the
//! session timeout, and when it comes back it neither suggests twice nor commits over the
//! others' work. Skipped, saying so, only where the machine refuses network namespaces.
//! Needs the servers `scripts/test` starts, and root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use brewline_core::ReferenceData;
use common::*;

/// Hosts made by `scripts/netns-hosts`, removed when dropped.
struct Hosts {
    script: String,
    name: String,
}

impl Hosts {
    /// `n` hosts reaching `ports` of the machine's 127.0.0.1; `None` where the machine refuses
    /// network namespaces.
    fn up(n: usize, ports: &[String]) -> Option<Hosts> {
        let script = format!("{}/../../scripts/netns-hosts", env!("CARGO_MANIFEST_DIR"));
        let name = format!("bl{}", std::process::id() % 1_000_000);
        let out = Command::new(&script)
            .args(["up", &name, &n.to_string()])
            .args(ports)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(3) {
            eprintln!("SKIPPED: {stderr}");
            return None;
        }
        let hosts = Hosts { script, name };
        assert!(out.status.success(), "netns-hosts up: {stderr}");
        Some(hosts)
    }

    /// The program and arguments that run a command on host `i`.
    fn via(&self, i: usize) -> Vec<String> {
        vec![
            self.script.clone(),
            "run".into(),
            self.name.clone(),
            i.to_string(),
        ]
    }

    fn link(&self, what: &str, i: usize) {
        let status = Command::new(&self.script)
            .args([what, &self.name, &i.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "netns-hosts {what}");
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .args(["down", &self.name])
            .status();
    }
}

/// Waits until `log()` shows "partitions assigned" more than `times` times.
async fn assigned_more_than(times: usize, what: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while log().matches("partitions assigned").count() <= times {
        assert!(Instant::now() < deadline, "{what}:\n{}", tail_of(&log()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, a Redis Cluster and network namespaces: run scripts/test"]
async fn a_host_cut_off_hands_its_partitions_over_and_back_suggests_nothing_twice() {
    let mut ports: Vec<String> = env("TEST_BREWLINE_BROKERS")
        .split(',')
        .map(|b| b.rsplit(':').next().unwrap().to_string())
        .collect();
    let cluster = env("TEST_BREWLINE_REDIS_CLUSTER");
    ports.extend(
        cluster
            .trim_start_matches("redis+cluster://")
            .split(',')
            .map(|n| n.rsplit(':').next().unwrap().to_string()),
    );
    let Some(hosts) = Hosts::up(3, &ports) else {
        return;
    };
    let d = Deployment::on_redis_cluster("hosts");
    d.set_up();
    let all = orders(&ReferenceData::bundled().unwrap(), 23, 1200);
    let so_far = eligible(&all[..1000]);
    let eligible = eligible(&all);
    let work = tempfile::tempdir().unwrap();
    produce_events(&d, work.path(), &all[..600], false).await;

    let mut processes = Vec::new();
    for i in 1..=3 {
        let via = hosts.via(i);
        let via: Vec<&str> = via.iter().map(String::as_str).collect();
        processes.push(d.start_via(&format!("host{i}"), &via, &["recommend"]));
    }
    for i in 1..=3 {
        assigned_more_than(0, "a host got no partition", || d.log(&format!("host{i}"))).await;
    }
    let before: Vec<usize> = [1, 3]
        .iter()
        .map(|i| {
            d.log(&format!("host{i}"))
                .matches("partitions assigned")
                .count()
        })
        .collect();

    // Host 2 cut off; the orders that come meanwhile are all suggested by hosts 1 and 3.
    hosts.link("cut", 2);
    let cut_at = Instant::now();
    produce_events(&d, work.path(), &all[600..1000], true).await;
    let found = suggestions_for(&d, &so_far, Duration::from_secs(120)).await;
    assert_eq!(
        found
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        so_far,
        "every order so far suggested while host 2 is cut off\n{}\n{}",
        tail_of(&d.log("host1")),
        tail_of(&d.log("host3"))
    );
    let handed_over_in = cut_at.elapsed();
    for (i, n) in [1, 3].iter().zip(&before) {
        assigned_more_than(*n, "its partitions did not move", || {
            d.log(&format!("host{i}"))
        })
        .await;
    }

    // Back: host 2 joins again and takes its share; what it had under way when it was cut
    // off is neither committed nor sent.
    let host2_before = d.log("host2").matches("partitions assigned").count();
    hosts.link("heal", 2);
    assigned_more_than(host2_before, "host 2 never joined again", || d.log("host2")).await;
    produce_events(&d, work.path(), &all[1000..], true).await;
    let found = suggestions_for(&d, &eligible, Duration::from_secs(120)).await;
    assert_one_suggestion_each(&found, &eligible, || {
        (1..=3)
            .map(|i| format!("host {i}:\n{}", tail_of(&d.log(&format!("host{i}")))))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let twice: Vec<&String> = found
        .iter()
        .filter(|(_, copies)| copies.len() > 1)
        .map(|(order, _)| order)
        .collect();
    assert!(twice.is_empty(), "suggested twice: {twice:?}");
    eprintln!(
        "host 2 cut off: its orders suggested by the others {:.1} s after the cut; back, it rejoined; {} eligible orders, each suggested once",
        handed_over_in.as_secs_f64(),
        eligible.len()
    );
    for mut p in processes {
        assert!(terminate(&mut p).success());
    }
}
