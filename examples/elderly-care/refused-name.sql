-- Refused: the names of the people to visit. Names are identifiers; no mode releases them, as
-- a column or as a group key.
SELECT e.name, count(*) AS n
FROM civil.elderly e
WHERE e.living_alone
  AND NOT EXISTS (SELECT 1 FROM health.visits v
                  WHERE v.person_id = e.person_id AND v.visit_date >= DATE '2026-05-01')
GROUP BY e.name
