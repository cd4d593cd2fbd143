-- silver.payment_method: the latest extract of every payment method, text cleaned.
SELECT id,
       CASE WHEN TRIM(REPLACE(method_name, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(method_name, chr(13), '')) END AS method_name,
       CASE WHEN TRIM(REPLACE(bank, chr(13), '')) IN ('', 'null') THEN NULL ELSE TRIM(REPLACE(bank, chr(13), '')) END AS bank,
       extracted_at_ms
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY extracted_at_ms DESC) AS rn FROM bronze_payment_method) p
WHERE rn = 1
