-- Orders and revenue per payment method, over all days (an order is in one day).
SELECT f.payment_method_id, p.method_name, p.bank,
       SUM(f.orders) AS orders, SUM(f.revenue) AS revenue
FROM payment_mix_daily f
LEFT JOIN silver_payment_method p ON p.id = f.payment_method_id
GROUP BY f.payment_method_id, p.method_name, p.bank
