-- Orders and revenue per payment method.
SELECT f.payment_method_id, p.method_name, p.bank,
       COUNT(DISTINCT f.order_id) AS orders, SUM(f.subtotal) AS revenue
FROM fact_order_lines f
LEFT JOIN silver_payment_method p ON p.id = f.payment_method_id
GROUP BY f.payment_method_id, p.method_name, p.bank
