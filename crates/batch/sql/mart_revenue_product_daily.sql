-- Revenue and quantity per day and product.
SELECT f.order_date, f.product_id, p.name AS product,
       SUM(f.quantity) AS quantity, SUM(f.subtotal) AS revenue
FROM fact_order_lines f
LEFT JOIN silver_products p ON p.id = f.product_id
GROUP BY f.order_date, f.product_id, p.name
