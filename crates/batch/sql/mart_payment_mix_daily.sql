-- Orders and revenue per day and payment method, from each order's totals (see
-- mart_revenue_hourly.sql).
SELECT order_date, payment_method_id, COUNT(*) AS orders, SUM(revenue) AS revenue
FROM fact_orders
WHERE lines > 0
GROUP BY order_date, payment_method_id
