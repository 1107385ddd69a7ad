-- Service quality per district: share of tickets resolved within 24 hours, average hours to
-- resolve and average satisfaction (1-5).
SELECT district,
       count(*) AS tickets,
       avg(CASE WHEN resolved_within_24h THEN 1.0 ELSE 0.0 END) AS resolved_24h_share,
       avg(hours_to_resolve) AS avg_hours,
       avg(satisfaction) AS satisfaction
FROM hotline.tickets
GROUP BY district
ORDER BY district
