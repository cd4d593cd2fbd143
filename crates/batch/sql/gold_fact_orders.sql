-- gold.fact_orders: one row per order, with the surrogate keys of the store and payment-method
-- versions valid when it was placed; lines count every line, items the customer's own (not
-- accepted suggestions), revenue every line's subtotal. The marts by order add these up.
SELECT o.order_id, o.order_date, o.order_hour, o.ordered_at_ms, o.customer_id,
       o.store_id, s.store_key, o.payment_method_id, p.payment_method_key,
       COALESCE(l.lines, 0) AS lines,
       COALESCE(l.items, 0) AS items,
       COALESCE(l.quantity, 0) AS quantity,
       COALESCE(l.revenue, 0) AS revenue,
       COALESCE(l.accepted_revenue, 0) AS accepted_revenue
FROM silver_orders o
LEFT JOIN (
  SELECT order_id,
         COUNT(*) AS lines,
         SUM(CASE WHEN is_suggestion THEN 0 ELSE 1 END) AS items,
         SUM(quantity) AS quantity,
         SUM(subtotal) AS revenue,
         SUM(CASE WHEN is_suggestion THEN subtotal ELSE 0 END) AS accepted_revenue
  FROM silver_order_lines
  GROUP BY order_id
) l ON l.order_id = o.order_id
LEFT JOIN dim_stores s ON s.store_id = o.store_id
     AND (s.version = 1 OR s.start_ms <= o.ordered_at_ms)
     AND (s.end_ms IS NULL OR o.ordered_at_ms < s.end_ms)
LEFT JOIN dim_payment_method p ON p.payment_method_id = o.payment_method_id
     AND (p.version = 1 OR p.start_ms <= o.ordered_at_ms)
     AND (p.end_ms IS NULL OR o.ordered_at_ms < p.end_ms)
