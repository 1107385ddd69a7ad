-- Refused: the same join as exact counts. Joined with L3 social insurance data the tickets are
-- judged at L3 (就高从严); another department's L3 data is released exactly only under an
-- access request its steward approved, and the demo policy opens it to social insurance
-- analysts only with differential privacy.
SELECT s.employment_type, count(*) AS callers
FROM hrss.social_insurance s
WHERE EXISTS (SELECT 1 FROM hotline.tickets t
              WHERE t.caller_id = s.person_id AND t.category = '医保咨询')
GROUP BY s.employment_type
