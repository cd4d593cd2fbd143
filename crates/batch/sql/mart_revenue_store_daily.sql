-- Revenue and orders per day, store and city.
SELECT f.order_date, f.store_id, s.name AS store_name, s.city,
       COUNT(DISTINCT f.order_id) AS orders, SUM(f.subtotal) AS revenue
FROM fact_order_lines f
LEFT JOIN silver_stores s ON s.id = f.store_id
GROUP BY f.order_date, f.store_id, s.name, s.city
