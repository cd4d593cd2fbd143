//! The commands on the shop's MySQL/MariaDB database: `db init`, `db seed`, `simulate`,
//! `cache load` and `accept`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use brewline_core::ReferenceData;
use brewline_kafka::{KafkaConsumer, KafkaProducer};
use brewline_mysql::MysqlSource;
use brewline_ports::{SourceDb, Subscription};
use brewline_redis::RedisLookups;
use brewline_speed::stats::Stats;
use brewline_speed::{accept, lookup_cache, with_retries};

use crate::args::{
    AcceptArgs, CacheLoadArgs, GrantFlavor, GrantRole, GrantsArgs, MysqlArg, SimulateArgs,
};
use crate::config::Config;
use crate::{metrics_server, shutdown, tills};

fn source(config: &Config) -> anyhow::Result<MysqlSource> {
    Ok(MysqlSource::new(&config.mysql)?)
}

/// `db init`: the `coffee_shop` database and its tables (idempotent).
pub async fn init(mut config: Config, args: MysqlArg) -> anyhow::Result<ExitCode> {
    args.apply(&mut config);
    let s = source(&config)?;
    s.init_schema().await.context("creating the schema")?;
    println!("database {} is ready", config.mysql.database);
    s.close().await?;
    Ok(ExitCode::SUCCESS)
}

/// `db grants`: the GRANT statements of every role asked, each block headed by the role and
/// the command that logs in as it.
pub fn grants(config: &Config, args: &GrantsArgs) -> ExitCode {
    use brewline_mysql::grants::{account, grants, Flavor, Names, Role};
    let flavor = match args.flavor {
        GrantFlavor::Mariadb => Flavor::Mariadb,
        GrantFlavor::Mysql => Flavor::Mysql,
    };
    let names = Names {
        database: &config.mysql.database,
        captured: &config.cdc.tables,
        offsets_database: &config.cdc.offsets_database,
    };
    let asked: Vec<Role> = args
        .roles
        .iter()
        .map(|r| match r {
            GrantRole::Capture => Role::Capture,
            GrantRole::Tills => Role::Tills,
            GrantRole::Accept => Role::Accept,
            GrantRole::Batch => Role::Batch,
            GrantRole::Cache => Role::Cache,
        })
        .collect();
    for role in Role::ALL {
        if !asked.is_empty() && !asked.contains(&role) {
            continue;
        }
        let user = account(&format!("{}{}", args.user_prefix, role.name()), &args.host);
        println!("-- {}: {}, as {user}", role.name(), role.command());
        for statement in grants(role, flavor, names, &user) {
            println!("{statement}");
        }
        println!();
    }
    ExitCode::SUCCESS
}

/// `db seed`: the reference data (idempotent; changed rows get a new `updated_at`).
pub async fn seed(mut config: Config, args: MysqlArg) -> anyhow::Result<ExitCode> {
    args.apply(&mut config);
    let s = source(&config)?;
    let reference = ReferenceData::bundled().context("reading the bundled reference data")?;
    s.seed_reference(&reference)
        .await
        .context("loading the reference data (did `brewline db init` run?)")?;
    println!(
        "loaded {} stores, {} payment methods, {} categories, {} products, {} customers",
        reference.stores.len(),
        reference.payment_methods.len(),
        reference.categories.len(),
        reference.products.len(),
        reference.customers.len()
    );
    s.close().await?;
    Ok(ExitCode::SUCCESS)
}

/// `simulate`: the tills, one transaction per order.
pub async fn simulate(mut config: Config, args: SimulateArgs) -> anyhow::Result<ExitCode> {
    args.mysql.apply(&mut config);
    let stats = Arc::new(Stats::default());
    metrics_server::start(args.metrics.metrics_addr, stats.clone()).await?;
    let s = source(&config)?;
    let (_stop, shutdown) = shutdown::signalled();
    let bar = indicatif::ProgressBar::new(args.orders);
    let eligible = args
        .eligible_share
        .map(|share| (share, config.recommender.eligible_bank.as_str()));
    let written = tills::write_orders(
        &s,
        args.seed,
        args.orders,
        args.rate,
        eligible,
        &shutdown,
        |n| {
            bar.set_position(n);
            stats
                .orders_written
                .store(n, std::sync::atomic::Ordering::Relaxed);
        },
    )
    .await?;
    bar.finish_and_clear();
    println!("wrote {written} orders");
    s.close().await?;
    Ok(ExitCode::SUCCESS)
}

/// `cache load`: the lookups from the database into Redis, once or every `--every`.
pub async fn cache_load(mut config: Config, args: CacheLoadArgs) -> anyhow::Result<ExitCode> {
    args.mysql.apply(&mut config);
    args.redis.apply(&mut config);
    let stats = Arc::new(Stats::default());
    metrics_server::start(args.metrics.metrics_addr, stats.clone()).await?;
    let s = source(&config)?;
    let store = RedisLookups::connect(&config.redis)
        .await
        .context("connecting to the static Redis")?;
    let (_stop, mut shutdown) = shutdown::signalled();
    loop {
        let bank = &config.recommender.eligible_bank;
        let (lookups, version) = with_retries("loading the lookup cache", || {
            lookup_cache::refresh(&s, &store, bank)
        })
        .await?;
        Stats::add(&stats.lookup_loads, 1);
        println!(
            "lookups version {version}: {} diamond customers, {} payment methods of {bank}, {} products",
            lookups.diamond_customers.len(),
            lookups.acb_payment_methods.len(),
            lookups.products.len()
        );
        let Some(every) = args.every else { break };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => break,
        }
    }
    s.close().await?;
    Ok(ExitCode::SUCCESS)
}

/// `accept`: customers accepting a share of the suggestions, written back as order lines.
pub async fn accept(mut config: Config, args: AcceptArgs) -> anyhow::Result<ExitCode> {
    args.mysql.apply(&mut config);
    args.kafka.apply(&mut config);
    let group = args.group.unwrap_or_else(|| config.accept.group.clone());
    let stats = Arc::new(Stats::default());
    metrics_server::start(args.metrics.metrics_addr, stats.clone()).await?;
    let s = source(&config)?;
    let mut consumer = KafkaConsumer::new(
        &config.kafka,
        Subscription {
            topics: vec![config.topics.suggestions.clone()],
            group: Some(group),
            from: Vec::new(),
        },
    )
    .await?;
    let producer = KafkaProducer::new(&config.kafka)?;
    let (_stop, shutdown) = shutdown::signalled();
    accept::run(
        &config.accept_settings(args.share),
        accept::Acceptance {
            consumer: &mut consumer,
            producer: &producer,
            source: &s,
            stats: &stats,
        },
        shutdown,
    )
    .await?;
    s.close().await?;
    Ok(ExitCode::SUCCESS)
}
