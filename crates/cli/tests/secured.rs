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
