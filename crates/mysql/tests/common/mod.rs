//! A database of its own for each test, on the server `scripts/test` starts.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use brewline_core::ReferenceData;
use brewline_mysql::{MysqlConfig, MysqlSource};
use brewline_ports::SourceDb;

pub fn config(name: &str) -> MysqlConfig {
    let url = std::env::var("TEST_BREWLINE_MYSQL_URL")
        .expect("TEST_BREWLINE_MYSQL_URL is not set: run these tests through scripts/test");
    MysqlConfig {
        url,
        database: format!("{name}_{}", brewline_ports::now_us()),
        ..MysqlConfig::default()
    }
}

/// A fresh database with the schema and the bundled reference data.
pub async fn seeded(name: &str) -> (MysqlSource, MysqlConfig) {
    let c = config(name);
    let s = MysqlSource::new(&c).unwrap();
    s.init_schema().await.unwrap();
    s.seed_reference(&ReferenceData::bundled().unwrap())
        .await
        .unwrap();
    (s, c)
}
