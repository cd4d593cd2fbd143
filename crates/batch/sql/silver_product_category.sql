-- silver.product_category: the latest extract of every category, text cleaned.
SELECT id,
       CASE WHEN TRIM(REPLACE(name, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(name, chr(13), '')) END AS name,
       extracted_at_ms
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY extracted_at_ms DESC) AS rn FROM bronze_product_category) c
WHERE rn = 1
