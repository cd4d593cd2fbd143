-- gold.fact_order_lines: one row per order line, with its order's time and keys and the key of
-- the product version valid when the order was placed (list_price is that version's price).
SELECT l.order_id, l.product_id, d.product_key, o.order_date, o.order_hour, o.ordered_at_ms,
       o.store_id, o.store_key, o.payment_method_id, o.payment_method_key, o.customer_id,
       d.category_id, d.unit_price AS list_price, l.quantity, l.discount_percent, l.subtotal,
       l.is_suggestion
FROM silver_order_lines l
JOIN fact_orders o ON o.order_id = l.order_id
LEFT JOIN dim_products d ON d.product_id = l.product_id
     AND (d.version = 1 OR d.start_ms <= o.ordered_at_ms)
     AND (d.end_ms IS NULL OR o.ordered_at_ms < d.end_ms)
