-- silver.order_lines: the current state of every order line, suggested lines included (once).
-- A line's latest change is the one of the greatest position in Kafka (see silver_orders.sql).
SELECT order_id, product_id, quantity, discount_percent, subtotal, is_suggestion
FROM (
  SELECT order_id, product_id,
         max_by(quantity, position) AS quantity,
         max_by(discount_percent, position) AS discount_percent,
         max_by(subtotal, position) AS subtotal,
         max_by(is_suggestion, position) AS is_suggestion,
         max_by(op, position) AS op
  FROM (
    SELECT *, CAST(kafka_partition AS BIGINT) * 1099511627776 + kafka_offset AS position
    FROM bronze_order_lines
    WHERE error IS NULL AND order_id IS NOT NULL AND product_id IS NOT NULL AND op <> 'tombstone'
  ) events
  GROUP BY order_id, product_id
) latest
WHERE op <> 'd'
