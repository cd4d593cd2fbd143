//! `brewline config`: the effective configuration as TOML, each section and key under its
//! documentation, which is the doc comment of its field (read through the configuration's
//! JSON schema); keys with no value (optional ones left unset) listed in their section's
//! comment.

use schemars::Schema;
use serde_json::{Map, Value};
use toml_edit::{DocumentMut, Item, Table};

use crate::config::Config;

/// `config` as TOML with its documentation as comments.
pub fn documented(config: &Config) -> anyhow::Result<String> {
    let mut doc: DocumentMut = toml::to_string_pretty(config)?.parse()?;
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
        let text = documented(&config).unwrap();
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
}
