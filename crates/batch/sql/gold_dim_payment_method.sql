-- gold.dim_payment_method: payment methods as SCD type 2, one row per version. Surrogate keys are numbered in
-- the order versions were first extracted, so a key never changes meaning between runs; a
-- version is valid from its start (updated_at) to the next version's start (end_date, NULL for
-- the current one). Facts before a member's first version use that first version.
SELECT CAST(ROW_NUMBER() OVER (ORDER BY v.first_extracted_ms, v.id, v.updated_at_ms) AS BIGINT) AS payment_method_key,
       v.id AS payment_method_id,
       v.method_name,
       v.bank,
       CAST(ROW_NUMBER() OVER (PARTITION BY v.id ORDER BY v.updated_at_ms) AS BIGINT) AS version,
       v.updated_at AS start_date,
       LEAD(v.updated_at) OVER (PARTITION BY v.id ORDER BY v.updated_at_ms) AS end_date,
       v.updated_at_ms AS start_ms,
       LEAD(v.updated_at_ms) OVER (PARTITION BY v.id ORDER BY v.updated_at_ms) AS end_ms,
       LEAD(v.updated_at_ms) OVER (PARTITION BY v.id ORDER BY v.updated_at_ms) IS NULL AS is_current
FROM silver_payment_method_versions v
