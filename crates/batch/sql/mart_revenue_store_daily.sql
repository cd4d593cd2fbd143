-- Revenue and orders per day, store and city, from each order's totals (see
-- mart_revenue_hourly.sql).
SELECT o.order_date, o.store_id, s.name AS store_name, s.city,
       COUNT(*) AS orders, SUM(o.revenue) AS revenue
FROM fact_orders o
LEFT JOIN silver_stores s ON s.id = o.store_id
WHERE o.lines > 0
GROUP BY o.order_date, o.store_id, s.name, s.city
