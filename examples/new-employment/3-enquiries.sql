-- Who calls 12345 about medical insurance (医保咨询)? Workers who called, by kind of work and
-- whether they hold medical insurance. The hotline's tickets are another department's data,
-- so the join is inside the broker and the answer is differentially private.
SELECT s.employment_type, s.medical_insured, count(DISTINCT s.person_id) AS callers
FROM hrss.social_insurance s
WHERE EXISTS (SELECT 1 FROM hotline.tickets t
              WHERE t.caller_id = s.person_id AND t.category = '医保咨询')
GROUP BY s.employment_type, s.medical_insured
ORDER BY s.employment_type, s.medical_insured
