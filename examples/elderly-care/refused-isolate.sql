-- Refused: counting the chronic visits of one 身份证号 would isolate one person.
SELECT count(*) AS visits
FROM health.visits
WHERE person_id = '110101195001011234' AND icd10 IN ('I10', 'E11.9')
