-- silver.payment_method: the latest version of every payment method.
SELECT id, method_name, bank, updated_at_ms, updated_at
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY updated_at_ms DESC) AS rn FROM silver_payment_method_versions) v
WHERE rn = 1
