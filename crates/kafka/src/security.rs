//! How brewline connects to the cluster: TLS, SASL, or both (`[kafka.security]`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Encryption and authentication of every connection to the cluster. For a managed cluster
/// (Confluent Cloud, MSK, Aiven…) this is usually `protocol = "sasl_ssl"` with the user and
/// password it gives; the system's certificate authorities are used unless `ca` names others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSecurity {
    /// `"plaintext"`, `"ssl"` (TLS; with `certificate` and `key`, mutual TLS: the broker
    /// knows the client by its certificate), `"sasl_plaintext"` or `"sasl_ssl"` (a user and
    /// password over TLS) [default: "plaintext"].
    pub protocol: SecurityProtocol,
    /// The SASL mechanism: `"SCRAM-SHA-512"`, `"SCRAM-SHA-256"` or `"PLAIN"` (send PLAIN over
    /// TLS only) [default: "SCRAM-SHA-512"].
    pub sasl_mechanism: SaslMechanism,
    /// The SASL user name.
    pub username: Option<String>,
    /// The SASL password: set it from the environment, `BREWLINE_KAFKA__SECURITY__PASSWORD`.
    pub password: Option<String>,
    /// A PEM file of the certificate authorities the brokers' certificates must chain to
    /// [default: the system's].
    pub ca: Option<PathBuf>,
    /// The client's certificate (PEM), for mutual TLS.
    pub certificate: Option<PathBuf>,
    /// The client's private key (PEM), for mutual TLS.
    pub key: Option<PathBuf>,
    /// The password of `key`, when it is encrypted: from the environment,
    /// `BREWLINE_KAFKA__SECURITY__KEY_PASSWORD`.
    pub key_password: Option<String>,
}

/// How a connection to a broker is made ([`KafkaSecurity::protocol`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub(crate) fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// The SASL mechanism ([`KafkaSecurity::sasl_mechanism`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum SaslMechanism {
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "PLAIN")]
    Plain,
}

impl SaslMechanism {
    fn name(self) -> &'static str {
        match self {
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::Plain => "PLAIN",
        }
    }
}

impl KafkaSecurity {
    /// An error saying what to set or remove when the settings do not go together or name a
    /// file that is not there.
    pub fn check(&self) -> Result<(), String> {
        let protocol = self.protocol;
        let p = protocol.name();
        if protocol.sasl() {
            if self.username.as_deref().is_none_or(str::is_empty) {
                return Err(format!(
                    "kafka.security.protocol = \"{p}\" needs kafka.security.username"
                ));
            }
            if self.password.as_deref().is_none_or(str::is_empty) {
                return Err(format!("kafka.security.protocol = \"{p}\" needs kafka.security.password: set it from the environment, BREWLINE_KAFKA__SECURITY__PASSWORD"));
            }
        } else if self.username.is_some() || self.password.is_some() {
            return Err(format!("kafka.security.username and password are sent with SASL only, and protocol is \"{p}\": set kafka.security.protocol = \"sasl_ssl\""));
        }
        let files = [
            ("ca", &self.ca),
            ("certificate", &self.certificate),
            ("key", &self.key),
        ];
        for (name, file) in files {
            let Some(file) = file else { continue };
            if !protocol.tls() {
                return Err(format!("kafka.security.{name} is used over TLS only, and protocol is \"{p}\": set kafka.security.protocol = \"ssl\" or \"sasl_ssl\""));
            }
            if !Path::new(file).is_file() {
                return Err(format!(
                    "kafka.security.{name}: no file at {}",
                    file.display()
                ));
            }
        }
        if self.certificate.is_some() != self.key.is_some() {
            return Err(
                "kafka.security.certificate and kafka.security.key go together (mutual TLS): set both or neither"
                    .into(),
            );
        }
        Ok(())
    }

    /// librdkafka's properties for these settings.
    pub fn properties(&self) -> BTreeMap<String, String> {
        let mut p = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            p.insert(k.to_string(), v);
        };
        set("security.protocol", self.protocol.name().into());
        if self.protocol.sasl() {
            set("sasl.mechanisms", self.sasl_mechanism.name().into());
            set("sasl.username", self.username.clone().unwrap_or_default());
            set("sasl.password", self.password.clone().unwrap_or_default());
        }
        if self.protocol.tls() {
            // The broker's name checked against its certificate, as Java clients do.
            set("ssl.endpoint.identification.algorithm", "https".into());
            let path = |f: &PathBuf| f.display().to_string();
            if let Some(ca) = &self.ca {
                set("ssl.ca.location", path(ca));
            }
            if let Some(c) = &self.certificate {
                set("ssl.certificate.location", path(c));
            }
            if let Some(k) = &self.key {
                set("ssl.key.location", path(k));
            }
            if let Some(pw) = &self.key_password {
                set("ssl.key.password", pw.clone());
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_do_not_go_together_say_what_to_set() {
        assert_eq!(KafkaSecurity::default().check(), Ok(()));
        let ca = std::env::temp_dir().join(format!("brewline-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "not checked here").unwrap();
        let sasl = KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            username: Some("recs".into()),
            password: Some("pw".into()),
            ca: Some(ca.clone()),
            ..KafkaSecurity::default()
        };
        assert_eq!(sasl.check(), Ok(()));
        let p = sasl.properties();
        assert_eq!(p["security.protocol"], "sasl_ssl");
        assert_eq!(p["sasl.mechanisms"], "SCRAM-SHA-512");
        assert_eq!(p["sasl.username"], "recs");
        assert_eq!(p["ssl.ca.location"], ca.display().to_string());

        for (broken, says) in [
            (
                KafkaSecurity {
                    password: None,
                    ..sasl.clone()
                },
                "BREWLINE_KAFKA__SECURITY__PASSWORD",
            ),
            (
                KafkaSecurity {
                    username: None,
                    ..sasl.clone()
                },
                "kafka.security.username",
            ),
            (
                KafkaSecurity {
                    protocol: SecurityProtocol::Plaintext,
                    ..sasl.clone()
                },
                "protocol = \"sasl_ssl\"",
            ),
            (
                KafkaSecurity {
                    protocol: SecurityProtocol::SaslPlaintext,
                    ..sasl.clone()
                },
                "kafka.security.ca is used over TLS only",
            ),
            (
                KafkaSecurity {
                    ca: Some("/nowhere/ca.pem".into()),
                    ..sasl.clone()
                },
                "no file at /nowhere/ca.pem",
            ),
            (
                KafkaSecurity {
                    protocol: SecurityProtocol::Ssl,
                    username: None,
                    password: None,
                    certificate: Some(ca.clone()),
                    ..sasl.clone()
                },
                "go together",
            ),
        ] {
            let e = broken.check().unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        let plain = KafkaSecurity::default().properties();
        assert_eq!(plain.len(), 1, "{plain:?}");
        std::fs::remove_file(ca).unwrap();
    }
}
