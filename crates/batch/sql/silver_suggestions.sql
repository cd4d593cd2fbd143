-- silver.suggestions: the suggestion made to each order, once (a replay republishes the same
-- suggestion; the latest record stands). Like order lines, it is kept whether or not its
-- order's row has landed yet: the marts join it to the orders.
SELECT s.order_id, s.product_id, s.unit_price, s.discount_percent, s.subtotal, s.strategy,
       s.kafka_partition, s.kafka_offset
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY kafka_partition DESC, kafka_offset DESC) AS rn
  FROM bronze_suggestions
  WHERE error IS NULL AND order_id IS NOT NULL
) s
WHERE s.rn = 1
