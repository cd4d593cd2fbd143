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

/// The parts of [`MysqlConfig::url`], for a client that takes them one by one (Debezium).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl MysqlConfig {
    /// The server's host, port, user and password.
    pub fn address(&self) -> Result<ServerAddress, String> {
        let opts = mysql_async::Opts::from_url(&self.url).map_err(|e| {
            format!(
                "mysql.url is not a MySQL URL ({e}); write it as mysql://user:password@host:port"
            )
        })?;
        Ok(ServerAddress {
            host: opts.ip_or_hostname().to_string(),
            port: opts.tcp_port(),
            user: opts.user().unwrap_or("root").to_string(),
            password: opts.pass().unwrap_or("").to_string(),
        })
    }
}
