-- Orders, lines and revenue per day and hour (UTC): the serving layer's hourly view. Each
-- order's lines are added up first (an aggregation that spills, where a distinct count of the
-- hour's orders holds them all in memory).
SELECT order_date, order_hour,
       COUNT(*) AS orders,
       SUM(lines) AS lines,
       SUM(revenue) AS revenue,
       SUM(accepted_suggestions) AS accepted_suggestions,
       SUM(accepted_revenue) AS accepted_revenue
FROM (
  SELECT order_date, order_hour, order_id,
         COUNT(*) AS lines,
         SUM(subtotal) AS revenue,
         SUM(CASE WHEN is_suggestion THEN 1 ELSE 0 END) AS accepted_suggestions,
         SUM(CASE WHEN is_suggestion THEN subtotal ELSE 0 END) AS accepted_revenue
  FROM fact_order_lines
  GROUP BY order_date, order_hour, order_id
) o
GROUP BY order_date, order_hour
