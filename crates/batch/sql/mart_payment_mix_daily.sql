-- Orders and revenue per day and payment method. Each order's lines are added up first (see
-- mart_revenue_hourly.sql).
SELECT order_date, payment_method_id, COUNT(*) AS orders, SUM(revenue) AS revenue
FROM (
  SELECT order_date, payment_method_id, order_id, SUM(subtotal) AS revenue
  FROM fact_order_lines
  GROUP BY order_date, payment_method_id, order_id
) o
GROUP BY order_date, payment_method_id
