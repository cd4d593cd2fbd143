-- Orders and revenue per hour of the day (UTC).
SELECT order_hour, COUNT(DISTINCT order_id) AS orders, SUM(subtotal) AS revenue
FROM fact_order_lines
GROUP BY order_hour
