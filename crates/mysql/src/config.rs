//! Where the source database is.

use brewline_ports::{PortError, Result};
use serde::{Deserialize, Serialize};

use crate::ENGINE;

/// The MySQL or MariaDB server and the shop's database on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MysqlConfig {
    /// The server, `mysql://user:password@host:port` (set the password from the environment,
    /// `BREWLINE_MYSQL__URL`); a database in the URL is ignored in favour of `database`, by
    /// every command.
    pub url: String,
    /// The shop's database.
    pub database: String,
    /// Connections kept open at most.
    pub max_connections: usize,
    /// TLS to the server, as MySQL's `--ssl-mode` names it: `"disabled"`, `"required"`
    /// (encrypted, the server's certificate not checked), `"verify_ca"` (its certificate must
    /// chain to `ca`, else to the system's authorities) or `"verify_identity"` (and name the
    /// host) [default: "disabled"]. A server with `require_secure_transport`, or a user made
    /// `REQUIRE SSL`, refuses a plaintext login.
    pub ssl_mode: SslMode,
    /// A PEM file of the authorities the server's certificate must chain to (`verify_ca`,
    /// `verify_identity`) [default: the system's].
    pub ca: Option<std::path::PathBuf>,
}

/// How the connection to the server is encrypted ([`MysqlConfig::ssl_mode`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SslMode {
    #[default]
    Disabled,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl Default for MysqlConfig {
    fn default() -> Self {
        MysqlConfig {
            url: "mysql://root@127.0.0.1:3306".into(),
            database: brewline_core::names::SOURCE_DATABASE.into(),
            max_connections: 8,
            ssl_mode: SslMode::Disabled,
            ca: None,
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
    /// The server of `url`, without a database: one the URL names is ignored in favour of
    /// `database` (said in a warning when they differ), so that a URL a user naturally writes,
    /// `mysql://user:password@host:3306/coffee_shop`, works before the database exists.
    pub(crate) fn server(&self) -> Result<mysql_async::Opts> {
        // The URL may hold a password: the error does not repeat it.
        let opts = mysql_async::Opts::from_url(&self.url).map_err(|e| {
            PortError::fatal(
                ENGINE,
                format!("mysql.url is not a MySQL URL ({e}); write it as mysql://user:password@host:port"),
            )
        })?;
        if let Some(named) = opts.db_name().filter(|db| *db != self.database) {
            tracing::warn!(
                url_database = named,
                database = %self.database,
                "mysql.url names a database: mysql.database is the one used"
            );
        }
        Ok(mysql_async::OptsBuilder::from_opts(opts)
            .db_name(None::<String>)
            .ssl_opts(self.ssl_opts()?)
            .into())
    }

    /// The TLS settings of `ssl_mode` and `ca`; `None` for a plain connection.
    fn ssl_opts(&self) -> Result<Option<mysql_async::SslOpts>> {
        let verifies = matches!(self.ssl_mode, SslMode::VerifyCa | SslMode::VerifyIdentity);
        if let Some(ca) = &self.ca {
            if !verifies {
                return Err(PortError::fatal(
                    ENGINE,
                    "mysql.ca is used to verify the server's certificate: set mysql.ssl_mode = \"verify_ca\" or \"verify_identity\"",
                ));
            }
            if !ca.is_file() {
                return Err(PortError::fatal(
                    ENGINE,
                    format!("mysql.ca: no file at {}", ca.display()),
                ));
            }
        }
        if self.ssl_mode == SslMode::Disabled {
            return Ok(None);
        }
        // rustls needs one process-wide choice of cryptography; ring, as the rest of brewline.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let roots = self.ca.iter().map(|ca| ca.clone().into()).collect();
        Ok(Some(
            mysql_async::SslOpts::default()
                .with_root_certs(roots)
                .with_danger_accept_invalid_certs(self.ssl_mode == SslMode::Required)
                .with_danger_skip_domain_validation(self.ssl_mode != SslMode::VerifyIdentity),
        ))
    }

    /// The server's host, port, user and password.
    pub fn address(&self) -> Result<ServerAddress> {
        let opts = self.server()?;
        Ok(ServerAddress {
            host: opts.ip_or_hostname().to_string(),
            port: opts.tcp_port(),
            user: opts.user().unwrap_or("root").to_string(),
            password: opts.pass().unwrap_or("").to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_in_the_url_is_not_the_connections() {
        for url in [
            "mysql://shop:pw@db.example:3307/coffee_shop",
            "mysql://shop:pw@db.example:3307/elsewhere",
            "mysql://shop:pw@db.example:3307",
        ] {
            let c = MysqlConfig {
                url: url.into(),
                ..MysqlConfig::default()
            };
            let server = c.server().unwrap();
            assert_eq!(server.db_name(), None, "{url}");
            assert_eq!(server.tcp_port(), 3307);
            let a = c.address().unwrap();
            assert_eq!((a.user.as_str(), a.password.as_str()), ("shop", "pw"));
        }
        let bad = MysqlConfig {
            url: "postgres://shop:secret@db".into(),
            ..MysqlConfig::default()
        };
        let e = bad.server().unwrap_err().to_string();
        assert!(e.contains("mysql.url is not a MySQL URL"), "{e}");
        assert!(!e.contains("secret"), "the password is not repeated: {e}");
    }
}
