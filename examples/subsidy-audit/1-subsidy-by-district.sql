-- The health commission's question, under its approved access request: how much care subsidy
-- (养老服务补贴) reaches the elderly per district and care level?
SELECT district, care_level, count(*) AS elderly, avg(monthly_subsidy) AS subsidy
FROM civil.elderly
GROUP BY district, care_level
ORDER BY district, care_level
