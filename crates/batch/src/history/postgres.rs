//! The run history in PostgreSQL (`batch.history = "postgres://..."`).

use std::path::Path;

use async_trait::async_trait;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

use super::{layers, RunHistory, RunSummary, RECENT, SCHEMA};
use crate::job::RunReport;
use crate::{BatchError, Result};

pub struct PostgresHistory {
    client: Client,
}

fn error(e: impl std::fmt::Display) -> BatchError {
    BatchError::History(e.to_string())
}

impl PostgresHistory {
    /// Connects to `url` (`postgres://user:password@host:port/db`) and creates the tables.
    /// With `?sslmode=require` the connection is TLS and the server's certificate must chain
    /// to `ca` (a PEM file), else to the system's authorities; otherwise it is plain.
    pub async fn connect(url: &str, ca: Option<&Path>) -> Result<PostgresHistory> {
        // The URL may hold a password: errors do not repeat it.
        let config: tokio_postgres::Config = url.parse().map_err(|e| {
            error(format!(
                "batch.history is not a PostgreSQL URL ({e}); write it as postgres://user:password@host:port/db"
            ))
        })?;
        let failed = |e: tokio_postgres::Error| {
            // The server's message, or the chain of causes ("db error" alone says nothing).
            let mut text = match e.as_db_error() {
                Some(db) => format!("{e}: {}", db.message()),
                None => e.to_string(),
            };
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                if e.as_db_error().is_none() {
                    text.push_str(&format!(": {c}"));
                }
                cause = c.source();
            }
            let hint = if text.contains("certificate") || text.contains("UnknownIssuer") {
                ": the server's certificate is not trusted: set batch.history_ca to the authority that signed it"
            } else if text.contains("no encryption") || text.contains("SSL off") {
                ": the server takes this user over TLS only: add ?sslmode=require to batch.history"
            } else {
                ""
            };
            error(format!("connecting to PostgreSQL: {text}{hint}"))
        };
        let client = if config.get_ssl_mode() == SslMode::Require {
            let (client, connection) = config.connect(tls(ca)?).await.map_err(failed)?;
            tokio::spawn(watch(connection));
            client
        } else {
            if ca.is_some() {
                return Err(error(
                    "batch.history_ca is set but batch.history is not TLS: add ?sslmode=require to its URL",
                ));
            }
            let (client, connection) = config.connect(NoTls).await.map_err(failed)?;
            tokio::spawn(watch(connection));
            client
        };
        for ddl in SCHEMA {
            client.batch_execute(ddl).await.map_err(error)?;
        }
        Ok(PostgresHistory { client })
    }
}

/// Logs the end of a connection that failed.
async fn watch<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::warn!(error = %e, "PostgreSQL connection ended");
    }
}

/// rustls, trusting the authorities of `ca` (a PEM file), else the system's.
fn tls(ca: Option<&Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            let pem = std::fs::read(ca).map_err(|e| {
                error(format!(
                    "batch.history_ca: cannot read {}: {e}",
                    ca.display()
                ))
            })?;
            for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: rustls::pki_types::CertificateDer<'static> = cert.map_err(|e| {
                    error(format!(
                        "batch.history_ca: {} is not PEM: {e}",
                        ca.display()
                    ))
                })?;
                roots
                    .add(cert)
                    .map_err(|e| error(format!("batch.history_ca: {e}")))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| error(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[async_trait]
impl RunHistory for PostgresHistory {
    async fn record(&self, r: &RunReport) -> Result<()> {
        let json = serde_json::to_string(r).map_err(error)?;
        let layers = layers(r);
        // One statement per row, all in one transaction (the client is shared, so the
        // transaction is written out as SQL rather than borrowed mutably).
        self.client.batch_execute("BEGIN").await.map_err(error)?;
        let result = async {
            self.client
                .execute(
                    "INSERT INTO batch_runs (run_id, started_ms, finished_ms, lake, layers, passed, failed_layer, report)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (run_id) DO NOTHING",
                    &[&r.run_id, &r.started_ms, &r.finished_ms, &r.lake, &layers, &r.passed(), &r.failed_layer, &json],
                )
                .await?;
            for t in &r.tables {
                self.client
                    .execute(
                        "INSERT INTO batch_run_tables (run_id, table_name, row_count, seconds, version)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        &[&r.run_id, &t.table, &(t.rows as i64), &t.seconds, &t.version],
                    )
                    .await?;
            }
            for g in &r.gates {
                self.client
                    .execute(
                        "INSERT INTO batch_run_gates (run_id, layer, gate, violations)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[&r.run_id, &g.layer, &g.name, &(g.violations as i64)],
                    )
                    .await?;
            }
            Ok::<(), tokio_postgres::Error>(())
        }
        .await;
        match result {
            Ok(()) => self.client.batch_execute("COMMIT").await.map_err(error),
            Err(e) => {
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(error(e))
            }
        }
    }

    async fn recent(&self, limit: usize) -> Result<Vec<RunSummary>> {
        let rows = self
            .client
            .query(&format!("{RECENT}{limit}"), &[])
            .await
            .map_err(error)?;
        rows.iter()
            .map(|r| {
                Ok(RunSummary {
                    run_id: r.try_get(0).map_err(error)?,
                    started_ms: r.try_get(1).map_err(error)?,
                    finished_ms: r.try_get(2).map_err(error)?,
                    lake: r.try_get(3).map_err(error)?,
                    layers: r.try_get(4).map_err(error)?,
                    passed: r.try_get(5).map_err(error)?,
                    failed_layer: r.try_get(6).map_err(error)?,
                    rows: r.try_get::<_, i64>(7).map_err(error)?,
                    gates_failed: r.try_get(8).map_err(error)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs the PostgreSQL server scripts/test starts (TEST_BREWLINE_POSTGRES_URL), which
    /// takes TLS with the test authority's certificate (TEST_BREWLINE_TLS) and only TLS from
    /// the role `brewline_tls`.
    #[tokio::test]
    #[ignore = "needs PostgreSQL: run scripts/test"]
    async fn runs_are_recorded_once_and_listed_newest_first_in_plaintext_or_over_tls() {
        let url = std::env::var("TEST_BREWLINE_POSTGRES_URL")
            .expect("TEST_BREWLINE_POSTGRES_URL is set: run through scripts/test");
        let ca = std::path::PathBuf::from(
            std::env::var("TEST_BREWLINE_TLS").expect("TEST_BREWLINE_TLS is set"),
        )
        .join("ca.pem");
        let h = PostgresHistory::connect(&url, None).await.unwrap();
        h.client
            .batch_execute("DROP TABLE IF EXISTS batch_run_gates, batch_run_tables, batch_runs")
            .await
            .unwrap();
        let h = PostgresHistory::connect(&url, None).await.unwrap();
        super::super::conformance(&h).await;

        // Over TLS, as a role the server takes over TLS only: the same history.
        h.client
            .batch_execute(
                "DO $$ BEGIN CREATE ROLE brewline_tls LOGIN SUPERUSER; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
            )
            .await
            .unwrap();
        let tls_url = format!(
            "{}?sslmode=require",
            url.replacen("brewline@", "brewline_tls@", 1)
        );
        let over_tls = PostgresHistory::connect(&tls_url, Some(&ca)).await.unwrap();
        assert_eq!(
            over_tls.recent(10).await.unwrap().len(),
            h.recent(10).await.unwrap().len()
        );
        let plain = url.replacen("brewline@", "brewline_tls@", 1);
        let e = PostgresHistory::connect(&plain, None).await.err().unwrap();
        assert!(e.to_string().contains("sslmode=require"), "{e}");
        let e = PostgresHistory::connect(&tls_url, None)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("batch.history_ca"), "{e}");
        let e = PostgresHistory::connect(&url, Some(&ca))
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("sslmode=require"), "{e}");
    }
}
