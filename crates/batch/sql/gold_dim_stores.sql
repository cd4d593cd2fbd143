-- gold.dim_stores: stores as SCD type 2, one row per version. Surrogate keys are numbered in
-- the order versions were first extracted, so a key never changes meaning between runs; a
-- version is valid from its start (updated_at) to the next version's start (end_date, NULL for
-- the current one). Facts before a member's first version use that first version.
SELECT CAST(ROW_NUMBER() OVER (ORDER BY v.first_extracted_ms, v.id, v.updated_at_ms) AS BIGINT) AS store_key,
       v.id AS store_id,
       v.name,
       v.address,
       v.district,
       v.city,
       CAST(ROW_NUMBER() OVER (PARTITION BY v.id ORDER BY v.updated_at_ms) AS BIGINT) AS version,
       v.updated_at AS start_date,
       LEAD(v.updated_at) OVER (PARTITION BY v.id ORDER BY v.updated_at_ms) AS end_date,
       v.updated_at_ms AS start_ms,
       LEAD(v.updated_at_ms) OVER (PARTITION BY v.id ORDER BY v.updated_at_ms) AS end_ms,
       LEAD(v.updated_at_ms) OVER (PARTITION BY v.id ORDER BY v.updated_at_ms) IS NULL AS is_current
FROM silver_stores_versions v
