//! Kafka Connect's Debezium connector as brewline deploys it (`deploy/connect/mysql-source.json`),
//! made into a connector properties file for one database: what the tests and the benchmark
//! that run Debezium beside `brewline cdc` start Connect with (`scripts/connect`).

use std::collections::BTreeMap;

/// Where Debezium reads and writes.
#[derive(Debug, Clone)]
pub struct DebeziumSource {
    /// MySQL/MariaDB host, port, user and password.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The captured database: its `orders` and `order_details`.
    pub database: String,
    /// Topics are `{topic_prefix}.{database}.{table}`.
    pub topic_prefix: String,
    /// The replica id Debezium registers with.
    pub server_id: u32,
    /// Bootstrap servers, for the connector's schema history topic.
    pub brokers: String,
    /// JsonConverter's `schemas.enable` for values.
    pub schemas: bool,
    /// Further properties, e.g. `snapshot.mode`.
    pub extra: BTreeMap<String, String>,
}

/// The prefixes of the schema history's Kafka client settings.
const SCHEMA_HISTORY_CLIENTS: [&str; 2] = [
    "schema.history.internal.producer.",
    "schema.history.internal.consumer.",
];

/// A regex matching `text` literally.
fn literal(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escape = !c.is_ascii_alphanumeric() && c != '_' && c != '-';
            escape.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

/// The properties of the deployed connector (`deployed`: the text of
/// `deploy/connect/mysql-source.json`) for `source`, with Debezium's MariaDB connector (Debezium
/// 3's MySQL connector no longer reads MariaDB), as a `.properties` file's text.
pub fn connector_properties(deployed: &str, source: &DebeziumSource) -> Result<String, String> {
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_str(deployed)
        .map_err(|e| format!("the deployed connector is not a JSON object: {e}"))?;
    let mut p = BTreeMap::new();
    for (k, v) in json {
        let v = v
            .as_str()
            .ok_or_else(|| format!("the deployed connector's {k} is not a string"))?;
        // How the deployment's schema history logs in to the deployment's cluster: pointed at
        // `source.brokers`, the connector logs in as `source.extra` says, if at all.
        if SCHEMA_HISTORY_CLIENTS.iter().any(|c| k.starts_with(c)) {
            continue;
        }
        p.insert(k, v.to_string());
    }
    let (db, prefix) = (&source.database, &source.topic_prefix);
    let pattern = |table: &str| format!("{}\\.{}\\.{table}", literal(prefix), literal(db));
    let set = [
        ("name", format!("{prefix}-{db}")),
        (
            "connector.class",
            "io.debezium.connector.mariadb.MariaDbConnector".into(),
        ),
        ("database.hostname", source.host.clone()),
        ("database.port", source.port.to_string()),
        ("database.user", source.user.clone()),
        ("database.password", source.password.clone()),
        ("database.server.id", source.server_id.to_string()),
        ("topic.prefix", prefix.clone()),
        ("database.include.list", db.clone()),
        (
            "table.include.list",
            format!("{db}.orders,{db}.order_details"),
        ),
        (
            "message.key.columns",
            format!("{db}.orders:id;{db}.order_details:order_id"),
        ),
        ("value.converter.schemas.enable", source.schemas.to_string()),
        (
            "schema.history.internal.kafka.bootstrap.servers",
            source.brokers.clone(),
        ),
        (
            "schema.history.internal.kafka.topic",
            format!("{prefix}.{db}.schema-history"),
        ),
        ("predicates.isOrders.pattern", pattern("orders")),
        ("predicates.isLines.pattern", pattern("order_details")),
    ];
    for (k, v) in set {
        p.insert(k.to_string(), v);
    }
    p.extend(source.extra.clone());
    // java.util.Properties reads a backslash as an escape.
    Ok(p.iter()
        .map(|(k, v)| format!("{k}={}\n", v.replace('\\', "\\\\")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployed_connector_is_pointed_at_one_database_and_its_topics() {
        let deployed = include_str!("../../../deploy/connect/mysql-source.json");
        let text = connector_properties(
            deployed,
            &DebeziumSource {
                host: "127.0.0.1".into(),
                port: 3307,
                user: "capture".into(),
                password: "secret".into(),
                database: "shop_1".into(),
                topic_prefix: "debezium".into(),
                server_id: 7,
                brokers: "a:1,b:2".into(),
                schemas: true,
                extra: BTreeMap::from([("snapshot.mode".into(), "no_data".into())]),
            },
        )
        .unwrap();
        let props: BTreeMap<&str, &str> =
            text.lines().map(|l| l.split_once('=').unwrap()).collect();
        assert_eq!(
            props["connector.class"],
            "io.debezium.connector.mariadb.MariaDbConnector"
        );
        assert_eq!(props["database.port"], "3307");
        assert_eq!(
            props["table.include.list"],
            "shop_1.orders,shop_1.order_details"
        );
        assert_eq!(props["snapshot.mode"], "no_data");
        assert_eq!(props["value.converter.schemas.enable"], "true");
        // A regex of the topic, its dots escaped, its backslashes escaped for Properties.
        assert_eq!(
            props["predicates.isLines.pattern"],
            "debezium\\\\.shop_1\\\\.order_details"
        );
        // Kept from the deployed connector.
        assert_eq!(props["decimal.handling.mode"], "string");
        assert!(props["transforms"].contains("orderKey"));
        // Not how the deployment's schema history logs in to the deployment's cluster.
        assert!(deployed.contains("schema.history.internal.producer.sasl.jaas.config"));
        assert!(!props
            .keys()
            .any(|k| k.starts_with("schema.history.internal.producer.")
                || k.starts_with("schema.history.internal.consumer.")));
        assert!(connector_properties(
            "[1]",
            &DebeziumSource {
                host: String::new(),
                port: 0,
                user: String::new(),
                password: String::new(),
                database: String::new(),
                topic_prefix: String::new(),
                server_id: 0,
                brokers: String::new(),
                schemas: false,
                extra: BTreeMap::new(),
            }
        )
        .is_err());
    }
}
