-- Orders, lines and revenue per day and hour (UTC): the serving layer's hourly view.
SELECT order_date, order_hour,
       COUNT(DISTINCT order_id) AS orders,
       COUNT(*) AS lines,
       SUM(subtotal) AS revenue,
       SUM(CASE WHEN is_suggestion THEN 1 ELSE 0 END) AS accepted_suggestions,
       SUM(CASE WHEN is_suggestion THEN subtotal ELSE 0 END) AS accepted_revenue
FROM fact_order_lines
GROUP BY order_date, order_hour
