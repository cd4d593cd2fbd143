//! Where the source database is.

use serde::{Deserialize, Serialize};

/// The MySQL or MariaDB server and the shop's database on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MysqlConfig {
    /// The server, `mysql://user:password@host:port` (set the password from the environment,
    /// `BREWLINE_MYSQL__URL`); a database in the URL is ignored in favour of `database`.
    pub url: String,
    /// The shop's database.
    pub database: String,
    /// Connections kept open at most.
    pub max_connections: usize,
}

impl Default for MysqlConfig {
    fn default() -> Self {
        MysqlConfig {
            url: "mysql://root@127.0.0.1:3306".into(),
            database: brewline_core::names::SOURCE_DATABASE.into(),
            max_connections: 8,
        }
    }
}
