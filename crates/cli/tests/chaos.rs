//! The chaos run: the whole pipeline on the real servers — MariaDB → `brewline cdc` → Kafka
//! (three nodes) → two `brewline recommend` processes → `brewline accept` → `brewline batch
//! run` — at a steady rate of orders, while a seeded loop injects faults at random: a
//! recommender killed (SIGKILL), `cdc` killed, a Kafka node killed, Redis killed (its
//! append-only file flushed every second, so the last writes may be lost) or flushed whole
//! once, MariaDB restarted. Then: every committed row captured once (the capture commits its
//! events with its position in Kafka transactions), per key in commit order; every eligible order exactly one suggestion content; every
//! accepted suggestion written back once; the gold layer's revenue per day equal to MariaDB's
//! to the unit. Alone in its test binary: it kills Kafka nodes and restarts the test MariaDB,
//! which no other test may share meanwhile. `TEST_BREWLINE_CHAOS_SECONDS` (60) and
//! `TEST_BREWLINE_CHAOS_SEED` (15) set its length and its faults; `scripts/chaos` runs it
//! longer. Needs the servers `scripts/test` starts (`TEST_BREWLINE_*`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use brewline_batch::Lake;
use common::faults::*;
use common::*;

/// A seeded generator (xorshift): the same seed, the same faults at the same moments.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillRecommender(usize),
    KillCdc,
    KillKafkaNode(i32),
    KillRedis,
    FlushRedis,
    RestartMariaDb,
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The tills: a client of the database, started again with new orders when a fault ends them.
fn tills(d: &Deployment, seed: u64) -> Process {
    let seed = seed.to_string();
    d.start(
        "tills",
        &[
            "simulate",
            "--orders",
            "1000000",
            "--rate",
            "30",
            "--seed",
            &seed,
            "--eligible-share",
            "0.25",
        ],
    )
}

/// Stops the test MariaDB (SIGTERM, as a restart does) and starts it again.
async fn restart_mariadb() {
    let pid = std::fs::read_to_string(env("TEST_BREWLINE_MARIADB_PID")).unwrap();
    let pid = pid.trim().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::process::Command::new("kill")
        .args(["-0", &pid])
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "MariaDB did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = std::process::Command::new(env("TEST_BREWLINE_MARIADB_START"))
        .status()
        .unwrap();
    assert!(started.success(), "MariaDB did not start");
    let port = env("TEST_BREWLINE_MYSQL_URL")
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "MariaDB did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The tests of this file restart the shared MariaDB: one at a time.
static MARIADB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// After a MariaDB restart the binlog goes on in a new file, into which the server moves a
/// reader with a rotate it makes up (the old file ends with none): the capture follows it, so
/// that a capture killed afterwards resumes in the new file, not at the new file's offsets in
/// the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Kafka cluster, Redis and MariaDB: run scripts/test"]
async fn capture_follows_the_binlog_into_the_file_a_restart_opens() {
    let _alone = MARIADB.lock().await;
    let d = Deployment::with_cdc("rotate", (0, 1));
    d.set_up();
    let orders = |seed: &str| {
        d.run(&[
            "simulate", "--orders", "40", "--rate", "1000", "--seed", seed,
        ]);
    };
    let mut cdc = d.start("cdc", &["cdc"]);
    orders("1");
    // Streaming the binlog when the server restarts.
    every_row_captured(&d).await;
    restart_mariadb().await;
    orders("2");
    // Captured past the restart, into the new file; then killed and started again from there.
    every_row_captured(&d).await;
    // Its position stored (every 250 ms at the most).
    tokio::time::sleep(Duration::from_secs(2)).await;
    cdc.kill();
    orders("3");
    cdc = d.start("cdc", &["cdc"]);
    let captured = every_row_captured(&d).await;
    assert_eq!(captured, 120, "{}", tail_of(&d.log("cdc")));
    assert!(terminate(&mut cdc).success(), "{}", d.log("cdc"));
}

/// Starts `process` again if it ended.
fn alive(d: &Deployment, process: &mut Process, name: &str, args: &[&str]) -> bool {
    if process.0.try_wait().unwrap().is_some() {
        *process = d.start(name, args);
        return false;
    }
    true
}

/// Where the change events of `orders` are: topic, partition and offset of each.
async fn where_in_the_log(d: &Deployment, orders: &[&String]) -> String {
    let mut out = String::new();
    if orders.is_empty() {
        return out;
    }
    for table in ["orders", "order_details"] {
        for r in read_all(d, &d.topic(table), Duration::from_secs(3)).await {
            let key = r.record.key.as_deref().map(String::from_utf8_lossy);
            if let Some(key) = key.filter(|k| orders.iter().any(|o| o.as_str() == k)) {
                out += &format!("  {key}: {}/{} at {}\n", r.topic, r.partition, r.offset);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Kafka cluster, Redis and MariaDB: run scripts/test"]
async fn chaos_loses_nothing() {
    let _alone = MARIADB.lock().await;
    let seconds = setting("TEST_BREWLINE_CHAOS_SECONDS", 60);
    let seed = setting("TEST_BREWLINE_CHAOS_SEED", 15);
    let mut random = Seeded(seed.max(1));
    let mut redis = OwnRedis::with_fsync("everysec");
    let d = Deployment::with_cdc_on("chaos", &redis.url(), (0, 1));
    d.set_up();
    let lake_dir = d.dir.path().join("lake");
    let lake = lake_dir.to_str().unwrap().to_string();
    // A batch run, given `limit` to finish (else killed: `None`); its output in batch.log.
    let batch_run = |limit: Duration| -> Option<bool> {
        let log = std::fs::File::create(d.dir.path().join("batch.log")).unwrap();
        let mut cmd = d.command(&["batch", "run", "--servers", "--lake", &lake]);
        cmd.env(
            "BREWLINE_BATCH__HISTORY",
            d.dir.path().join("history.sqlite"),
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status.success());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mut batch_hung = 0;
    let recommend: [&[&str]; 2] = [&["recommend"], &["recommend", "--workers", "2"]];
    let names = ["recommend-0", "recommend-1"];

    let mut cdc = d.start("cdc", &["cdc"]);
    let mut recommenders: Vec<Process> = (0..2).map(|i| d.start(names[i], recommend[i])).collect();
    let mut accept = d.start("accept", &["accept", "--share", "1.0"]);
    let mut tills_seed = 1000 + seed;
    let mut till = tills(&d, tills_seed);

    let mut faults = Vec::new();
    let mut unexpected = Vec::new();
    let mut flushed = false;
    let mut batch_runs = 0;
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut next_batch = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(3000 + 1000 * random.below(4))).await;
        if till.0.try_wait().unwrap().is_some() {
            tills_seed += 1;
            till = tills(&d, tills_seed);
        }
        let fault = match random.below(6) {
            0 => Fault::KillRecommender(random.below(2) as usize),
            1 => Fault::KillCdc,
            2 => Fault::KillKafkaNode(1 + random.below(3) as i32),
            3 => Fault::KillRedis,
            4 if !flushed => Fault::FlushRedis,
            4 => Fault::KillRecommender(random.below(2) as usize),
            _ => Fault::RestartMariaDb,
        };
        eprintln!("chaos: {fault:?}");
        faults.push(fault);
        match fault {
            Fault::KillRecommender(i) => {
                recommenders[i].kill();
                recommenders[i] = d.start(names[i], recommend[i]);
            }
            Fault::KillCdc => {
                cdc.kill();
                cdc = d.start("cdc", &["cdc"]);
            }
            Fault::KillKafkaNode(n) => {
                let mut node = KafkaNode::new(n);
                node.kill();
                tokio::time::sleep(Duration::from_secs(5)).await;
                node.start();
            }
            Fault::KillRedis => {
                redis.kill();
                tokio::time::sleep(Duration::from_secs(2)).await;
                redis.up();
            }
            Fault::FlushRedis => {
                flushed = true;
                redis.flush_all();
                // The operator loads the lookup cache again; meanwhile the recommenders
                // decide with the lookups they had.
                tokio::time::sleep(Duration::from_secs(3)).await;
                d.run(&["cache", "load"]);
            }
            Fault::RestartMariaDb => restart_mariadb().await,
        }
        // Every process but the tills rides out every fault.
        for (name, process, args) in [("cdc", &mut cdc, &["cdc"][..])] {
            if !alive(&d, process, name, args) {
                unexpected.push(format!("{name} ended:\n{}", tail_of(&d.log(name))));
            }
        }
        for i in 0..2 {
            if !alive(&d, &mut recommenders[i], names[i], recommend[i]) {
                unexpected.push(format!(
                    "{} ended:\n{}",
                    names[i],
                    tail_of(&d.log(names[i]))
                ));
            }
        }
        if !alive(&d, &mut accept, "accept", &["accept", "--share", "1.0"]) {
            unexpected.push(format!("accept ended:\n{}", tail_of(&d.log("accept"))));
        }
        if Instant::now() >= next_batch {
            next_batch = Instant::now() + Duration::from_secs(15);
            batch_runs += 1;
            // A run may fail while a fault lasts; the last one must pass.
            if batch_run(Duration::from_secs(120)).is_none() {
                batch_hung += 1;
            }
        }
    }
    terminate(&mut till);
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
    // Every node in sync again before the checks read the topics.
    node_back_in_sync(&d);

    // Every eligible order exactly one suggestion content, no other.
    let eligible = eligible_by_sql(&d).await;
    assert!(eligible.len() > 50, "{} eligible orders", eligible.len());
    let found = suggestions_for(&d, &eligible, Duration::from_secs(180)).await;
    let missing: Vec<&String> = eligible
        .iter()
        .filter(|o| !found.contains_key(*o))
        .take(3)
        .collect();
    let whereabouts = where_in_the_log(&d, &missing).await;
    assert_one_suggestion_each(&found, &eligible, || {
        format!(
            "faults: {faults:?}\nthe events of orders missing:\n{whereabouts}recommend-0:\n{}\nrecommend-1:\n{}\ncdc:\n{}\nevery log: {}",
            tail_of(&d.log("recommend-0")),
            tail_of(&d.log("recommend-1")),
            tail_of(&d.log("cdc")),
            d.keep_logs().display()
        )
    });

    // Every accepted suggestion written back once.
    let deadline = Instant::now() + Duration::from_secs(120);
    while (suggested_lines(&d).await as usize) < eligible.len() {
        assert!(Instant::now() < deadline, "{}", tail_of(&d.log("accept")));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        suggested_lines(&d).await as usize,
        eligible.len(),
        "written back once"
    );

    // Every committed row captured once, per key in commit order.
    let order_count = every_row_captured(&d).await;
    let mut db = database(&d).await;

    // The lake: a last run over everything passes, its gold revenue that of the database.
    assert!(terminate(&mut cdc).success(), "{}", d.log("cdc"));
    // A run that never returns is killed and made again (see the note on batch_hung).
    let mut last = None;
    for _ in 0..3 {
        last = batch_run(Duration::from_secs(180));
        if last.is_some() {
            break;
        }
        batch_hung += 1;
    }
    assert_eq!(
        last,
        Some(true),
        "the last batch run failed or never returned:\n{}",
        std::fs::read_to_string(d.dir.path().join("batch.log")).unwrap_or_default()
    );
    let revenue = daily_revenue(&Lake::at(&lake)).await;
    assert_eq!(
        revenue,
        revenue_by_sql(&mut db).await,
        "gold revenue to the unit"
    );
    db.disconnect().await.unwrap();

    for (i, r) in recommenders.iter_mut().enumerate() {
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| terminate(r)));
        let log = || tail_of(&d.log(names[i]));
        assert!(
            stopped.is_ok_and(|s| s.success()),
            "{} did not stop well:\n{}",
            names[i],
            log()
        );
    }
    assert!(terminate(&mut accept).success(), "{}", d.log("accept"));
    println!(
        "chaos: seed {seed}, {seconds} s, {} faults injected ({faults:?}), {batch_runs} batch runs during them ({batch_hung} killed after never returning); {order_count} orders, {} eligible: every one suggested once (duplicate suggestions 0: Kafka transactions), written back once, captured once (duplicate change events 0), and reconciled in gold; losses 0",
        faults.len(),
        eligible.len()
    );
}
