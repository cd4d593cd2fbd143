//! `brewline batch report`: the marts as people read them (sorted, summed where a day-level
//! mart is wanted whole), and charts of revenue per day and per category.

use deltalake::arrow::array::{Array, Float64Array, RecordBatch, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::prelude::SessionContext;

use crate::charts;
use crate::lake::Lake;
use crate::{BatchError, Result};

/// A view of a mart: its title, the table and the SQL over it (the table by its last name).
pub struct MartView {
    pub title: &'static str,
    pub table: &'static str,
    pub sql: &'static str,
}

pub const VIEWS: [MartView; 9] = [
    MartView {
        title: "Revenue, orders and accepted suggestions per day",
        table: "mart/revenue_daily",
        sql: "SELECT * FROM revenue_daily ORDER BY order_date",
    },
    MartView {
        title: "Revenue per city and day",
        table: "mart/revenue_city_daily",
        sql: "SELECT * FROM revenue_city_daily ORDER BY order_date, city",
    },
    MartView {
        title: "Revenue per category",
        table: "mart/revenue_category_daily",
        sql: "SELECT category, SUM(quantity) AS quantity, SUM(revenue) AS revenue FROM revenue_category_daily GROUP BY category ORDER BY revenue DESC",
    },
    MartView {
        title: "Top 10 products by revenue",
        table: "mart/revenue_product_daily",
        sql: "SELECT product_id, product, SUM(quantity) AS quantity, SUM(revenue) AS revenue FROM revenue_product_daily GROUP BY product_id, product ORDER BY revenue DESC, product_id LIMIT 10",
    },
    MartView {
        title: "Top 10 stores by revenue",
        table: "mart/revenue_store_daily",
        sql: "SELECT store_id, store_name, city, SUM(orders) AS orders, SUM(revenue) AS revenue FROM revenue_store_daily GROUP BY store_id, store_name, city ORDER BY revenue DESC, store_id LIMIT 10",
    },
    MartView {
        title: "Sales per hour of the day (UTC)",
        table: "mart/hourly_sales",
        sql: "SELECT * FROM hourly_sales ORDER BY order_hour",
    },
    MartView {
        title: "Basket sizes (items per order, suggestions not counted)",
        table: "mart/basket_size",
        sql: "SELECT * FROM basket_size ORDER BY items",
    },
    MartView {
        title: "Payment mix",
        table: "mart/payment_mix",
        sql: "SELECT * FROM payment_mix ORDER BY revenue DESC, payment_method_id",
    },
    MartView {
        title: "Product affinity: each product's best partner",
        table: "mart/product_affinity",
        sql: "SELECT product_id, other_product_id, together, support, lift FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY product_id ORDER BY lift DESC, together DESC, other_product_id) AS rn FROM product_affinity) best WHERE rn = 1 ORDER BY lift DESC, product_id",
    },
];

/// Each view's title and rows; a mart never built is left out.
pub async fn views(lake: &Lake) -> Result<Vec<(&'static str, Vec<RecordBatch>)>> {
    let ctx = SessionContext::new();
    let mut out = Vec::new();
    for v in &VIEWS {
        let name = v.table.rsplit('/').next().unwrap_or(v.table);
        if lake.register(&ctx, v.table, name).await?.is_none() {
            continue;
        }
        let rows = ctx
            .sql(v.sql)
            .await
            .map_err(|e| BatchError::lake(v.table, e))?
            .collect()
            .await
            .map_err(|e| BatchError::lake(v.table, e))?;
        out.push((v.title, rows));
    }
    Ok(out)
}

/// (label, value) pairs of two columns of `batches`.
fn pairs(batches: &[RecordBatch], label: &str, value: &str) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for b in batches {
        let (Some(l), Some(v)) = (b.column_by_name(label), b.column_by_name(value)) else {
            return Err(BatchError::lake("report", format!("no {label} or {value}")));
        };
        let l = cast(l, &DataType::Utf8).map_err(|e| BatchError::lake("report", e))?;
        let v = cast(v, &DataType::Float64).map_err(|e| BatchError::lake("report", e))?;
        let (Some(l), Some(v)) = (
            l.as_any().downcast_ref::<StringArray>(),
            v.as_any().downcast_ref::<Float64Array>(),
        ) else {
            return Err(BatchError::lake("report", "unexpected column types"));
        };
        for i in 0..b.num_rows() {
            let label = if l.is_null(i) { "(none)" } else { l.value(i) };
            out.push((
                label.to_string(),
                if v.is_null(i) { 0.0 } else { v.value(i) },
            ));
        }
    }
    Ok(out)
}

/// The charts: (file name, SVG) of revenue per day and per category.
pub fn charts(views: &[(&'static str, Vec<RecordBatch>)]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (title, rows) in views {
        let (file, chart_title, label) = if *title == VIEWS[0].title {
            ("revenue_per_day.svg", "Revenue per day", "order_date")
        } else if *title == VIEWS[2].title {
            (
                "revenue_per_category.svg",
                "Revenue per category",
                "category",
            )
        } else {
            continue;
        };
        let bars = pairs(rows, label, "revenue")?;
        out.push((
            file.to_string(),
            charts::bar_chart(chart_title, "revenue (VND)", &bars),
        ));
    }
    Ok(out)
}
