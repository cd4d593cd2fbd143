-- silver.order_lines: the current state of every order line, suggested lines included (once).
SELECT order_id, product_id, quantity, discount_percent, subtotal, is_suggestion
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY order_id, product_id ORDER BY kafka_partition DESC, kafka_offset DESC) AS rn
  FROM bronze_order_lines
  WHERE error IS NULL AND order_id IS NOT NULL AND product_id IS NOT NULL AND op <> 'tombstone'
) latest
WHERE rn = 1 AND op <> 'd'
