-- How many orders have 1, 2, 3 ... items (suggested lines not counted).
SELECT items, COUNT(*) AS orders
FROM (SELECT order_id, COUNT(*) AS items FROM fact_order_lines WHERE NOT is_suggestion GROUP BY order_id) b
GROUP BY items
