-- 独居老人主动关怀: living-alone elderly with hypertension or type 2 diabetes (I10, E11.9) and no
-- clinic visit in the six months before the reference date (2026-11-01), per street. The
-- registry stays with civil affairs, the visits with health; the broker ties them by 身份证号.
SELECT e.district, e.street, count(DISTINCT e.person_id) AS people
FROM civil.elderly e
WHERE e.living_alone
  AND EXISTS (SELECT 1 FROM health.visits v
              WHERE v.person_id = e.person_id AND v.icd10 IN ('I10', 'E11.9'))
  AND NOT EXISTS (SELECT 1 FROM health.visits v
                  WHERE v.person_id = e.person_id AND v.visit_date >= DATE '2026-05-01')
GROUP BY e.district, e.street
ORDER BY people DESC
