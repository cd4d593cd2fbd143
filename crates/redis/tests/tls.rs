//! brewline's Redis stores over TLS (`rediss://`, the test authority's certificate) as ACL
//! users, on the second Redis `scripts/services` starts: TLS only, no default user. The
//! recommender's user runs the order store and the counters and reads the lookups, and is
//! refused writing the lookups or flushing; a wrong password, a plaintext client and an
//! untrusted certificate each end with a message that says what to fix. Needs
//! `scripts/test`'s servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use brewline_ports::{conformance, LookupStore};
use brewline_redis::{RedisConfig, RedisCounters, RedisLookups, RedisOrders};

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run these tests through scripts/test"))
}

/// The TLS Redis as `user:password` (a variable of `scripts/services`), with the test CA.
fn as_user(variable: &str) -> RedisConfig {
    let user = env(variable);
    let host = env("TEST_BREWLINE_REDIS_TLS");
    RedisConfig {
        static_url: format!("rediss://{user}@{host}/0"),
        dynamic_url: format!("rediss://{user}@{host}/1"),
        ca: Some(PathBuf::from(env("TEST_BREWLINE_TLS")).join("ca.pem")),
        ..RedisConfig::default()
    }
}

#[tokio::test]
#[ignore = "needs the TLS Redis: run scripts/test"]
async fn the_recommenders_user_over_tls_does_its_work_and_nothing_else() {
    let admin = RedisLookups::connect(&as_user("TEST_BREWLINE_REDIS_ADMIN"))
        .await
        .unwrap();
    let reference = brewline_core::ReferenceData::bundled().unwrap();
    let lookups = brewline_core::suggestion::Lookups::from_reference(&reference, "ACB");
    let version = admin.publish(&lookups).await.unwrap();

    let recs = as_user("TEST_BREWLINE_REDIS_RECS");
    let store = RedisLookups::connect(&recs).await.unwrap();
    let (read, read_version) = store.load().await.unwrap();
    assert_eq!(read_version, version);
    assert_eq!(read.diamond_customers, lookups.diamond_customers);
    let orders = RedisOrders::connect(&recs, Duration::from_secs(90))
        .await
        .unwrap();
    conformance::completes_once_and_replays_the_recorded_suggestion("tls", || orders.clone()).await;
    let counters = RedisCounters::connect(&recs).await.unwrap();
    conformance::counters_add_up("tls", &counters).await;

    // Not its work: publishing lookups, flushing.
    let e = store.publish(&lookups).await.unwrap_err();
    assert!(
        e.to_string().contains("NOPERM") && e.to_string().contains("ACL user"),
        "{e}"
    );
    let client = redis::Client::build_with_tls(
        recs.dynamic_url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(recs.ca.as_ref().unwrap()).unwrap()),
        },
    )
    .unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let flushed: redis::RedisResult<()> = redis::cmd("FLUSHDB").query_async(&mut c).await;
    assert!(flushed.unwrap_err().to_string().contains("NOPERM"));
}

#[tokio::test]
#[ignore = "needs the TLS Redis: run scripts/test"]
async fn a_wrong_password_plaintext_or_an_untrusted_certificate_says_what_to_fix() {
    let mut wrong = as_user("TEST_BREWLINE_REDIS_RECS");
    wrong.dynamic_url = wrong.dynamic_url.replace("-secret@", "-not@");
    let e = RedisCounters::connect(&wrong).await.err().unwrap();
    assert!(!e.retryable, "{e}");
    assert!(e.to_string().contains("check the user and password"), "{e}");
    assert!(
        !e.to_string().contains("recs-redis"),
        "no password in messages: {e}"
    );

    let mut plaintext = as_user("TEST_BREWLINE_REDIS_RECS");
    plaintext.dynamic_url = plaintext.dynamic_url.replace("rediss://", "redis://");
    plaintext.ca = None;
    plaintext.response_timeout_ms = 2000;
    let e = RedisCounters::connect(&plaintext).await.err().unwrap();
    assert!(e.to_string().contains("rediss://"), "{e}");

    let mut untrusted = as_user("TEST_BREWLINE_REDIS_RECS");
    untrusted.ca = None;
    let e = RedisCounters::connect(&untrusted).await.err().unwrap();
    assert!(e.to_string().contains("redis.ca"), "{e}");
}
