//! The recommender as a deployment on secured servers runs it: over the test cluster's
//! SASL_SSL listener as a SCRAM user that holds exactly the ACLs README lists (READ on the CDC
//! topics and its group, WRITE on the suggestions and dead letters, WRITE and DESCRIBE on its
//! transactional ids), and on the TLS Redis as the ACL user of its role, the lookups loaded
//! there by the administrator's user; every password from the environment. Every eligible
//! order gets one suggestion; a Kafka user without ACLs ends at once with the ACL it lacks;
//! `brewline config` and the logs never show a password. Needs `scripts/test`'s servers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use brewline_core::ReferenceData;
use brewline_kafka::testing::{grant, scram_user};
use common::*;

/// The environment that makes a brewline process use the TLS Redis as `user:password` (a
/// variable of `scripts/services`), databases 2 and 3.
fn redis_as(variable: &str) -> Vec<(&'static str, String)> {
    let (user, host) = (env(variable), env("TEST_BREWLINE_REDIS_TLS"));
    let ca = PathBuf::from(env("TEST_BREWLINE_TLS")).join("ca.pem");
    vec![
        (
            "BREWLINE_REDIS__STATIC_URL",
            format!("rediss://{user}@{host}/2"),
        ),
        (
            "BREWLINE_REDIS__DYNAMIC_URL",
            format!("rediss://{user}@{host}/3"),
        ),
        ("BREWLINE_REDIS__CA", ca.display().to_string()),
    ]
}

/// The environment that makes a brewline process connect as `user` over SASL_SSL.
fn as_user(user: &str, password: &str) -> Vec<(&'static str, String)> {
    let ca = PathBuf::from(env("TEST_BREWLINE_TLS")).join("ca.pem");
    vec![
        (
            "BREWLINE_KAFKA__BROKERS",
            env("TEST_BREWLINE_KAFKA_SASL_SSL"),
        ),
        ("BREWLINE_KAFKA__SECURITY__PROTOCOL", "sasl_ssl".into()),
        ("BREWLINE_KAFKA__SECURITY__USERNAME", user.into()),
        ("BREWLINE_KAFKA__SECURITY__PASSWORD", password.into()),
        ("BREWLINE_KAFKA__SECURITY__CA", ca.display().to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, Redis and MariaDB: run scripts/test"]
async fn the_recommender_over_sasl_ssl_needs_only_its_acls_and_never_shows_its_password() {
    let d = Deployment::new("secured", None, (2, 3));
    d.set_up();
    let all = orders(&ReferenceData::bundled().unwrap(), 17, 600);
    let eligible = eligible(&all);
    let work = tempfile::tempdir().unwrap();
    produce_events(&d, work.path(), &all, false).await;

    let (user, password) = scram_user("brewline-recs");
    let principal = format!("User:{user}");
    let group = format!("{}-recs", d.prefix);
    let (orders, lines) = (d.topic("orders"), d.topic("order_details"));
    let (suggestions, dlq) = (
        format!("{}.suggestions", d.prefix),
        format!("{}.dlq", d.prefix),
    );
    let txn_ids = format!("{group}-");
    grant(&[
        "--allow-principal",
        &principal,
        "--operation",
        "Read",
        "--topic",
        &orders,
        "--topic",
        &lines,
        "--group",
        &group,
    ]);
    grant(&[
        "--allow-principal",
        &principal,
        "--operation",
        "Write",
        "--topic",
        &suggestions,
        "--topic",
        &dlq,
    ]);
    grant(&[
        "--allow-principal",
        &principal,
        "--operation",
        "Write",
        "--operation",
        "Describe",
        "--transactional-id",
        &txn_ids,
        "--resource-pattern-type",
        "prefixed",
    ]);

    d.command(&["cache", "load"])
        .envs(redis_as("TEST_BREWLINE_REDIS_ADMIN"))
        .status()
        .unwrap()
        .success()
        .then_some(())
        .expect("the administrator loads the lookups into the TLS Redis");
    let mut environment = as_user(&user, &password);
    environment.extend(redis_as("TEST_BREWLINE_REDIS_RECS"));
    let redis_password = env("TEST_BREWLINE_REDIS_RECS")
        .split_once(':')
        .map(|(_, p)| p.to_string())
        .unwrap();
    let pairs: Vec<(&str, &str)> = environment.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut recommender = d.start_with("recommend", &["recommend", "--workers", "2"], &pairs);
    let found = suggestions_for(&d, &eligible, Duration::from_secs(120)).await;
    assert_one_suggestion_each(&found, &eligible, || tail_of(&d.log("recommend")));
    assert!(
        terminate(&mut recommender).success(),
        "{}",
        d.log("recommend")
    );
    let log = d.log("recommend");
    assert!(log.contains("written in Kafka transactions"), "{log}");

    // A user without ACLs: ends at once, saying what it lacks, having written nothing.
    let (nobody, nobody_password) = scram_user("brewline-nobody");
    let out = d
        .command(&["recommend"])
        .envs(as_user(&nobody, &nobody_password))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("ACL"), "{said}");
    assert!(!said.contains(&nobody_password), "{said}");

    // The configuration shows the user, never the password; nor does any log.
    let out = d
        .command(&["config"])
        .envs(environment.clone())
        .output()
        .unwrap();
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        config.contains(&user) && config.contains("password = \"<redacted>\""),
        "{config}"
    );
    assert!(
        config.contains("rediss://brewline-recs:<redacted>@"),
        "{config}"
    );
    for secret in [&password, &redis_password] {
        assert!(!config.contains(secret.as_str()), "{config}");
        assert!(!log.contains(secret.as_str()), "a password is never logged");
    }
}

/// Every command that uses the database, each as a user holding exactly the grants
/// `brewline db grants` prints for its role, made `REQUIRE SSL` and connecting over TLS with
/// the server's certificate checked: the tills write orders, the cache loads, the capture
/// snapshots the tables and follows the binlog (over TLS), accept writes suggestions back and
/// a batch run reads the dimensions. A role running another's command is refused, naming
/// the grant it lacks; in plaintext, naming `mysql.ssl_mode`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, Redis and MariaDB: run scripts/test"]
async fn every_command_runs_with_only_its_roles_grants_over_tls() {
    use mysql_async::prelude::Queryable;
    const PASSWORD: &str = "grants-test-secret";
    let d = Deployment::with_cdc("grants", (6, 7));
    d.set_up();
    let users = format!("g{}_", brewline_ports::now_us() % 1_000_000_000);
    let statements = d.run(&["db", "grants", "--user-prefix", &users]);
    let mut root = database(&d).await;
    for role in ["capture", "tills", "accept", "batch", "cache"] {
        root.query_drop(format!(
            "CREATE USER '{users}{role}'@'%' IDENTIFIED BY '{PASSWORD}' REQUIRE SSL"
        ))
        .await
        .unwrap();
    }
    let grants: Vec<&str> = statements
        .lines()
        .filter(|l| l.starts_with("GRANT "))
        .collect();
    assert!(grants.len() >= 10, "{statements}");
    for statement in &grants {
        root.query_drop(*statement).await.unwrap();
    }
    root.disconnect().await.unwrap();

    let ca = PathBuf::from(env("TEST_BREWLINE_TLS")).join("ca.pem");
    let url = |role: &str| {
        env("TEST_BREWLINE_MYSQL_URL").replacen("root@", &format!("{users}{role}:{PASSWORD}@"), 1)
    };
    let as_role = |role: &str| {
        vec![
            ("BREWLINE_MYSQL__URL", url(role)),
            ("BREWLINE_MYSQL__SSL_MODE", "verify_identity".to_string()),
            ("BREWLINE_MYSQL__CA", ca.display().to_string()),
        ]
    };
    let run_as = |role: &str, args: &[&str]| {
        let out = d.command(args).envs(as_role(role)).output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !said.contains(PASSWORD),
            "the password is in the output: {said}"
        );
        (out.status.success(), said)
    };
    let start_as = |name: &str, role: &str, args: &[&str]| {
        let env = as_role(role);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        d.start_with(name, args, &env)
    };
    let tills = |seed: &str| {
        let args = [
            "simulate",
            "--orders",
            "150",
            "--seed",
            seed,
            "--eligible-share",
            "0.3",
        ];
        let (ok, said) = run_as("tills", &args);
        assert!(ok, "the tills as their role: {said}");
    };

    tills("61");
    let (ok, said) = run_as("cache", &["cache", "load"]);
    assert!(ok, "cache load as its role: {said}");
    // The capture snapshots the orders already there, then follows the binlog.
    let mut cdc = start_as("cdc", "capture", &["cdc"]);
    let mut recommend = d.start("recommend", &["recommend"]);
    let mut accept = start_as("accept", "accept", &["accept", "--share", "1.0"]);
    tills("62");
    let eligible = eligible_by_sql(&d).await;
    assert!(eligible.len() > 30, "{} eligible", eligible.len());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while (suggested_lines(&d).await as usize) < eligible.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} suggestions written back\ncdc:\n{}\naccept:\n{}",
            suggested_lines(&d).await,
            eligible.len(),
            tail_of(&d.log("cdc")),
            tail_of(&d.log("accept"))
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let lake = d.dir.path().join("lake");
    let history = d.dir.path().join("history.sqlite");
    let mut batch = d.command(&[
        "batch",
        "run",
        "--servers",
        "--layer",
        "bronze",
        "--lake",
        lake.to_str().unwrap(),
    ]);
    let out = batch
        .envs(as_role("batch"))
        .env("BREWLINE_BATCH__HISTORY", &history)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "batch run as its role: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, process) in [
        ("cdc", &mut cdc),
        ("recommend", &mut recommend),
        ("accept", &mut accept),
    ] {
        assert!(terminate(process).success(), "{name}:\n{}", d.log(name));
    }
    for name in ["cdc", "accept"] {
        assert!(
            !d.log(name).contains(PASSWORD),
            "the password is in {name}'s log"
        );
    }

    // Another role's command: refused, naming what the server refused.
    let (ok, said) = run_as("accept", &["simulate", "--orders", "1"]);
    assert!(!ok);
    assert!(
        said.contains("command denied") && said.contains("lacks the grant"),
        "{said}"
    );
    // The capture's user without TLS.
    let plain = d
        .command(&["cdc", "--until-caught-up"])
        .env("BREWLINE_MYSQL__URL", url("capture"))
        .output()
        .unwrap();
    assert!(!plain.status.success());
    let said = String::from_utf8_lossy(&plain.stderr);
    assert!(said.contains("mysql.ssl_mode"), "{said}");
    let mut root = database(&d).await;
    for role in ["capture", "tills", "accept", "batch", "cache"] {
        root.query_drop(format!("DROP USER '{users}{role}'@'%'"))
            .await
            .unwrap();
    }
    root.disconnect().await.unwrap();
}
