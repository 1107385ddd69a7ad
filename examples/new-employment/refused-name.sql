-- Refused: the names of uninsured riders who called. Names never leave, in any mode.
SELECT s.name, count(*) AS n
FROM hrss.social_insurance s
WHERE s.employment_type = '外卖骑手' AND NOT s.medical_insured
  AND EXISTS (SELECT 1 FROM hotline.tickets t
              WHERE t.caller_id = s.person_id AND t.category = '医保咨询')
GROUP BY s.name
