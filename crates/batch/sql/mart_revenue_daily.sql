-- Revenue, orders and suggestions per day; accepted suggestions are suggested lines.
SELECT order_date,
       COUNT(DISTINCT order_id) AS orders,
       COUNT(*) AS lines,
       SUM(subtotal) AS revenue,
       SUM(CASE WHEN is_suggestion THEN 1 ELSE 0 END) AS accepted_suggestions,
       SUM(CASE WHEN is_suggestion THEN subtotal ELSE 0 END) AS accepted_revenue
FROM fact_order_lines
GROUP BY order_date
