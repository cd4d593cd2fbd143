-- How many orders have 1, 2, 3 ... items (suggested lines not counted), over all days.
SELECT items, SUM(orders) AS orders
FROM basket_size_daily
GROUP BY items
