//! brewline's source database on MySQL 8 or MariaDB 10.11, through mysql_async: the
//! `coffee_shop` schema, its reference data, the tills' orders (one transaction each) and the
//! suggestions customers accept; and change capture from its row binlog ([`MysqlCapture`]),
//! with the capture's position kept on the same server ([`MysqlCheckpoints`]); the least each
//! role needs of the server ([`grants`]).

pub mod capture;
mod checkpoints;
mod config;
pub mod grants;
mod source;

pub use capture::{CdcConfig, MysqlCapture, OnLostPosition};
pub use checkpoints::MysqlCheckpoints;
pub use config::{MysqlConfig, ServerAddress, SslMode};
pub use source::MysqlSource;

use brewline_ports::PortError;

const ENGINE: &str = "mysql";

/// A mysql_async error as a port error: retryable when the connection or the server failed,
/// not when the statement did.
pub(crate) fn port_error(context: &str, e: mysql_async::Error) -> PortError {
    let retryable = match &e {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        // Deadlock, lock wait timeout, server shutting down, too many connections.
        mysql_async::Error::Server(s) => matches!(s.code, 1205 | 1213 | 1040 | 1053 | 2006 | 2013),
        _ => false,
    };
    let hint = match &e {
        // Access denied: the password, or a user that must come over TLS.
        mysql_async::Error::Server(s) if s.code == 1045 => {
            ": check the user and password in mysql.url; a user made REQUIRE SSL (or a server with require_secure_transport) needs mysql.ssl_mode"
        }
        // A missing grant: the server names the command and the object.
        mysql_async::Error::Server(s) if matches!(s.code, 1044 | 1142 | 1143 | 1227) => {
            ": the user lacks the grant the server names here"
        }
        mysql_async::Error::Io(io) if io.to_string().contains("certificate") => {
            ": the server's certificate is not trusted: set mysql.ca to the authority that signed it (or mysql.ssl_mode = \"required\" to encrypt without checking it)"
        }
        _ => "",
    };
    let message = format!("{context}: {e}{hint}");
    if retryable {
        PortError::retryable(ENGINE, message)
    } else {
        PortError::fatal(ENGINE, message)
    }
}
