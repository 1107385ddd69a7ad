-- Civil affairs' own monthly subsidy total per district.
SELECT district, count(*) AS recipients, sum(monthly_subsidy) AS monthly_total
FROM civil.elderly
WHERE monthly_subsidy > 0
GROUP BY district
ORDER BY monthly_total DESC
