-- gold.dim_products: products as SCD type 2, one row per version. Surrogate keys are numbered in
-- the order versions were first extracted, so a key never changes meaning between runs; a
-- version is valid from its start (updated_at) to the next version's start (end_date, NULL for
-- the current one). Facts before a member's first version use that first version.
SELECT CAST(ROW_NUMBER() OVER (ORDER BY v.first_extracted_ms, v.id, v.updated_at_ms) AS BIGINT) AS product_key,
       v.id AS product_id,
       v.name,
       v.category_id,
       v.unit_price,
       c.name AS category,
       CAST(ROW_NUMBER() OVER (PARTITION BY v.id ORDER BY v.updated_at_ms) AS BIGINT) AS version,
       v.updated_at AS start_date,
       LEAD(v.updated_at) OVER (PARTITION BY v.id ORDER BY v.updated_at_ms) AS end_date,
       v.updated_at_ms AS start_ms,
       LEAD(v.updated_at_ms) OVER (PARTITION BY v.id ORDER BY v.updated_at_ms) AS end_ms,
       LEAD(v.updated_at_ms) OVER (PARTITION BY v.id ORDER BY v.updated_at_ms) IS NULL AS is_current
FROM silver_products_versions v
LEFT JOIN silver_product_category c ON c.id = v.category_id
