-- Revenue and quantity per day and product category.
SELECT f.order_date, f.category_id, c.name AS category,
       SUM(f.quantity) AS quantity, SUM(f.subtotal) AS revenue
FROM fact_order_lines f
LEFT JOIN silver_product_category c ON c.id = f.category_id
GROUP BY f.order_date, f.category_id, c.name
