-- Complaints per district, category and month (2026).
SELECT district, category, date_part('month', created_at) AS month, count(*) AS tickets
FROM hotline.tickets
GROUP BY district, category, date_part('month', created_at)
ORDER BY month, district, category
