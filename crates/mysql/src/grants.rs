//! The least each role needs of the database, as the statements that grant it
//! (`brewline db grants`): each of brewline's commands logs in as a user of its own, which may
//! do that command's work and nothing else.

/// Who uses the database, each with a user of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `brewline cdc`: the row binlog, a snapshot of the captured tables, its position table.
    Capture,
    /// `brewline simulate`: the shop's tills, writing orders.
    Tills,
    /// `brewline accept`: accepted suggestions written back as order lines.
    Accept,
    /// `brewline batch run`: the dimensions, read into the lake.
    Batch,
    /// `brewline cache load`: the reference data behind the recommender's lookups.
    Cache,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Capture,
        Role::Tills,
        Role::Accept,
        Role::Batch,
        Role::Cache,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Capture => "capture",
            Role::Tills => "tills",
            Role::Accept => "accept",
            Role::Batch => "batch",
            Role::Cache => "cache",
        }
    }

    /// The command that logs in as this role.
    pub fn command(self) -> &'static str {
        match self {
            Role::Capture => "brewline cdc",
            Role::Tills => "brewline simulate",
            Role::Accept => "brewline accept",
            Role::Batch => "brewline batch run",
            Role::Cache => "brewline cache load",
        }
    }
}

/// The kind of server: what the capture's privileges are called there, and whether its
/// snapshot locks the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// MariaDB 10.5.2 or later: `BINLOG MONITOR` lists the binlogs; the snapshot takes no lock.
    Mariadb,
    /// MySQL 8: `REPLICATION CLIENT` lists the binlogs; the snapshot's
    /// `FLUSH TABLES WITH READ LOCK` needs `RELOAD`.
    Mysql,
}

/// The tables of the shop's reference data, as `brewline db init` makes them.
const DIMENSIONS: [&str; 4] = ["stores", "payment_method", "product_category", "products"];
const CUSTOMERS: &str = "customers";
const ORDERS: &str = "orders";
const ORDER_DETAILS: &str = "order_details";

/// What the grants name: the shop's database, the tables the capture reads, and the database
/// of its position table.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    pub database: &'a str,
    pub captured: &'a [String],
    pub offsets_database: &'a str,
}

/// `'name'@'host'`, quoted for a statement.
pub fn account(name: &str, host: &str) -> String {
    format!(
        "'{}'@'{}'",
        name.replace('\'', "''"),
        host.replace('\'', "''")
    )
}

fn table(database: &str, table: &str) -> String {
    format!(
        "`{}`.`{}`",
        database.replace('`', "``"),
        table.replace('`', "``")
    )
}

/// The statements that give `account` ([`account`]) what `role` needs, and nothing more.
pub fn grants(role: Role, flavor: Flavor, names: Names<'_>, account: &str) -> Vec<String> {
    let on = |privileges: &str, t: &str| {
        format!(
            "GRANT {privileges} ON {} TO {account};",
            table(names.database, t)
        )
    };
    let select = |tables: &[&str]| tables.iter().map(|t| on("SELECT", t)).collect::<Vec<_>>();
    match role {
        Role::Capture => {
            let server = match flavor {
                Flavor::Mariadb => "REPLICATION SLAVE, BINLOG MONITOR",
                Flavor::Mysql => "REPLICATION SLAVE, REPLICATION CLIENT, RELOAD",
            };
            let mut g = vec![format!("GRANT {server} ON *.* TO {account};")];
            g.extend(names.captured.iter().map(|t| on("SELECT", t)));
            // The position table is made when missing (the server asks for CREATE even then).
            g.push(format!(
                "GRANT CREATE, SELECT, INSERT, UPDATE ON `{}`.* TO {account};",
                names.offsets_database.replace('`', "``")
            ));
            g
        }
        Role::Tills => {
            let mut g = select(&DIMENSIONS);
            g.extend(select(&[CUSTOMERS]));
            g.push(on("SELECT, INSERT", ORDERS));
            g.push(on("SELECT, INSERT", ORDER_DETAILS));
            g
        }
        Role::Accept => vec![on("INSERT", ORDER_DETAILS)],
        Role::Batch => select(&DIMENSIONS),
        Role::Cache => {
            let mut g = select(&DIMENSIONS);
            g.extend(select(&[CUSTOMERS]));
            g
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(captured: &[String]) -> Names<'_> {
        Names {
            database: "coffee_shop",
            captured,
            offsets_database: "brewline",
        }
    }

    #[test]
    fn the_capture_may_read_the_binlog_its_tables_and_its_positions_only() {
        let captured = vec!["orders".to_string(), "order_details".to_string()];
        let g = grants(
            Role::Capture,
            Flavor::Mariadb,
            names(&captured),
            &account("cdc", "%"),
        );
        assert_eq!(
            g,
            [
                "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'cdc'@'%';",
                "GRANT SELECT ON `coffee_shop`.`orders` TO 'cdc'@'%';",
                "GRANT SELECT ON `coffee_shop`.`order_details` TO 'cdc'@'%';",
                "GRANT CREATE, SELECT, INSERT, UPDATE ON `brewline`.* TO 'cdc'@'%';",
            ]
        );
        let mysql = grants(
            Role::Capture,
            Flavor::Mysql,
            names(&captured),
            &account("cdc", "%"),
        );
        assert!(mysql[0].contains("REPLICATION CLIENT, RELOAD"), "{mysql:?}");
    }

    #[test]
    fn no_role_but_the_capture_has_a_privilege_on_the_server_or_writes_what_it_does_not_own() {
        let captured = vec!["orders".to_string()];
        for role in Role::ALL {
            for flavor in [Flavor::Mariadb, Flavor::Mysql] {
                let g = grants(role, flavor, names(&captured), &account("u", "%"));
                assert!(!g.is_empty());
                for statement in &g {
                    assert!(statement.starts_with("GRANT ") && statement.ends_with(" TO 'u'@'%';"));
                    assert!(!statement.contains("ALL"), "{statement}");
                    assert!(!statement.contains("DELETE"), "{statement}");
                    assert!(!statement.contains("DROP"), "{statement}");
                    if role != Role::Capture {
                        assert!(!statement.contains("*.*"), "{statement}");
                        assert!(!statement.contains("CREATE"), "{statement}");
                    }
                }
            }
        }
        let accept = grants(
            Role::Accept,
            Flavor::Mariadb,
            names(&captured),
            &account("u", "%"),
        );
        assert_eq!(
            accept,
            ["GRANT INSERT ON `coffee_shop`.`order_details` TO 'u'@'%';"]
        );
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(account("o'brien", "%"), "'o''brien'@'%'");
        assert_eq!(table("a`b", "t"), "`a``b`.`t`");
    }
}
