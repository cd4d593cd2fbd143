-- Orders and revenue per hour of the day (UTC), over all days (an order is in one day's hour).
SELECT order_hour, SUM(orders) AS orders, SUM(revenue) AS revenue
FROM revenue_hourly
GROUP BY order_hour
