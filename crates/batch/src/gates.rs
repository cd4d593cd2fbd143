//! Data-quality gates: each a SQL query counting the rows that break a rule (not null, unique
//! keys, non-negative amounts, referential integrity, counts reconciled with the layer
//! before). Any count above zero fails the run. Keys are checked unique by grouping on them,
//! which spills past the memory limit (a distinct count holds every key in memory).

use deltalake::arrow::array::{Array, Int64Array};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::{BatchError, Result};

/// A rule and the query that counts its violations (one row, one integer column).
pub struct Gate {
    pub name: &'static str,
    pub sql: &'static str,
    /// The rule holds for the tables when it holds for each order's rows in them (every table
    /// it reads has an `order_id`, or is a dimension, whose members are never removed): an
    /// incremental run checks it on the orders it touched, the others' rows being those that
    /// passed when published.
    pub by_order: bool,
}

/// The outcome of a gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateResult {
    pub layer: String,
    pub name: String,
    pub violations: u64,
}

impl GateResult {
    pub fn passed(&self) -> bool {
        self.violations == 0
    }
}

pub const BRONZE: &[Gate] = &[
    Gate {
        name: "every landed event has its topic, partition and offset, once",
        sql: "SELECT COALESCE(SUM(CASE WHEN kafka_topic IS NULL OR kafka_partition IS NULL OR kafka_offset IS NULL THEN n ELSE n - 1 END), 0) FROM (SELECT kafka_topic, kafka_partition, kafka_offset, COUNT(*) AS n FROM bronze_orders GROUP BY kafka_topic, kafka_partition, kafka_offset) g",
        by_order: false,
    },
    Gate {
        name: "every landed line event has its topic, partition and offset, once",
        sql: "SELECT COALESCE(SUM(CASE WHEN kafka_topic IS NULL OR kafka_partition IS NULL OR kafka_offset IS NULL THEN n ELSE n - 1 END), 0) FROM (SELECT kafka_topic, kafka_partition, kafka_offset, COUNT(*) AS n FROM bronze_order_lines GROUP BY kafka_topic, kafka_partition, kafka_offset) g",
        by_order: false,
    },
    Gate {
        name: "every landed suggestion has its topic, partition and offset, once",
        sql: "SELECT COALESCE(SUM(CASE WHEN kafka_topic IS NULL OR kafka_partition IS NULL OR kafka_offset IS NULL THEN n ELSE n - 1 END), 0) FROM (SELECT kafka_topic, kafka_partition, kafka_offset, COUNT(*) AS n FROM bronze_suggestions GROUP BY kafka_topic, kafka_partition, kafka_offset) g",
        by_order: false,
    },
];

pub const SILVER: &[Gate] = &[
    Gate {
        name: "suggestions: one per order, never for an order's own product",
        sql: "SELECT (SELECT COALESCE(SUM(CASE WHEN order_id IS NULL THEN n ELSE n - 1 END), 0) FROM (SELECT order_id, COUNT(*) AS n FROM silver_suggestions GROUP BY order_id) g) + (SELECT COUNT(*) FROM silver_suggestions s JOIN silver_order_lines l ON l.order_id = s.order_id AND l.product_id = s.product_id AND NOT l.is_suggestion)",
        by_order: true,
    },
    Gate {
        name: "orders: order_id, store_id, payment_method_id and ordered_at_ms are not null",
        sql: "SELECT COUNT(*) FROM silver_orders WHERE order_id IS NULL OR store_id IS NULL OR payment_method_id IS NULL OR ordered_at_ms IS NULL",
        by_order: true,
    },
    Gate {
        name: "orders: order_id is unique",
        sql: "SELECT COALESCE(SUM(CASE WHEN order_id IS NULL THEN n ELSE n - 1 END), 0) FROM (SELECT order_id, COUNT(*) AS n FROM silver_orders GROUP BY order_id) g",
        by_order: true,
    },
    Gate {
        name: "order lines: (order_id, product_id) is unique",
        sql: "SELECT COALESCE(SUM(CASE WHEN order_id IS NULL OR product_id IS NULL THEN n ELSE n - 1 END), 0) FROM (SELECT order_id, product_id, COUNT(*) AS n FROM silver_order_lines GROUP BY order_id, product_id) g",
        by_order: true,
    },
    Gate {
        name: "order lines: quantity positive, subtotal not negative",
        sql: "SELECT COUNT(*) FROM silver_order_lines WHERE quantity IS NULL OR quantity < 1 OR subtotal IS NULL OR subtotal < 0",
        by_order: true,
    },
    Gate {
        name: "order lines: each belongs to an order",
        // An aggregation over both tables' keys rather than a join: it spills to disk past
        // the memory limit, where a join must hold the orders whole.
        sql: "SELECT COALESCE(SUM(lines), 0) FROM (SELECT order_id, SUM(is_order) AS orders, SUM(1 - is_order) AS lines FROM (SELECT order_id, 1 AS is_order FROM silver_orders UNION ALL SELECT order_id, 0 AS is_order FROM silver_order_lines) k GROUP BY order_id) g WHERE orders = 0",
        by_order: true,
    },
    Gate {
        name: "order lines: each product exists",
        sql: "SELECT COUNT(*) FROM silver_order_lines l LEFT JOIN silver_products p ON p.id = l.product_id WHERE p.id IS NULL",
        by_order: true,
    },
    Gate {
        name: "orders: each store and payment method exists",
        sql: "SELECT COUNT(*) FROM silver_orders o LEFT JOIN silver_stores s ON s.id = o.store_id LEFT JOIN silver_payment_method p ON p.id = o.payment_method_id WHERE s.id IS NULL OR p.id IS NULL",
        by_order: true,
    },
    Gate {
        name: "dimensions: ids are unique",
        sql: "SELECT (SELECT COUNT(*) - COUNT(DISTINCT id) FROM silver_stores) + (SELECT COUNT(*) - COUNT(DISTINCT id) FROM silver_products) + (SELECT COUNT(*) - COUNT(DISTINCT id) FROM silver_payment_method)",
        by_order: false,
    },
];

pub const GOLD: &[Gate] = &[
    Gate {
        name: "dimensions: surrogate keys are unique",
        sql: "SELECT (SELECT COUNT(*) - COUNT(DISTINCT store_key) FROM dim_stores) + (SELECT COUNT(*) - COUNT(DISTINCT product_key) FROM dim_products) + (SELECT COUNT(*) - COUNT(DISTINCT payment_method_key) FROM dim_payment_method)",
        by_order: false,
    },
    Gate {
        name: "dimensions: each member has exactly one current version",
        sql: "SELECT (SELECT COUNT(*) FROM (SELECT store_id FROM dim_stores GROUP BY store_id HAVING SUM(CASE WHEN is_current THEN 1 ELSE 0 END) <> 1) s) + (SELECT COUNT(*) FROM (SELECT product_id FROM dim_products GROUP BY product_id HAVING SUM(CASE WHEN is_current THEN 1 ELSE 0 END) <> 1) p) + (SELECT COUNT(*) FROM (SELECT payment_method_id FROM dim_payment_method GROUP BY payment_method_id HAVING SUM(CASE WHEN is_current THEN 1 ELSE 0 END) <> 1) m)",
        by_order: false,
    },
    Gate {
        name: "dimensions: a version ends where the next one starts",
        sql: "SELECT (SELECT COUNT(*) FROM dim_stores a JOIN dim_stores b ON a.store_id = b.store_id AND b.version = a.version + 1 WHERE a.end_ms IS NULL OR a.end_ms <> b.start_ms OR a.end_date <> b.start_date) + (SELECT COUNT(*) FROM dim_products a JOIN dim_products b ON a.product_id = b.product_id AND b.version = a.version + 1 WHERE a.end_ms IS NULL OR a.end_ms <> b.start_ms OR a.end_date <> b.start_date) + (SELECT COUNT(*) FROM dim_payment_method a JOIN dim_payment_method b ON a.payment_method_id = b.payment_method_id AND b.version = a.version + 1 WHERE a.end_ms IS NULL OR a.end_ms <> b.start_ms OR a.end_date <> b.start_date)",
        by_order: false,
    },
    Gate {
        name: "fact: one row per silver order, each with its store and payment-method version",
        sql: "SELECT ABS((SELECT COUNT(*) FROM fact_orders) - (SELECT COUNT(*) FROM silver_orders)) + (SELECT COUNT(*) FROM fact_orders WHERE store_key IS NULL OR payment_method_key IS NULL)",
        by_order: true,
    },
    Gate {
        name: "fact: every line has the product version valid at order time",
        sql: "SELECT COUNT(*) FROM fact_order_lines WHERE product_key IS NULL OR store_key IS NULL OR payment_method_key IS NULL",
        by_order: true,
    },
    Gate {
        name: "fact: orders' revenue equals their lines'",
        sql: "SELECT ABS(COALESCE((SELECT SUM(revenue) FROM fact_orders), 0) - COALESCE((SELECT SUM(subtotal) FROM fact_order_lines), 0))",
        by_order: true,
    },
    Gate {
        name: "fact: one row per silver order line",
        sql: "SELECT ABS((SELECT COUNT(*) FROM fact_order_lines) - (SELECT COUNT(*) FROM silver_order_lines))",
        by_order: true,
    },
    Gate {
        name: "fact: revenue equals silver's, to the unit",
        sql: "SELECT ABS(COALESCE((SELECT SUM(subtotal) FROM fact_order_lines), 0) - COALESCE((SELECT SUM(subtotal) FROM silver_order_lines), 0))",
        by_order: true,
    },
    Gate {
        name: "mart: daily revenue adds up to the fact's",
        sql: "SELECT ABS(COALESCE((SELECT SUM(revenue) FROM revenue_daily), 0) - COALESCE((SELECT SUM(subtotal) FROM fact_order_lines), 0))",
        by_order: false,
    },
    Gate {
        name: "mart: each day's lines are the fact's, its orders no more than the fact's",
        sql: "SELECT COUNT(*) FROM revenue_daily d FULL JOIN (SELECT order_date, COUNT(*) AS lines FROM fact_order_lines GROUP BY order_date) l ON l.order_date = d.order_date LEFT JOIN (SELECT order_date, COUNT(*) AS orders FROM fact_orders GROUP BY order_date) o ON o.order_date = d.order_date WHERE d.order_date IS NULL OR l.order_date IS NULL OR d.lines <> l.lines OR o.orders IS NULL OR d.orders > o.orders",
        by_order: false,
    },
    Gate {
        name: "mart: suggestions accepted never exceed those made, rates within [0, 1]",
        sql: "SELECT COUNT(*) FROM suggestions_daily WHERE suggestion_rate < 0 OR suggestion_rate > 1 OR acceptance_rate < 0 OR acceptance_rate > 1",
        by_order: false,
    },
    Gate {
        name: "mart: affinity support within (0, 1], lift positive",
        sql: "SELECT COUNT(*) FROM product_affinity WHERE support <= 0 OR support > 1 OR lift <= 0",
        by_order: false,
    },
];

/// Runs `gates` of `layer` in `ctx`, those by order in `by_order` when given (a session whose
/// tables hold only the orders a run touched).
pub async fn check(
    ctx: &SessionContext,
    layer: &str,
    gates: &[Gate],
    by_order: Option<&SessionContext>,
) -> Result<Vec<GateResult>> {
    let mut out = Vec::with_capacity(gates.len());
    for g in gates {
        let session = match by_order {
            Some(scoped) if g.by_order => scoped,
            _ => ctx,
        };
        let batches = session
            .sql(g.sql)
            .await
            .map_err(|e| BatchError::gate(g.name, e))?
            .collect()
            .await
            .map_err(|e| BatchError::gate(g.name, e))?;
        let value = batches
            .first()
            .filter(|b| b.num_rows() == 1 && b.num_columns() == 1)
            .and_then(|b| cast(b.column(0), &DataType::Int64).ok())
            .and_then(|c| {
                let ints = c.as_any().downcast_ref::<Int64Array>()?;
                Some(if ints.is_null(0) { 0 } else { ints.value(0) })
            })
            .ok_or_else(|| BatchError::gate(g.name, "the gate's query must return one integer"))?;
        out.push(GateResult {
            layer: layer.to_string(),
            name: g.name.to_string(),
            violations: value.max(0) as u64,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_line_without_its_order_is_a_violation_whatever_its_key() {
        let ctx = SessionContext::new();
        for sql in [
            "CREATE TABLE silver_orders AS SELECT * FROM (VALUES ('a'), ('b')) AS t(order_id)",
            "CREATE TABLE silver_order_lines AS SELECT * FROM (VALUES ('a'), ('a'), ('c'), (CAST(NULL AS VARCHAR))) AS t(order_id)",
        ] {
            ctx.sql(sql).await.unwrap().collect().await.unwrap();
        }
        let gate = SILVER
            .iter()
            .find(|g| g.name == "order lines: each belongs to an order")
            .unwrap();
        let results = check(&ctx, "silver", std::slice::from_ref(gate), None)
            .await
            .unwrap();
        assert_eq!(
            results[0].violations, 2,
            "the line of order c and the line without a key"
        );
    }
}
