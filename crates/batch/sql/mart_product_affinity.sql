-- For each product, how often each other product is in the same order: support (share of
-- orders with both) and lift (support over what independence would give).
WITH baskets AS (
  SELECT DISTINCT order_id, product_id FROM fact_order_lines WHERE NOT is_suggestion
),
total AS (SELECT COUNT(DISTINCT order_id) AS orders FROM baskets),
single AS (SELECT product_id, COUNT(*) AS orders FROM baskets GROUP BY product_id),
pairs AS (
  SELECT a.product_id, b.product_id AS other_product_id, COUNT(*) AS together
  FROM baskets a JOIN baskets b ON a.order_id = b.order_id AND a.product_id <> b.product_id
  GROUP BY a.product_id, b.product_id
)
SELECT pairs.product_id, pairs.other_product_id, pairs.together,
       CAST(pairs.together AS DOUBLE) / total.orders AS support,
       CAST(pairs.together AS DOUBLE) * total.orders / (CAST(sa.orders AS DOUBLE) * sb.orders) AS lift
FROM pairs
CROSS JOIN total
JOIN single sa ON sa.product_id = pairs.product_id
JOIN single sb ON sb.product_id = pairs.other_product_id
