//! The `coffee_shop` database on MySQL/MariaDB.

use async_trait::async_trait;
use brewline_core::order::NewOrder;
use brewline_core::reference::{
    Category, Customer, DimensionExtract, PaymentMethod, Product, ReferenceData, Store, Tier,
    Versioned,
};
use brewline_core::suggestion::Suggestion;
use brewline_ports::{PortError, Result, SourceCounts, SourceDb};
use mysql_async::prelude::{Query, Queryable, WithParams};
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, TxOpts, Value};

use crate::{port_error, MysqlConfig, ENGINE};

const SCHEMA: &str = include_str!("schema.sql");

/// `updated_at` (DATETIME) as epoch milliseconds, the DATETIME read as UTC as Debezium does.
const UPDATED_AT_MS: &str =
    "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', updated_at) DIV 1000 AS SIGNED) AS updated_at_ms";

/// Rows per multi-row `INSERT`.
const ROWS_PER_INSERT: usize = 500;

/// The shop's database.
#[derive(Clone)]
pub struct MysqlSource {
    pool: Pool,
    server: Opts,
    database: String,
}

impl MysqlSource {
    /// A pool on `config.database` (connections are made when first needed).
    pub fn new(config: &MysqlConfig) -> Result<MysqlSource> {
        let server = config.server()?;
        let constraints = PoolConstraints::new(0, config.max_connections.max(1))
            .ok_or_else(|| PortError::fatal(ENGINE, "mysql.max_connections must be at least 1"))?;
        let opts = OptsBuilder::from_opts(server.clone())
            .db_name(Some(config.database.clone()))
            .pool_opts(PoolOpts::default().with_constraints(constraints));
        Ok(MysqlSource {
            pool: Pool::new(opts),
            server,
            database: config.database.clone(),
        })
    }

    async fn conn(&self) -> Result<Conn> {
        self.pool.get_conn().await.map_err(|e| {
            port_error(
                &format!(
                    "connecting to database {} (run `brewline db init` first)",
                    self.database
                ),
                e,
            )
        })
    }

    /// Runs statements one after the other (benchmarks' bulk loads, operators' scripts).
    pub async fn execute(&self, statements: &[String]) -> Result<()> {
        let mut conn = self.conn().await?;
        for statement in statements {
            conn.query_drop(statement)
                .await
                .map_err(|e| port_error("running a statement", e))?;
        }
        Ok(())
    }

    /// Every order's id and `timestamp` (epoch milliseconds, read in the server's time zone as
    /// the tills wrote it with `NOW(3)`).
    pub async fn order_times(&self) -> Result<Vec<(String, i64)>> {
        let mut conn = self.conn().await?;
        "SELECT id, CAST(UNIX_TIMESTAMP(timestamp) * 1000 AS SIGNED) FROM orders"
            .fetch(&mut conn)
            .await
            .map_err(|e| port_error("reading order times", e))
    }

    /// A counter of the server's global status (`SHOW GLOBAL STATUS`), if it has one by that
    /// name and it is a number.
    pub async fn global_status(&self, name: &str) -> Result<Option<u64>> {
        let mut conn = self.conn().await?;
        let value: Option<String> =
            "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = ?"
                .with((name.to_ascii_uppercase(),))
                .first(&mut conn)
                .await
                .map_err(|e| port_error("reading the server's status", e))?;
        Ok(value.and_then(|v| v.trim().parse().ok()))
    }

    /// Closes the pool's connections.
    pub async fn close(self) -> Result<()> {
        self.pool
            .disconnect()
            .await
            .map_err(|e| port_error("closing connections", e))
    }

    /// Upserts `rows` (values of `id` then `changing`) into `table`, stamping `updated_at`
    /// with the load's time on new rows and on rows whose `changing` columns changed.
    async fn upsert(
        &self,
        conn: &mut Conn,
        table: &str,
        changing: &[&str],
        rows: Vec<Vec<Value>>,
    ) -> Result<()> {
        let one = format!("(?, {}NOW(3))", "?, ".repeat(changing.len()));
        let update = changed_then_set(changing);
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO {table} (id, {}, updated_at) VALUES {} ON DUPLICATE KEY UPDATE {update}",
                changing.join(", "),
                vec![one.as_str(); chunk.len()].join(", ")
            );
            let params: Vec<Value> = chunk.iter().flatten().cloned().collect();
            conn.exec_drop(sql, params)
                .await
                .map_err(|e| port_error(&format!("loading {table}"), e))?;
        }
        Ok(())
    }
}

/// `ON DUPLICATE KEY UPDATE` that moves `updated_at` only when one of `columns` changed
/// (assignments run left to right, so `updated_at` is decided before the columns change).
fn changed_then_set(columns: &[&str]) -> String {
    let old: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let new: Vec<String> = columns.iter().map(|c| format!("VALUES({c})")).collect();
    let mut set = vec![format!(
        "updated_at = IF(({}) <=> ({}), updated_at, NOW(3))",
        old.join(", "),
        new.join(", ")
    )];
    set.extend(columns.iter().map(|c| format!("{c} = VALUES({c})")));
    set.join(", ")
}

#[async_trait]
impl SourceDb for MysqlSource {
    async fn init_schema(&self) -> Result<()> {
        let mut server = Conn::new(self.server.clone())
            .await
            .map_err(|e| port_error("connecting to the server", e))?;
        format!(
            "CREATE DATABASE IF NOT EXISTS `{}` CHARACTER SET utf8mb4",
            self.database.replace('`', "")
        )
        .ignore(&mut server)
        .await
        .map_err(|e| port_error("creating the database", e))?;
        server
            .disconnect()
            .await
            .map_err(|e| port_error("disconnecting", e))?;
        let mut conn = self.conn().await?;
        for statement in SCHEMA.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
            conn.query_drop(statement)
                .await
                .map_err(|e| port_error("creating the tables", e))?;
        }
        Ok(())
    }

    async fn seed_reference(&self, r: &ReferenceData) -> Result<()> {
        let mut conn = self.conn().await?;
        let rows = r
            .stores
            .iter()
            .map(|s| {
                vec![
                    s.id.into(),
                    s.name.clone().into(),
                    s.address.clone().into(),
                    s.district.clone().into(),
                    s.city.clone().into(),
                ]
            })
            .collect();
        self.upsert(
            &mut conn,
            "stores",
            &["name", "address", "district", "city"],
            rows,
        )
        .await?;
        let rows = r
            .payment_methods
            .iter()
            .map(|p| {
                vec![
                    p.id.into(),
                    p.method_name.clone().into(),
                    p.bank.clone().into(),
                ]
            })
            .collect();
        self.upsert(&mut conn, "payment_method", &["method_name", "bank"], rows)
            .await?;
        let rows = r
            .categories
            .iter()
            .map(|c| vec![c.id.into(), c.name.clone().into()])
            .collect();
        self.upsert(&mut conn, "product_category", &["name"], rows)
            .await?;
        let rows = r
            .products
            .iter()
            .map(|p| {
                vec![
                    p.id.clone().into(),
                    p.name.clone().into(),
                    p.category_id.into(),
                    p.unit_price.into(),
                ]
            })
            .collect();
        self.upsert(
            &mut conn,
            "products",
            &["name", "category_id", "unit_price"],
            rows,
        )
        .await?;
        let rows = r
            .customers
            .iter()
            .map(|c| {
                vec![
                    c.id.into(),
                    c.name.clone().into(),
                    c.phone_number.clone().into(),
                    c.tier.as_str().into(),
                ]
            })
            .collect();
        self.upsert(
            &mut conn,
            "customers",
            &["name", "phone_number", "tier"],
            rows,
        )
        .await?;
        Ok(())
    }

    async fn load_reference(&self) -> Result<ReferenceData> {
        let dimensions = self.extract_dimensions().await?;
        let mut conn = self.conn().await?;
        let e = |what: &'static str| move |e| port_error(&format!("reading {what}"), e);
        let customers: Vec<(i64, String, String, String)> =
            "SELECT id, name, phone_number, tier FROM customers ORDER BY id"
                .fetch(&mut conn)
                .await
                .map_err(e("customers"))?;
        let customers = customers
            .into_iter()
            .map(|(id, name, phone_number, tier)| {
                let tier = Tier::parse(&tier).ok_or_else(|| {
                    PortError::fatal(
                        ENGINE,
                        format!("customer {id} has an unknown tier {tier:?}"),
                    )
                })?;
                Ok(Customer {
                    id,
                    name,
                    phone_number,
                    tier,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(dimensions.into_reference(customers))
    }

    async fn extract_dimensions(&self) -> Result<DimensionExtract> {
        let mut conn = self.conn().await?;
        let e = |what: &'static str| move |e| port_error(&format!("extracting {what}"), e);
        let stores = format!(
            "SELECT id, name, address, district, city, {UPDATED_AT_MS} FROM stores ORDER BY id"
        )
        .map(
            &mut conn,
            |(id, name, address, district, city, updated_at_ms)| Versioned {
                row: Store {
                    id,
                    name,
                    address,
                    district,
                    city,
                },
                updated_at_ms,
            },
        )
        .await
        .map_err(e("stores"))?;
        let payment_methods = format!(
            "SELECT id, method_name, bank, {UPDATED_AT_MS} FROM payment_method ORDER BY id"
        )
        .map(&mut conn, |(id, method_name, bank, updated_at_ms)| {
            Versioned {
                row: PaymentMethod {
                    id,
                    method_name,
                    bank,
                },
                updated_at_ms,
            }
        })
        .await
        .map_err(e("payment methods"))?;
        let categories =
            format!("SELECT id, name, {UPDATED_AT_MS} FROM product_category ORDER BY id")
                .map(&mut conn, |(id, name, updated_at_ms)| Versioned {
                    row: Category { id, name },
                    updated_at_ms,
                })
                .await
                .map_err(e("product categories"))?;
        let products = format!(
            "SELECT id, name, category_id, unit_price, {UPDATED_AT_MS} FROM products ORDER BY id"
        )
        .map(
            &mut conn,
            |(id, name, category_id, unit_price, updated_at_ms)| Versioned {
                row: Product {
                    id,
                    name,
                    category_id,
                    unit_price,
                },
                updated_at_ms,
            },
        )
        .await
        .map_err(e("products"))?;
        Ok(DimensionExtract {
            stores,
            payment_methods,
            categories,
            products,
        })
    }

    async fn insert_orders(&self, orders: &[NewOrder]) -> Result<()> {
        let mut conn = self.conn().await?;
        for o in orders {
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(|e| port_error("starting a transaction", e))?;
            tx.exec_drop(
                "INSERT INTO orders (id, timestamp, customer_id, store_id, payment_method_id,
                     num_products, status)
                 VALUES (?, NOW(3), ?, ?, ?, ?, 'completed')",
                (
                    &o.id,
                    o.customer_id,
                    o.store_id,
                    o.payment_method_id,
                    o.num_products(),
                ),
            )
            .await
            .map_err(|e| port_error("inserting an order", e))?;
            let placeholders = vec!["(?, ?, ?, 0, ?, FALSE)"; o.lines.len()].join(", ");
            let params: Vec<Value> = o
                .lines
                .iter()
                .flat_map(|l| {
                    [
                        o.id.clone().into(),
                        l.product_id.clone().into(),
                        l.quantity.into(),
                        l.subtotal.into(),
                    ]
                })
                .collect();
            tx.exec_drop(
                format!(
                    "INSERT INTO order_details (order_id, product_id, quantity, discount_percent,
                         subtotal, is_suggestion) VALUES {placeholders}"
                ),
                params,
            )
            .await
            .map_err(|e| port_error("inserting order lines", e))?;
            tx.commit()
                .await
                .map_err(|e| port_error("committing an order", e))?;
        }
        Ok(())
    }

    async fn accept_suggestions(&self, suggestions: &[Suggestion]) -> Result<u64> {
        if suggestions.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn().await?;
        let mut inserted = 0;
        for chunk in suggestions.chunks(ROWS_PER_INSERT) {
            let placeholders = vec!["(?, ?, ?, ?, ?, TRUE)"; chunk.len()].join(", ");
            let params: Vec<Value> = chunk
                .iter()
                .flat_map(|s| {
                    [
                        s.order_id.clone().into(),
                        s.product_id.clone().into(),
                        s.quantity.into(),
                        s.discount_percent.into(),
                        s.subtotal.into(),
                    ]
                })
                .collect();
            // IGNORE: a suggestion accepted twice (a redelivery), or for an order deleted
            // since, adds nothing.
            format!(
                "INSERT IGNORE INTO order_details (order_id, product_id, quantity,
                     discount_percent, subtotal, is_suggestion) VALUES {placeholders}"
            )
            .with(params)
            .ignore(&mut conn)
            .await
            .map_err(|e| port_error("inserting accepted suggestions", e))?;
            inserted += conn.affected_rows();
        }
        Ok(inserted)
    }

    async fn counts(&self) -> Result<SourceCounts> {
        let mut conn = self.conn().await?;
        let (orders, order_lines): (u64, u64) = "SELECT (SELECT COUNT(*) FROM orders),
                (SELECT COUNT(*) FROM order_details WHERE NOT is_suggestion)"
            .first(&mut conn)
            .await
            .map_err(|e| port_error("counting orders", e))?
            .unwrap_or((0, 0));
        Ok(SourceCounts {
            orders,
            order_lines,
        })
    }
}
