//! brewline's source database on MySQL 8 or MariaDB 10.11, through mysql_async: the
//! `coffee_shop` schema, its reference data, the tills' orders (one transaction each) and the
//! suggestions customers accept; and change capture from its row binlog ([`MysqlCapture`]),
//! with the capture's position kept on the same server ([`MysqlCheckpoints`]).

pub mod capture;
mod checkpoints;
mod config;
mod source;

pub use capture::{CdcConfig, MysqlCapture, OnLostPosition};
pub use checkpoints::MysqlCheckpoints;
pub use config::{MysqlConfig, ServerAddress};
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
    let message = format!("{context}: {e}");
    if retryable {
        PortError::retryable(ENGINE, message)
    } else {
        PortError::fatal(ENGINE, message)
    }
}
