-- How many orders of each day have 1, 2, 3 ... items (suggested lines not counted).
SELECT order_date, items, COUNT(*) AS orders
FROM (
  SELECT order_date, order_id, COUNT(*) AS items
  FROM fact_order_lines WHERE NOT is_suggestion
  GROUP BY order_date, order_id
) b
GROUP BY order_date, items
