-- gold.fact_order_lines: one row per order line, with its order's time, store, payment method
-- and the product's category.
SELECT l.order_id, l.product_id, o.order_date, o.order_hour, o.ordered_at_ms, o.store_id,
       o.payment_method_id, o.customer_id, p.category_id, l.quantity, l.discount_percent,
       l.subtotal, l.is_suggestion
FROM silver_order_lines l
JOIN silver_orders o ON o.order_id = l.order_id
LEFT JOIN silver_products p ON p.id = l.product_id
