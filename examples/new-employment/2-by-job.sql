-- Coverage by kind of work, platform workers beside flexible and regular employees.
SELECT employment_type,
       count(*) AS workers,
       avg(CASE WHEN pension_insured THEN 1.0 ELSE 0.0 END) AS pension,
       avg(CASE WHEN medical_insured THEN 1.0 ELSE 0.0 END) AS medical,
       avg(CASE WHEN injury_insured THEN 1.0 ELSE 0.0 END) AS work_injury
FROM hrss.social_insurance
GROUP BY employment_type
ORDER BY medical
