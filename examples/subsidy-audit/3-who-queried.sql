-- The auditor: every query that touched the subsidy registry in the last month, who ran it,
-- what was decided and on what basis (the access request and its purpose, or the policy line).
SELECT time, "user", department, decision, rule, detail
FROM audit.events
WHERE action = 'query'
  AND datasets LIKE '%civil.elderly%'
  AND time >= now() - INTERVAL '1 month'
ORDER BY seq
