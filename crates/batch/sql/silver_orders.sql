-- silver.orders: the current state of every order (its latest change), deleted ones left out.
SELECT order_id, ordered_at_ms, order_date, order_hour, customer_id, store_id,
       payment_method_id, num_products, status
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY kafka_partition DESC, kafka_offset DESC) AS rn
  FROM bronze_orders
  WHERE error IS NULL AND order_id IS NOT NULL AND op <> 'tombstone'
) latest
WHERE rn = 1 AND op <> 'd'
