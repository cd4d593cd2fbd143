-- For each product, how often each other product is in the same order: support (share of
-- orders with both) and lift (support over what independence would give), over all days.
WITH pairs AS (
  SELECT product_id, other_product_id, SUM(together) AS together
  FROM basket_pairs_daily
  GROUP BY product_id, other_product_id
),
total AS (SELECT SUM(orders) AS orders FROM basket_size_daily),
single AS (SELECT product_id, together AS orders FROM pairs WHERE product_id = other_product_id)
SELECT pairs.product_id, pairs.other_product_id, pairs.together,
       CAST(pairs.together AS DOUBLE) / total.orders AS support,
       CAST(pairs.together AS DOUBLE) * total.orders / (CAST(sa.orders AS DOUBLE) * sb.orders) AS lift
FROM pairs
CROSS JOIN total
JOIN single sa ON sa.product_id = pairs.product_id
JOIN single sb ON sb.product_id = pairs.other_product_id
WHERE pairs.product_id <> pairs.other_product_id
