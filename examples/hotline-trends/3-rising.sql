-- Month-over-month change per category, and a flag where the last three months average more
-- than 15% above the three before them (a steady rise, not one noisy month).
WITH monthly AS (
    SELECT category, date_part('month', created_at) AS month, count(*) AS tickets
    FROM hotline.tickets
    GROUP BY category, date_part('month', created_at)
)
SELECT category, month, tickets,
       tickets - lag(tickets) OVER (PARTITION BY category ORDER BY month) AS change,
       CASE WHEN avg(tickets) OVER (PARTITION BY category ORDER BY month ROWS BETWEEN 2 PRECEDING AND CURRENT ROW)
                 > 1.15 * avg(tickets) OVER (PARTITION BY category ORDER BY month ROWS BETWEEN 5 PRECEDING AND 3 PRECEDING)
            THEN 'rising' ELSE '' END AS flag
FROM monthly
ORDER BY category, month
