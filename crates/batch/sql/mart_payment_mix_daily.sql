-- Orders and revenue per day and payment method.
SELECT order_date, payment_method_id, COUNT(DISTINCT order_id) AS orders, SUM(subtotal) AS revenue
FROM fact_order_lines
GROUP BY order_date, payment_method_id
