-- Civil affairs' own monthly subsidy total per district, over its registered elderly (those
-- without a subsidy add nothing to the total).
SELECT district, count(*) AS elderly, sum(monthly_subsidy) AS monthly_total
FROM civil.elderly
GROUP BY district
ORDER BY monthly_total DESC
