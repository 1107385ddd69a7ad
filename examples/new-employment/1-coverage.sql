-- 新就业形态劳动者: platform workers' (delivery riders, ride-hailing drivers, couriers) social
-- insurance coverage by district and birth decade. Social insurance's own L3 data; groups under
-- 10 workers are suppressed. Aggregate mode groups people by columns or coarsened columns (a
-- decade of birth, not an age band drawn with CASE), and a share of a yes/no column is the
-- average of that column as a number.
SELECT district,
       floor(date_part('year', birth_date) / 10) * 10 AS born_in,
       count(*) AS workers,
       avg(CAST(pension_insured AS DOUBLE)) AS pension,
       avg(CAST(medical_insured AS DOUBLE)) AS medical,
       avg(CAST(injury_insured AS DOUBLE)) AS work_injury
FROM hrss.social_insurance
WHERE employment_type IN ('外卖骑手', '网约车司机', '快递员')
GROUP BY 1, 2
ORDER BY 1, 2
