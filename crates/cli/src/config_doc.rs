//! `brewline config`: the effective configuration as TOML, each section and key under its
//! documentation, which is the doc comment of its field (read through the configuration's
//! JSON schema); keys with no value (optional ones left unset) listed in their section's
//! comment. Secrets are redacted unless asked for.

use brewline_core::secrets::{is_secret_key, redact_urls, REDACTED};
use schemars::Schema;
use serde_json::{Map, Value};
use toml_edit::{DocumentMut, Item, Table};

use crate::config::Config;

/// Whether secrets are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Each shown as [`REDACTED`] (a URL keeps all but its password).
    Redacted,
    Shown,
}

/// `config` as TOML with its documentation as comments.
pub fn documented(config: &Config, secrets: Secrets) -> anyhow::Result<String> {
    let mut doc: DocumentMut = toml::to_string_pretty(config)?.parse()?;
    if secrets == Secrets::Redacted {
        redact(doc.as_table_mut());
    }
    let schema: Schema = schemars::schema_for!(Config);
    let root = schema.as_value();
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotate(doc.as_table_mut(), root, &defs);
    Ok(doc.to_string())
}

/// Replaces each secret of `table` and its sub-tables: the value of a key that names one
/// ([`is_secret_key`]: `password`, `secret_access_key`, Kafka's `sasl.password`…), and the
/// password of every URL.
fn redact(table: &mut Table) {
    for (key, item) in table.iter_mut() {
        match item {
            Item::Table(sub) => redact(sub),
            Item::Value(value) => {
                if let Some(text) = value.as_str() {
                    let shown = if is_secret_key(key.get()) {
                        REDACTED.to_string()
                    } else {
                        redact_urls(text)
                    };
                    if shown != text {
                        let decor = value.decor().clone();
                        *value = toml_edit::Value::from(shown);
                        *value.decor_mut() = decor;
                    }
                }
            }
            _ => {}
        }
    }
}

/// The schema `s` refers to (`$ref`), or `s`.
fn resolve<'a>(s: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    s.get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
        .unwrap_or(s)
}

/// A property's description: its own (the field's doc comment), else its type's.
fn description(property: &Value, defs: &Map<String, Value>) -> Option<String> {
    let own = property.get("description").and_then(Value::as_str);
    own.or_else(|| {
        resolve(property, defs)
            .get("description")
            .and_then(Value::as_str)
    })
    .map(str::to_string)
}

/// `text` as comment lines, each `# `.
fn comment(text: &str, indent: &str) -> String {
    text.lines()
        .map(|l| format!("{indent}# {l}").trim_end().to_string() + "\n")
        .collect()
}

/// Puts each key's documentation above it, and a section's above its header with the keys it
/// leaves unset.
fn annotate(table: &mut Table, schema: &Value, defs: &Map<String, Value>) {
    let schema = resolve(schema, defs);
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (key, property) in properties {
        let doc = description(property, defs).unwrap_or_default();
        match table.get_mut(key) {
            Some(Item::Table(sub)) => {
                let unset: String = resolve(property, defs)
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|p| {
                        p.iter()
                            .filter(|(k, _)| !sub.contains_key(k))
                            .map(|(k, v)| {
                                let doc = description(v, defs).unwrap_or_default();
                                comment(&format!("{k} (unset): {doc}"), "")
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                sub.decor_mut()
                    .set_prefix(format!("\n{}{unset}", comment(&doc, "")));
                annotate(sub, property, defs);
            }
            Some(_) => {
                if let Some(mut k) = table.key_mut(key) {
                    k.leaf_decor_mut().set_prefix(comment(&doc, ""));
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_under_its_documentation_and_the_text_reads_back() {
        let config = Config::default();
        let text = documented(&config, Secrets::Shown).unwrap();
        let mut previous = "";
        for line in text.lines() {
            let line = line.trim();
            // A key of a section (the free-form maps' quoted keys and arrays' lines aside).
            let is_key = line.contains(" = ") && !line.starts_with(['#', '[', '"']);
            if is_key {
                assert!(
                    previous.starts_with('#'),
                    "{line:?} has no documentation above it in\n{text}"
                );
            }
            if line.starts_with('[') {
                assert!(previous.starts_with('#'), "{line:?} has no documentation");
            }
            previous = line;
        }
        assert!(text.contains("# Bootstrap servers"), "{text}");
        assert!(text.contains("# lake (unset): The lake's root"), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(
            toml::to_string(&back).unwrap(),
            toml::to_string(&config).unwrap()
        );
    }

    #[test]
    fn secrets_are_redacted_unless_shown() {
        let mut config = Config::default();
        config.mysql.url = "mysql://capture:db-pass-1@db:3306".into();
        config.redis.dynamic_url = "rediss://recs:redis-pass-2@cache:6380".into();
        config.batch.history = Some("postgres://batch:pg-pass-3@pg/history".into());
        config.batch.s3.access_key_id = Some("brewline-lake".into());
        config.batch.s3.secret_access_key = Some("s3-secret-4".into());
        config
            .kafka
            .consumer
            .insert("sasl.password".into(), "kafka-pass-5".into());
        config
            .kafka
            .consumer
            .insert("sasl.username".into(), "recommender".into());
        let redacted = documented(&config, Secrets::Redacted).unwrap();
        for secret in [
            "db-pass-1",
            "redis-pass-2",
            "pg-pass-3",
            "s3-secret-4",
            "kafka-pass-5",
        ] {
            assert!(!redacted.contains(secret), "{secret} in\n{redacted}");
        }
        for kept in [
            "mysql://capture:<redacted>@db:3306",
            "rediss://recs:<redacted>@cache:6380",
            "postgres://batch:<redacted>@pg/history",
            "brewline-lake",
            "recommender",
        ] {
            assert!(redacted.contains(kept), "{kept} in\n{redacted}");
        }
        let shown = documented(&config, Secrets::Shown).unwrap();
        let back: Config = toml::from_str(&shown).unwrap();
        assert_eq!(
            back.batch.s3.secret_access_key.as_deref(),
            Some("s3-secret-4")
        );
        assert_eq!(back.mysql.url, config.mysql.url);
    }
}
