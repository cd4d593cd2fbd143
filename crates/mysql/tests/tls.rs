//! The source database over TLS: the MariaDB of `scripts/services` takes TLS with the test
//! authority's certificate, and refuses a plaintext login to a user made `REQUIRE SSL` (as a
//! server with `require_secure_transport` refuses every one). Each `mysql.ssl_mode` is tried;
//! a plaintext login, an untrusted certificate and settings that do not go together end with a
//! message that says what to set. Needs `scripts/test`'s servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use brewline_mysql::{MysqlConfig, MysqlSource, SslMode};
use brewline_ports::SourceDb;
use mysql_async::prelude::Queryable;

mod common;
use common::seeded;

/// A user who must come over TLS and may read the database of `c`, and `c` as that user.
async fn tls_only_user(c: &MysqlConfig) -> MysqlConfig {
    let user = format!("tls{}", brewline_ports::now_us() % 1_000_000_000);
    let mut root = mysql_async::Conn::from_url(c.url.as_str()).await.unwrap();
    root.query_drop(format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'tls-test-secret' REQUIRE SSL"
    ))
    .await
    .unwrap();
    root.query_drop(format!(
        "GRANT SELECT ON `{}`.* TO '{user}'@'%'",
        c.database
    ))
    .await
    .unwrap();
    root.disconnect().await.unwrap();
    MysqlConfig {
        url: c
            .url
            .replacen("root@", &format!("{user}:tls-test-secret@"), 1),
        ..c.clone()
    }
}

fn ca() -> PathBuf {
    PathBuf::from(std::env::var("TEST_BREWLINE_TLS").expect("run through scripts/test"))
        .join("ca.pem")
}

#[tokio::test]
#[ignore = "needs MariaDB: run scripts/test"]
async fn a_user_who_must_use_tls_reads_over_it_and_is_told_what_to_set_otherwise() {
    let (_, root) = seeded("tls").await;
    let user = tls_only_user(&root).await;
    for (mode, ca) in [
        (SslMode::VerifyIdentity, Some(ca())),
        (SslMode::VerifyCa, Some(ca())),
        (SslMode::Required, None),
    ] {
        let c = MysqlConfig {
            ssl_mode: mode,
            ca,
            ..user.clone()
        };
        let counts = MysqlSource::new(&c).unwrap().counts().await;
        assert!(counts.is_ok(), "{mode:?}: {counts:?}");
    }

    let plaintext = MysqlSource::new(&user).unwrap().counts().await.unwrap_err();
    assert!(
        plaintext.to_string().contains("mysql.ssl_mode"),
        "{plaintext}"
    );
    assert!(
        !plaintext.to_string().contains("tls-test-secret"),
        "{plaintext}"
    );

    let untrusted = MysqlConfig {
        ssl_mode: SslMode::VerifyIdentity,
        ..user.clone()
    };
    let e = MysqlSource::new(&untrusted)
        .unwrap()
        .counts()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("mysql.ca"), "{e}");

    let unused_ca = MysqlConfig {
        ca: Some(ca()),
        ..user.clone()
    };
    let e = MysqlSource::new(&unused_ca).err().unwrap();
    assert!(
        e.to_string().contains("mysql.ssl_mode = \"verify_ca\""),
        "{e}"
    );
}
