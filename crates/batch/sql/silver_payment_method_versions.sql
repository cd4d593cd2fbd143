-- silver.payment_method_versions: every version of every payment method (a new updated_at is a new version),
-- as its latest extract had it, text cleaned of '\r' and 'null'; first_extracted_ms is when the
-- batch layer first saw the version.
SELECT id,
       CASE WHEN TRIM(REPLACE(method_name, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(method_name, chr(13), '')) END AS method_name,
       CASE WHEN TRIM(REPLACE(bank, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(bank, chr(13), '')) END AS bank,
       updated_at_ms, updated_at, first_extracted_ms
FROM (
  SELECT *,
         ROW_NUMBER() OVER (PARTITION BY id, updated_at_ms ORDER BY extracted_at_ms DESC) AS rn,
         MIN(extracted_at_ms) OVER (PARTITION BY id, updated_at_ms) AS first_extracted_ms
  FROM bronze_payment_method
) v
WHERE rn = 1
