-- silver.stores_versions: every version of every store (a new updated_at is a new version),
-- as its latest extract had it, text cleaned of '\r' and 'null'; first_extracted_ms is when the
-- batch layer first saw the version.
SELECT id,
       CASE WHEN TRIM(REPLACE(name, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(name, chr(13), '')) END AS name,
       CASE WHEN TRIM(REPLACE(address, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(address, chr(13), '')) END AS address,
       CASE WHEN TRIM(REPLACE(district, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(district, chr(13), '')) END AS district,
       CASE WHEN TRIM(REPLACE(city, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(city, chr(13), '')) END AS city,
       updated_at_ms, updated_at, first_extracted_ms
FROM (
  SELECT *,
         ROW_NUMBER() OVER (PARTITION BY id, updated_at_ms ORDER BY extracted_at_ms DESC) AS rn,
         MIN(extracted_at_ms) OVER (PARTITION BY id, updated_at_ms) AS first_extracted_ms
  FROM bronze_stores
) v
WHERE rn = 1
