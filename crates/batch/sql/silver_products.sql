-- silver.products: the latest extract of every product, text cleaned.
SELECT id,
       CASE WHEN TRIM(REPLACE(name, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(name, chr(13), '')) END AS name,
       category_id, unit_price, extracted_at_ms
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY extracted_at_ms DESC) AS rn FROM bronze_products) p
WHERE rn = 1
