-- Orders, lines and revenue per day and hour (UTC): the serving layer's hourly view. It adds up
-- each order's totals in fact_orders (one row per order: no distinct count of the hour's
-- orders to hold in memory); orders without lines are not counted.
SELECT order_date, order_hour,
       COUNT(*) AS orders,
       SUM(lines) AS lines,
       SUM(revenue) AS revenue,
       SUM(lines - items) AS accepted_suggestions,
       SUM(accepted_revenue) AS accepted_revenue
FROM fact_orders
WHERE lines > 0
GROUP BY order_date, order_hour
