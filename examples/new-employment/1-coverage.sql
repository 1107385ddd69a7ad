-- 新就业形态劳动者: platform workers' (delivery riders, ride-hailing drivers, couriers) social
-- insurance coverage by district and age band on 2026-11-01. Social insurance's own L3 data,
-- so exact aggregates; groups under 10 workers are suppressed.
SELECT district,
       CASE WHEN birth_date > DATE '1996-11-01' THEN '18-29'
            WHEN birth_date > DATE '1986-11-01' THEN '30-39'
            WHEN birth_date > DATE '1976-11-01' THEN '40-49'
            ELSE '50-59' END AS age_band,
       count(*) AS workers,
       avg(CASE WHEN pension_insured THEN 1.0 ELSE 0.0 END) AS pension,
       avg(CASE WHEN medical_insured THEN 1.0 ELSE 0.0 END) AS medical,
       avg(CASE WHEN injury_insured THEN 1.0 ELSE 0.0 END) AS work_injury
FROM hrss.social_insurance
WHERE employment_type IN ('外卖骑手', '网约车司机', '快递员')
GROUP BY 1, 2
ORDER BY 1, 2
