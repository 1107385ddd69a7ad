-- Coverage by kind of work, platform workers beside flexible and regular employees.
SELECT employment_type,
       count(*) AS workers,
       avg(CAST(pension_insured AS DOUBLE)) AS pension,
       avg(CAST(medical_insured AS DOUBLE)) AS medical,
       avg(CAST(injury_insured AS DOUBLE)) AS work_injury
FROM hrss.social_insurance
GROUP BY employment_type
ORDER BY medical
