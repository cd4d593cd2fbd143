-- Revenue, orders and suggestions per day; accepted suggestions are suggested lines. The sums
-- of the day's hours: an order is in one hour of its day.
SELECT order_date,
       SUM(orders) AS orders,
       SUM(lines) AS lines,
       SUM(revenue) AS revenue,
       SUM(accepted_suggestions) AS accepted_suggestions,
       SUM(accepted_revenue) AS accepted_revenue
FROM revenue_hourly
GROUP BY order_date
