-- silver.products: the latest version of every product.
SELECT id, name, category_id, unit_price, updated_at_ms, updated_at
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY updated_at_ms DESC) AS rn FROM silver_products_versions) v
WHERE rn = 1
