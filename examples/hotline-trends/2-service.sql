-- Service quality per district: tickets, the share resolved within 24 hours, average hours to
-- resolve and average satisfaction (1-5). Over people's rows aggregate mode admits only counts
-- and bounded sums of bare columns, so the tickets are counted per district and outcome, and
-- the shares and averages are worked out over those released numbers.
WITH outcome AS (
    SELECT district, resolved_within_24h AS fast, count(*) AS tickets,
           sum(hours_to_resolve) AS hours, sum(satisfaction) AS satisfaction
    FROM hotline.tickets
    GROUP BY district, resolved_within_24h
)
SELECT district,
       sum(tickets) AS tickets,
       sum(CASE WHEN fast THEN tickets ELSE 0 END) * 1.0 / sum(tickets) AS resolved_24h_share,
       sum(hours) * 1.0 / sum(tickets) AS avg_hours,
       sum(satisfaction) * 1.0 / sum(tickets) AS satisfaction
FROM outcome
GROUP BY district
ORDER BY district
