-- silver.stores: the latest extract of every store, text cleaned of '\r' and 'null'.
SELECT id,
       CASE WHEN TRIM(REPLACE(name, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(name, chr(13), '')) END AS name,
       CASE WHEN TRIM(REPLACE(address, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(address, chr(13), '')) END AS address,
       CASE WHEN TRIM(REPLACE(district, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(district, chr(13), '')) END AS district,
       CASE WHEN TRIM(REPLACE(city, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(city, chr(13), '')) END AS city,
       extracted_at_ms
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY extracted_at_ms DESC) AS rn FROM bronze_stores) s
WHERE rn = 1
