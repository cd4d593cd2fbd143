-- For each day and pair of products, how many of that day's orders have both; a product
-- paired with itself counts the orders that have it. Baskets are the customers' own lines
-- (suggested lines not counted), each product once: (order_id, product_id) is the lines' key
-- (silver keeps one row per key; a gate checks it), so no DISTINCT.
WITH baskets AS (
  SELECT order_date, order_id, product_id FROM fact_order_lines WHERE NOT is_suggestion
)
SELECT a.order_date, a.product_id, b.product_id AS other_product_id, COUNT(*) AS together
FROM baskets a JOIN baskets b ON a.order_id = b.order_id
GROUP BY a.order_date, a.product_id, b.product_id
