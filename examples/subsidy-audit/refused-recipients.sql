-- Refused: who receives the highest subsidies, by name.
SELECT name, monthly_subsidy
FROM civil.elderly
WHERE monthly_subsidy >= 1500
