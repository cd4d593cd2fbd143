//! The state ports on a real Redis: the shared conformance cases, plus what is Redis' own.
//! Needs the server `scripts/test` starts (`TEST_BREWLINE_REDIS_URL`); run with
//! `scripts/test`, or `cargo test -- --ignored` with that variable set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use brewline_ports::{conformance, LookupStore, OrderStore};
use brewline_redis::{RedisConfig, RedisCounters, RedisLookups, RedisOrders};

/// The cases every store runs, each as a test on one Redis (`one::…`) and on the test Redis
/// Cluster (`cluster::…`).
macro_rules! on_one_and_on_a_cluster {
    ($($case:ident),* $(,)?) => {
        mod one {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs Redis: run scripts/test"]
                async fn $case() {
                    super::$case(super::config).await
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs a Redis Cluster: run scripts/test"]
                async fn $case() {
                    super::$case(super::cluster_config).await
                }
            )*
        }
    };
}

on_one_and_on_a_cluster!(
    completes_once_and_replays_the_recorded_suggestion,
    concurrent_workers_complete_each_order_once,
    open_orders_that_expire_are_reported_once,
    lookups_are_replaced_whole_with_a_new_version,
    a_reader_never_sees_half_published_lookups,
    counters_add_up,
    records_are_counted_once,
    batches_racing_on_the_same_orders_complete_every_order_once,
    order_state_carries_the_ttl,
    lookups_are_the_keys_spec_names,
);

/// A configuration whose every key starts with `scope`, on the test server.
fn config(scope: &str) -> RedisConfig {
    let url = std::env::var("TEST_BREWLINE_REDIS_URL")
        .expect("TEST_BREWLINE_REDIS_URL is not set: run these tests through scripts/test");
    scoped(scope, format!("{url}/0"), format!("{url}/1"))
}

/// [`config`] on the test Redis Cluster (three masters, a replica each).
fn cluster_config(scope: &str) -> RedisConfig {
    let url = std::env::var("TEST_BREWLINE_REDIS_CLUSTER")
        .expect("TEST_BREWLINE_REDIS_CLUSTER is not set: run these tests through scripts/test");
    scoped(scope, url.clone(), url)
}

fn scoped(scope: &str, static_url: String, dynamic_url: String) -> RedisConfig {
    let scope = format!("{scope}-{}", brewline_ports::now_us());
    let d = RedisConfig::default();
    RedisConfig {
        static_url,
        dynamic_url,
        diamond_customers_key: format!("{scope}:{}", d.diamond_customers_key),
        acb_payment_key: format!("{scope}:{}", d.acb_payment_key),
        product_key_prefix: format!("{scope}:{}", d.product_key_prefix),
        lookups_version_key: format!("{scope}:{}", d.lookups_version_key),
        order_state_prefix: format!("{scope}:{}", d.order_state_prefix),
        open_orders_key: format!("{scope}:{}", d.open_orders_key),
        counters_key: format!("{scope}:{}", d.counters_key),
        order_state_epoch_key: format!("{scope}:{}", d.order_state_epoch_key),
        ..d
    }
}

/// A plain connection to one Redis or to a cluster, to look at what the stores wrote.
enum Raw {
    One(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Raw {
    async fn open(url: &str) -> Raw {
        match url.strip_prefix("redis+cluster://") {
            Some(nodes) => {
                let nodes: Vec<String> = nodes.split(',').map(|n| format!("redis://{n}")).collect();
                let client = redis::cluster::ClusterClient::new(nodes).unwrap();
                Raw::Cluster(client.get_async_connection().await.unwrap())
            }
            None => Raw::One(
                redis::Client::open(url)
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap(),
            ),
        }
    }

    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> T {
        match self {
            Raw::One(c) => cmd.query_async(c).await.unwrap(),
            Raw::Cluster(c) => cmd.query_async(c).await.unwrap(),
        }
    }
}

async fn orders(config: &RedisConfig, ttl: Duration) -> RedisOrders {
    RedisOrders::connect(config, ttl).await.unwrap()
}

async fn completes_once_and_replays_the_recorded_suggestion(config: fn(&str) -> RedisConfig) {
    let c = config("replay");
    let a = orders(&c, Duration::from_secs(90)).await;
    let b = orders(&c, Duration::from_secs(90)).await;
    let handles = std::sync::Mutex::new(vec![a, b]);
    conformance::completes_once_and_replays_the_recorded_suggestion("r", || {
        // Alternate between two connections: what one wrote, the other reads.
        let mut h = handles.lock().unwrap();
        h.rotate_left(1);
        h[0].clone()
    })
    .await;
}

async fn concurrent_workers_complete_each_order_once(config: fn(&str) -> RedisConfig) {
    let c = config("workers");
    let a = orders(&c, Duration::from_secs(90)).await;
    let b = orders(&c, Duration::from_secs(90)).await;
    conformance::concurrent_workers_complete_each_order_once("r", a, b).await;
}

async fn open_orders_that_expire_are_reported_once(config: fn(&str) -> RedisConfig) {
    let c = config("expire");
    let ttl = Duration::from_millis(300);
    let store = orders(&c, ttl).await;
    conformance::open_orders_that_expire_are_reported_once("r", &store, ttl).await;
}

async fn order_state_carries_the_ttl(config: fn(&str) -> RedisConfig) {
    let c = config("ttl");
    let store = orders(&c, Duration::from_secs(90)).await;
    store
        .apply(
            &[conformance::applied(conformance::placed("o", 2), 0)],
            &conformance::none,
        )
        .await
        .unwrap();
    let mut conn = Raw::open(&c.dynamic_url).await;
    let ttl: i64 = conn
        .query(redis::cmd("PTTL").arg(store.state_key("o")))
        .await;
    assert!((80_000..=90_000).contains(&ttl), "PTTL {ttl}");
    assert_eq!(store.order("o").await.unwrap().unwrap().message_count, 1);
}

async fn lookups_are_replaced_whole_with_a_new_version(config: fn(&str) -> RedisConfig) {
    let store = RedisLookups::connect(&config("lookups")).await.unwrap();
    conformance::lookups_are_replaced_whole_with_a_new_version(&store).await;
}

async fn a_reader_never_sees_half_published_lookups(config: fn(&str) -> RedisConfig) {
    let store = RedisLookups::connect(&config("swap")).await.unwrap();
    conformance::a_reader_never_sees_half_published_lookups(store).await;
}

async fn lookups_are_the_keys_spec_names(config: fn(&str) -> RedisConfig) {
    let c = config("keys");
    let store = RedisLookups::connect(&c).await.unwrap();
    let reference = brewline_core::ReferenceData::bundled().unwrap();
    let lookups = brewline_core::suggestion::Lookups::from_reference(&reference, "ACB");
    store.publish(&lookups).await.unwrap();
    let mut conn = Raw::open(&c.static_url).await;
    // On a cluster every lookup key carries one hash tag: one slot, one MULTI.
    let tag = if c.static_url.contains("+cluster") {
        "{lookups}"
    } else {
        ""
    };
    let mut acb: Vec<i64> = conn
        .query(redis::cmd("SMEMBERS").arg(format!("{tag}{}", c.acb_payment_key)))
        .await;
    let mut acb_expected: Vec<i64> = lookups.acb_payment_methods.iter().copied().collect();
    acb.sort();
    acb_expected.sort();
    assert_eq!(acb, acb_expected, "every ACB method, not only the first");
    let (id, product) = lookups.products.iter().next().unwrap();
    let name: String = conn
        .query(
            redis::cmd("HGET")
                .arg(format!("{tag}{}{id}", c.product_key_prefix))
                .arg("name"),
        )
        .await;
    assert_eq!(name, product.name);
    let building: Vec<String> = conn.query(redis::cmd("KEYS").arg("building:*keys*")).await;
    assert!(building.is_empty(), "no temporary key left: {building:?}");
}

async fn counters_add_up(config: fn(&str) -> RedisConfig) {
    let store = RedisCounters::connect(&config("counters")).await.unwrap();
    conformance::counters_add_up("r", &store).await;
}

async fn records_are_counted_once(config: fn(&str) -> RedisConfig) {
    let store = RedisCounters::connect(&config("counted")).await.unwrap();
    conformance::records_are_counted_once(&format!("r{}", brewline_ports::now_us()), &store).await;
    assert!(
        brewline_ports::Counters::get(&store)
            .await
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("counted-through:")),
        "offsets are not counters"
    );
}

async fn batches_racing_on_the_same_orders_complete_every_order_once(
    config: fn(&str) -> RedisConfig,
) {
    let c = config("race");
    let a = orders(&c, Duration::from_secs(90)).await;
    let b = orders(&c, Duration::from_secs(90)).await;
    let ids: Vec<String> = (0..2000).map(|i| format!("o{i}")).collect();
    let headers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, o)| conformance::applied(conformance::placed(o, 1), i as i64))
        .collect();
    let lines: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, o)| conformance::applied(conformance::line(o, "A"), i as i64))
        .collect();
    let run = |store: RedisOrders, changes: Vec<brewline_ports::Applied>| {
        tokio::spawn(async move {
            let mut completed = 0;
            for batch in changes.chunks(100) {
                let steps = store.apply(batch, &conformance::none).await.unwrap();
                completed += steps
                    .iter()
                    .filter(|s| matches!(s, brewline_core::Step::Completed(..)))
                    .count();
            }
            completed
        })
    };
    let (x, y) = (run(a.clone(), headers), run(b, lines));
    let completed = x.await.unwrap() + y.await.unwrap();
    assert_eq!(completed, 2000);
    for o in &ids {
        assert!(a.order(o).await.unwrap().unwrap().is_complete(), "{o}");
    }
}

/// A database that lost the order state (flushed, restarted without persistence): every
/// handle is told once, then goes on with the new state.
#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn every_handle_is_told_once_that_the_state_was_lost() {
    use conformance::{applied, line, none, placed};
    let c = config("lost");
    let a = orders(&c, Duration::from_secs(90)).await;
    let b = a.clone();
    a.apply(&[applied(placed("o1", 2), 0)], &none)
        .await
        .unwrap();
    b.apply(&[applied(line("o1", "P1"), 1)], &none)
        .await
        .unwrap();
    let mut redis = redis::Client::open(c.dynamic_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", c.order_state_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&c.order_state_epoch_key)
        .arg(&keys)
        .query_async(&mut redis)
        .await
        .unwrap();
    for handle in [&a, &b] {
        let lost = handle
            .apply(&[applied(line("o1", "P2"), 2)], &none)
            .await
            .unwrap_err();
        assert!(lost.state_lost, "{lost}");
        assert!(lost.message.contains(&c.order_state_epoch_key), "{lost}");
    }
    // Told once: the next writes go on, on the new state.
    let steps = a
        .apply(
            &[applied(placed("o2", 1), 3), applied(line("o2", "P1"), 4)],
            &none,
        )
        .await
        .unwrap();
    assert!(matches!(steps[1], brewline_core::Step::Completed(..)));
    b.apply(&[applied(placed("o3", 1), 5)], &none)
        .await
        .unwrap();
}
