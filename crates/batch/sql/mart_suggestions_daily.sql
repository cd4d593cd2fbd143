-- Suggestions per day: made (one per eligible order), accepted (written back as suggested
-- lines), the suggestion rate (suggestions per order), the acceptance rate and the accepted
-- revenue.
WITH made AS (
  SELECT f.order_date, COUNT(*) AS suggestions, SUM(s.subtotal) AS offered_revenue
  FROM silver_suggestions s
  JOIN fact_orders f ON f.order_id = s.order_id
  GROUP BY f.order_date
)
SELECT d.order_date, d.orders,
       COALESCE(m.suggestions, 0) AS suggestions,
       d.accepted_suggestions AS accepted,
       CAST(COALESCE(m.suggestions, 0) AS DOUBLE) / d.orders AS suggestion_rate,
       CASE WHEN COALESCE(m.suggestions, 0) = 0 THEN NULL
            ELSE CAST(d.accepted_suggestions AS DOUBLE) / m.suggestions END AS acceptance_rate,
       COALESCE(m.offered_revenue, 0) AS offered_revenue,
       d.accepted_revenue
FROM revenue_daily d
LEFT JOIN made m ON m.order_date = d.order_date
