//! The first call to the cluster, made so that a client that cannot connect says why:
//! librdkafka keeps retrying a refused login or a failed TLS handshake in the background and
//! reports it only as a global error, while the call that needed the connection merely times
//! out.

use std::sync::Mutex;
use std::time::Duration;

use brewline_ports::{PortError, Result};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer as _, ProducerContext};

use crate::security::SecurityProtocol;
use crate::{client_config, port_error, KafkaConfig, ENGINE};

/// How long the first call may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// Keeps the errors librdkafka reports for the client as a whole (a refused login, a failed
/// TLS handshake, a broker out of reach), and logs them as rdkafka does.
#[derive(Default)]
pub(crate) struct Recorded {
    errors: Mutex<Vec<(Option<RDKafkaErrorCode>, String)>>,
}

impl ClientContext for Recorded {
    /// A connection that failed is logged (`FAIL`), with librdkafka's guess at why.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!("librdkafka: {fac}: {message}");
        let severe = matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
        );
        if fac == "FAIL" || severe {
            if let Ok(mut errors) = self.errors.lock() {
                errors.push((None, message.to_string()));
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("librdkafka: {error}: {reason}");
        if let Ok(mut errors) = self.errors.lock() {
            errors.push((error.rdkafka_error_code(), reason.to_string()));
        }
    }
}

impl ProducerContext for Recorded {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// What the recorded errors say is wrong, and what to set, if they say; and whether it is
/// settings that are wrong (a refused login, a certificate not trusted), which no retry
/// mends.
fn explanation(
    errors: &[(Option<RDKafkaErrorCode>, String)],
    config: &KafkaConfig,
) -> Option<(bool, String)> {
    let security = &config.security;
    let said = |code: RDKafkaErrorCode| {
        errors
            .iter()
            .find(|(c, _)| *c == Some(code))
            .map(|(_, r)| r.as_str())
    };
    let login_refused = said(RDKafkaErrorCode::Authentication).or_else(|| {
        errors.iter().map(|(_, r)| r.as_str()).find(|r| {
            r.contains("SASL authentication error") || r.contains("Authentication failed")
        })
    });
    if let Some(reason) = login_refused {
        return Some((true, format!(
            "the cluster refused the login ({reason}): check kafka.security.username ({}), the password (BREWLINE_KAFKA__SECURITY__PASSWORD) and kafka.security.sasl_mechanism, and that the listener at kafka.brokers takes SASL",
            security.username.as_deref().unwrap_or("unset")
        )));
    }
    let tls_failed = |r: &str| r.contains("SSL handshake failed") || r.contains("certificate");
    let tls = said(RDKafkaErrorCode::SSL).or_else(|| {
        errors
            .iter()
            .map(|(_, r)| r.as_str())
            .find(|r| tls_failed(r))
    });
    if let Some(reason) = tls {
        let what = if reason.contains("certificate verify failed") {
            "the brokers' certificate is not signed by an authority brewline trusts: set kafka.security.ca to the PEM file of the one that signed it"
        } else if security.certificate.is_none() && security.protocol == SecurityProtocol::Ssl {
            "a listener that asks for a client certificate needs kafka.security.certificate and kafka.security.key"
        } else {
            "check kafka.security.protocol, kafka.security.ca and, for mutual TLS, kafka.security.certificate and key"
        };
        return Some((true, format!("the TLS handshake failed ({reason}): {what}")));
    }
    // The first error that says more than "all brokers are down"; with none, no broker
    // answered at all.
    let Some((_, reason)) = errors
        .iter()
        .find(|(c, _)| *c != Some(RDKafkaErrorCode::AllBrokersDown))
    else {
        return Some((false, format!("no broker answered within {} s: check kafka.brokers, and that kafka.security.protocol (\"{}\") is what the listener speaks (a TLS listener does not answer a plaintext client)", PATIENCE.as_secs(), security.protocol.name())));
    };
    let plaintext = matches!(
        security.protocol,
        SecurityProtocol::Plaintext | SecurityProtocol::SaslPlaintext
    );
    if plaintext && (reason.contains("security.protocol") || reason.contains("Disconnected")) {
        return Some((true, format!("{reason}: the listener at kafka.brokers hangs up on a plaintext client, so it expects TLS: set kafka.security.protocol = \"ssl\" or \"sasl_ssl\"")));
    }
    Some((false, reason.clone()))
}

/// Connects to the cluster and reads its metadata: the number of brokers, or an error that
/// says why it could not (a refused login, a failed TLS handshake, a wrong protocol, no
/// broker at the address), and what to set.
pub async fn preflight(config: &KafkaConfig) -> Result<usize> {
    config
        .security
        .check()
        .map_err(|e| PortError::fatal(ENGINE, e))?;
    // A producer's client: its errors reach the context when it is polled (a consumer's come
    // back from its poll without their reason).
    let client: BaseProducer<Recorded> = client_config(&config.common_properties())
        // Whatever the process logs: a failed connection's log line says why.
        .set_log_level(RDKafkaLogLevel::Warning)
        .create_with_context(Recorded::default())
        .map_err(|e| port_error("creating a metadata client", e))?;
    let config = config.clone();
    tokio::task::spawn_blocking(
        move || match client.client().fetch_metadata(None, PATIENCE) {
            Ok(m) => Ok(m.brokers().len()),
            Err(e) => {
                client.poll(Duration::from_millis(200));
                let errors = client
                    .context()
                    .errors
                    .lock()
                    .map(|e| e.clone())
                    .unwrap_or_default();
                let context = format!("connecting to the brokers at {}", config.brokers);
                Err(match explanation(&errors, &config) {
                    Some((true, why)) => PortError::fatal(ENGINE, format!("{context}: {e}: {why}")),
                    Some((false, why)) => port_error(&format!("{context} ({why})"), e),
                    None => port_error(&context, e),
                })
            }
        },
    )
    .await
    .map_err(|e| PortError::fatal(ENGINE, format!("reading the cluster's metadata: {e}")))?
}
