-- Living-alone elderly with a chronic condition by care level (失能等级), and their average
-- monthly care subsidy (养老服务补贴): is the subsidy reaching the frailest patients?
SELECT e.care_level, count(DISTINCT e.person_id) AS people, avg(e.monthly_subsidy) AS subsidy
FROM civil.elderly e
WHERE e.living_alone
  AND EXISTS (SELECT 1 FROM health.visits v
              WHERE v.person_id = e.person_id AND v.icd10 IN ('I10', 'E11.9'))
GROUP BY e.care_level
ORDER BY people DESC
