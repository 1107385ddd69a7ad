-- The same question per district: bigger groups, so fewer are suppressed and the noise is a
-- smaller share of each answer.
SELECT e.district, count(DISTINCT e.person_id) AS people
FROM civil.elderly e
WHERE e.living_alone
  AND EXISTS (SELECT 1 FROM health.visits v
              WHERE v.person_id = e.person_id AND v.icd10 IN ('I10', 'E11.9'))
  AND NOT EXISTS (SELECT 1 FROM health.visits v
                  WHERE v.person_id = e.person_id AND v.visit_date >= DATE '2026-05-01')
GROUP BY e.district
ORDER BY people DESC
