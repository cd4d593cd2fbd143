-- silver.orders: the current state of every order (its latest change), deleted ones left out.
-- An order's changes all land in the Kafka partition of its key, in order: its latest change is
-- the one of the greatest position, partition * 2^40 + offset (offsets stay below 2^40).
SELECT order_id, ordered_at_ms, order_date, order_hour, customer_id, store_id,
       payment_method_id, num_products, status
FROM (
  SELECT order_id,
         max_by(ordered_at_ms, position) AS ordered_at_ms,
         max_by(order_date, position) AS order_date,
         max_by(order_hour, position) AS order_hour,
         max_by(customer_id, position) AS customer_id,
         max_by(store_id, position) AS store_id,
         max_by(payment_method_id, position) AS payment_method_id,
         max_by(num_products, position) AS num_products,
         max_by(status, position) AS status,
         max_by(op, position) AS op
  FROM (
    SELECT *, CAST(kafka_partition AS BIGINT) * 1099511627776 + kafka_offset AS position
    FROM bronze_orders
    WHERE error IS NULL AND order_id IS NOT NULL AND op <> 'tombstone'
  ) events
  GROUP BY order_id
) latest
WHERE op <> 'd'
