//! brewline on secured servers. The recommender over the test cluster's SASL_SSL listener as a
//! SCRAM user that holds exactly the ACLs README lists (READ on the CDC topics and its group,
//! WRITE on the suggestions and dead letters, WRITE and DESCRIBE on its transactional ids),
//! and on the TLS Redis as the ACL user of its role, the lookups loaded there by the
//! administrator's user; every password from the environment: every eligible order gets one
//! suggestion; a Kafka user without ACLs ends at once with the ACL it lacks; `brewline config`
//! and the logs never show a password. Then the whole pipeline (tills, cache, cdc, recommend,
//! accept, a batch run into S3 with its history in PostgreSQL), every connection
//! authenticated and all but the loopback S3 server's encrypted, each process as its role's
//! least-privileged database user and Kafka principal. Needs `scripts/test`'s servers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use brewline_core::ReferenceData;
use brewline_kafka::testing::{grant, scram_user};
use common::*;

/// The environment that makes a brewline process use the TLS Redis as `user:password` (a
/// variable of `scripts/services`), databases `dbs` (static, dynamic).
fn redis_as(variable: &str, dbs: (u8, u8)) -> Vec<(&'static str, String)> {
    let (user, host) = (env(variable), env("TEST_BREWLINE_REDIS_TLS"));
    let ca = PathBuf::from(env("TEST_BREWLINE_TLS")).join("ca.pem");
    vec![
        (
            "BREWLINE_REDIS__STATIC_URL",
            format!("rediss://{user}@{host}/{}", dbs.0),
        ),
        (
            "BREWLINE_REDIS__DYNAMIC_URL",
            format!("rediss://{user}@{host}/{}", dbs.1),
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
    // Orders of their own: the TLS Redis keeps the order state of an earlier run of this test
    // (the same seed, the same order ids) for the state's TTL.
    let seed = brewline_ports::now_us() as u64 % 1_000_000;
    let all = orders(&ReferenceData::bundled().unwrap(), seed, 600);
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
        .envs(redis_as("TEST_BREWLINE_REDIS_ADMIN", (2, 3)))
        .status()
        .unwrap()
        .success()
        .then_some(())
        .expect("the administrator loads the lookups into the TLS Redis");
    let mut environment = as_user(&user, &password);
    environment.extend(redis_as("TEST_BREWLINE_REDIS_RECS", (2, 3)));
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

/// Grants `operations` on `resources` (AclCommand's `--topic T`, `--group G`, ...) to `user`.
fn allow(user: &str, operations: &[&str], resources: &[&str]) {
    let principal = format!("User:{user}");
    let mut args = vec!["--allow-principal", principal.as_str()];
    for o in operations {
        args.extend(["--operation", o]);
    }
    args.extend(resources);
    grant(&args);
}

/// The whole pipeline with every connection encrypted and authenticated, each process as its
/// role's least-privileged user: MariaDB over TLS (`verify_identity`) as users made
/// `REQUIRE SSL` holding exactly the grants `brewline db grants` prints for their role; Kafka
/// over SASL_SSL as SCRAM users holding exactly the ACLs README lists for theirs; Redis over
/// TLS as ACL users. The tills write orders, `cache load` loads the lookups, `cdc` snapshots
/// the tables and follows the binlog (in Kafka transactions), the recommender suggests,
/// `accept` writes the suggestions back and a batch run lands the events and reads the
/// dimensions, its history in PostgreSQL over TLS as a password role owning only its schema,
/// its lake on S3 (a wrong password or key ends the run before it writes anything). Every eligible order gets its suggestion written back once; a role running
/// another's command is refused, naming the grant; a plaintext login, naming
/// `mysql.ssl_mode`; no password reaches a log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, Redis and MariaDB: run scripts/test"]
async fn every_role_runs_encrypted_and_authenticated_with_only_its_grants_and_acls() {
    use mysql_async::prelude::Queryable;
    const PASSWORD: &str = "grants-test-secret";
    let d = Deployment::with_cdc("grants", (6, 7));
    d.set_up();

    // MariaDB: a user per role, REQUIRE SSL, with the printed grants.
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

    // Kafka: a SCRAM user per role, with the ACLs README lists.
    let (orders, lines) = (d.topic("orders"), d.topic("order_details"));
    let (suggestions, dlq) = (
        format!("{}.suggestions", d.prefix),
        format!("{}.dlq", d.prefix),
    );
    let group = format!("{}-recs", d.prefix);
    let accept_group = format!("{}-accept", d.prefix);
    let positions = brewline_core::names::CAPTURE_POSITIONS_TOPIC;
    let capture_id = format!("brewline-cdc.mysql.{}", d.prefix);
    let prefixed = ["--resource-pattern-type", "prefixed"];
    let (cdc_user, cdc_password) = scram_user("brewline-cdc");
    allow(
        &cdc_user,
        &["Write"],
        &["--topic", &orders, "--topic", &lines, "--topic", &dlq],
    );
    allow(&cdc_user, &["Read", "Write"], &["--topic", positions]);
    allow(
        &cdc_user,
        &["Write", "Describe"],
        &["--transactional-id", &capture_id],
    );
    let (recs_user, recs_password) = scram_user("brewline-recs");
    allow(
        &recs_user,
        &["Read"],
        &["--topic", &orders, "--topic", &lines, "--group", &group],
    );
    allow(
        &recs_user,
        &["Write"],
        &["--topic", &suggestions, "--topic", &dlq],
    );
    let ids = format!("{group}-");
    let recs_ids = [&["--transactional-id", ids.as_str()][..], &prefixed[..]].concat();
    allow(&recs_user, &["Write", "Describe"], &recs_ids);
    let (accept_user, accept_password) = scram_user("brewline-accept");
    allow(
        &accept_user,
        &["Read"],
        &["--topic", &suggestions, "--group", &accept_group],
    );
    // Its producer (dead letters) is idempotent: WRITE on a topic gets it a producer id.
    allow(&accept_user, &["Write"], &["--topic", &dlq]);
    let (batch_user, batch_password) = scram_user("brewline-batch");
    allow(
        &batch_user,
        &["Read"],
        &[
            "--topic",
            &orders,
            "--topic",
            &lines,
            "--topic",
            &suggestions,
        ],
    );
    // A reader without a group still names one of its own (`brewline-reader-…`).
    let readers = [&["--group", "brewline-reader-"][..], &prefixed[..]].concat();
    for user in [&cdc_user, &batch_user] {
        allow(user, &["Read"], &readers);
    }

    let ca = PathBuf::from(env("TEST_BREWLINE_TLS")).join("ca.pem");
    let url = |role: &str| {
        env("TEST_BREWLINE_MYSQL_URL").replacen("root@", &format!("{users}{role}:{PASSWORD}@"), 1)
    };
    let mysql_as = |role: &str| {
        vec![
            ("BREWLINE_MYSQL__URL", url(role)),
            ("BREWLINE_MYSQL__SSL_MODE", "verify_identity".to_string()),
            ("BREWLINE_MYSQL__CA", ca.display().to_string()),
        ]
    };
    let secrets = [
        PASSWORD,
        &cdc_password,
        &recs_password,
        &accept_password,
        &batch_password,
    ];
    let run_as = |environment: Vec<(&'static str, String)>, args: &[&str]| {
        let out = d.command(args).envs(environment).output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr).to_string();
        for secret in secrets {
            assert!(
                !said.contains(secret),
                "a password is in the output: {said}"
            );
        }
        (out.status.success(), said)
    };
    let start_as = |name: &str, environment: Vec<(&'static str, String)>, args: &[&str]| {
        let pairs: Vec<(&str, &str)> = environment.iter().map(|(k, v)| (*k, v.as_str())).collect();
        d.start_with(name, args, &pairs)
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
        let (ok, said) = run_as(mysql_as("tills"), &args);
        assert!(ok, "the tills as their role: {said}");
    };
    let (redis_static, redis_dynamic) = (4, 5);
    let with = |mut a: Vec<(&'static str, String)>, b: Vec<(&'static str, String)>| {
        a.extend(b);
        a
    };

    // Orders of their own: the TLS Redis keeps the order state of an earlier run of this test
    // (the same seed, the same order ids) for the state's TTL.
    let seed = brewline_ports::now_us() % 1_000_000;
    tills(&seed.to_string());
    // The lookups into the TLS Redis as its administrator (the recommender's user only reads
    // them), from MariaDB as the cache's role.
    let cache = with(
        mysql_as("cache"),
        redis_as("TEST_BREWLINE_REDIS_ADMIN", (redis_static, redis_dynamic)),
    );
    let (ok, said) = run_as(cache, &["cache", "load"]);
    assert!(ok, "cache load as its role: {said}");
    let mut cdc = start_as(
        "cdc",
        with(mysql_as("capture"), as_user(&cdc_user, &cdc_password)),
        &["cdc"],
    );
    let mut recommend = start_as(
        "recommend",
        with(
            as_user(&recs_user, &recs_password),
            redis_as("TEST_BREWLINE_REDIS_RECS", (redis_static, redis_dynamic)),
        ),
        &["recommend"],
    );
    let mut accept = start_as(
        "accept",
        with(mysql_as("accept"), as_user(&accept_user, &accept_password)),
        &["accept", "--share", "1.0", "--group", &accept_group],
    );
    tills(&(seed + 1).to_string());
    let eligible = eligible_by_sql(&d).await;
    assert!(eligible.len() > 30, "{} eligible", eligible.len());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while (suggested_lines(&d).await as usize) < eligible.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} suggestions written back\ncdc:\n{}\nrecommend:\n{}\naccept:\n{}",
            suggested_lines(&d).await,
            eligible.len(),
            tail_of(&d.log("cdc")),
            tail_of(&d.log("recommend")),
            tail_of(&d.log("accept"))
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        suggested_lines(&d).await as usize,
        eligible.len(),
        "written back once"
    );
    // The batch run: its history in PostgreSQL over TLS as a password role that owns only
    // its own schema, its lake on S3 with the keys of the test server.
    let history_role = format!("{users}history");
    let postgres = postgres_superuser().await;
    postgres
        .batch_execute(&format!(
            "CREATE ROLE {history_role} LOGIN PASSWORD '{PASSWORD}' IN ROLE {SECURED_POSTGRES_ROLES};
             CREATE SCHEMA {history_role} AUTHORIZATION {history_role}"
        ))
        .await
        .unwrap();
    let history_as = |password: &str| {
        let url = env("TEST_BREWLINE_POSTGRES_URL").replacen(
            "brewline@",
            &format!("{history_role}:{password}@"),
            1,
        );
        vec![
            ("BREWLINE_BATCH__HISTORY", format!("{url}?sslmode=require")),
            ("BREWLINE_BATCH__HISTORY_CA", ca.display().to_string()),
        ]
    };
    let lake_as = |secret: String| {
        vec![
            ("BREWLINE_BATCH__S3__ENDPOINT", env("TEST_BREWLINE_S3")),
            (
                "BREWLINE_BATCH__S3__ACCESS_KEY_ID",
                env("TEST_BREWLINE_S3_KEY"),
            ),
            ("BREWLINE_BATCH__S3__SECRET_ACCESS_KEY", secret),
            ("BREWLINE_BATCH__S3__ALLOW_HTTP", "true".into()),
        ]
    };
    let batch_as = |history: Vec<(&'static str, String)>, secret: String, lake: &str| {
        let batch = with(mysql_as("batch"), as_user(&batch_user, &batch_password));
        let lake = format!("s3://lake/{}/{lake}", d.prefix);
        let args = [
            "batch",
            "run",
            "--servers",
            "--layer",
            "bronze",
            "--lake",
            &lake,
        ];
        run_as(with(with(batch, history), lake_as(secret)), &args)
    };
    let lake_files = |lake: &str| {
        let dir = PathBuf::from(env("TEST_BREWLINE_S3_DIR"))
            .join("lake")
            .join(&d.prefix)
            .join(lake);
        walk(&dir).len()
    };
    // A wrong password for the history, and a wrong key for the lake: each ends before
    // anything is written, saying what was refused.
    let (ok, said) = batch_as(
        history_as("not-the-password"),
        env("TEST_BREWLINE_S3_SECRET"),
        "refused",
    );
    assert!(!ok);
    assert!(said.contains("password authentication failed"), "{said}");
    let (ok, said) = batch_as(history_as(PASSWORD), "not-the-secret".into(), "refused");
    assert!(!ok);
    assert!(
        said.contains("SignatureDoesNotMatch") || said.contains("403"),
        "{said}"
    );
    assert_eq!(lake_files("refused"), 0, "a refused run wrote nothing");
    let (ok, said) = batch_as(history_as(PASSWORD), env("TEST_BREWLINE_S3_SECRET"), "lake");
    assert!(ok, "batch run as its role: {}", tail_of(&said));
    assert!(lake_files("lake") > 0, "the run wrote its lake to S3");
    let runs: i64 = postgres
        .query_one(
            &format!("SELECT count(*) FROM {history_role}.batch_runs"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 1, "the run is in its history, once");
    for (name, process) in [
        ("cdc", &mut cdc),
        ("recommend", &mut recommend),
        ("accept", &mut accept),
    ] {
        assert!(terminate(process).success(), "{name}:\n{}", d.log(name));
        let log = d.log(name);
        assert!(
            log.contains("written in Kafka transactions") || name == "accept",
            "{name}:\n{log}"
        );
        for secret in secrets {
            assert!(!log.contains(secret), "a password is in {name}'s log");
        }
    }

    // Another role's command: refused, naming what the server refused.
    let (ok, said) = run_as(mysql_as("accept"), &["simulate", "--orders", "1"]);
    assert!(!ok);
    assert!(
        said.contains("command denied") && said.contains("lacks the grant"),
        "{said}"
    );
    // The capture's user without TLS.
    let (ok, said) = run_as(
        vec![("BREWLINE_MYSQL__URL", url("capture"))],
        &["cdc", "--until-caught-up"],
    );
    assert!(!ok);
    assert!(said.contains("mysql.ssl_mode"), "{said}");
    let mut root = database(&d).await;
    for role in ["capture", "tills", "accept", "batch", "cache"] {
        root.query_drop(format!("DROP USER '{users}{role}'@'%'"))
            .await
            .unwrap();
    }
    root.disconnect().await.unwrap();
    postgres
        .batch_execute(&format!(
            "DROP SCHEMA {history_role} CASCADE; DROP ROLE {history_role}"
        ))
        .await
        .unwrap();
}

/// The group role whose members `scripts/services`' PostgreSQL takes over TLS only, with a
/// password (SCRAM).
const SECURED_POSTGRES_ROLES: &str = "brewline_secured";

/// The test PostgreSQL as its superuser (trusted on loopback), with the group role of
/// password users over TLS made.
async fn postgres_superuser() -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&env("TEST_BREWLINE_POSTGRES_URL"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {SECURED_POSTGRES_ROLES} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ))
        .await
        .unwrap();
    client
}

/// The files under `dir` (none when it does not exist).
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}
