-- The auditor: the denied attempts on the subsidy registry, by user and rule.
SELECT "user", department, rule, count(*) AS attempts
FROM audit.events
WHERE decision = 'denied' AND datasets LIKE '%civil.elderly%'
GROUP BY "user", department, rule
ORDER BY "user", rule
