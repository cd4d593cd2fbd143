-- silver.products_versions: every version of every product (a new updated_at is a new version),
-- as its latest extract had it, text cleaned of '\r' and 'null'; first_extracted_ms is when the
-- batch layer first saw the version.
SELECT id,
       CASE WHEN TRIM(REPLACE(name, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(name, chr(13), '')) END AS name,
       category_id,
       unit_price,
       updated_at_ms, updated_at, first_extracted_ms
FROM (
  SELECT *,
         ROW_NUMBER() OVER (PARTITION BY id, updated_at_ms ORDER BY extracted_at_ms DESC) AS rn,
         MIN(extracted_at_ms) OVER (PARTITION BY id, updated_at_ms) AS first_extracted_ms
  FROM bronze_products
) v
WHERE rn = 1
