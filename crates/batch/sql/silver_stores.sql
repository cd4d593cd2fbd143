-- silver.stores: the latest version of every store.
SELECT id, name, address, district, city, updated_at_ms, updated_at
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY updated_at_ms DESC) AS rn FROM silver_stores_versions) v
WHERE rn = 1
