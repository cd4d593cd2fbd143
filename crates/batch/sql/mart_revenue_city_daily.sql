-- Revenue and orders per day and city (the city of the store's version when the order was placed).
SELECT f.order_date, s.city, COUNT(*) AS orders, SUM(f.revenue) AS revenue
FROM fact_orders f
JOIN dim_stores s ON s.store_key = f.store_key
GROUP BY f.order_date, s.city
