-- silver.product_category: the latest version of every category, text cleaned.
SELECT id,
       CASE WHEN TRIM(REPLACE(name, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(name, chr(13), '')) END AS name,
       updated_at_ms, updated_at
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY updated_at_ms DESC, extracted_at_ms DESC) AS rn FROM bronze_product_category) c
WHERE rn = 1
