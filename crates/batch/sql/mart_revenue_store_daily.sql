-- Revenue and orders per day, store and city. Each order's lines are added up first (see
-- mart_revenue_hourly.sql).
SELECT o.order_date, o.store_id, s.name AS store_name, s.city,
       COUNT(*) AS orders, SUM(o.revenue) AS revenue
FROM (
  SELECT order_date, store_id, order_id, SUM(subtotal) AS revenue
  FROM fact_order_lines
  GROUP BY order_date, store_id, order_id
) o
LEFT JOIN silver_stores s ON s.id = o.store_id
GROUP BY o.order_date, o.store_id, s.name, s.city
