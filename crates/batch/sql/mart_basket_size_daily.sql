-- How many orders of each day have 1, 2, 3 ... items (suggested lines not counted).
SELECT order_date, items, COUNT(*) AS orders
FROM fact_orders
WHERE items > 0
GROUP BY order_date, items
