-- Refused: filtering on one caller's 身份证号 would isolate one person.
SELECT count(*) AS tickets FROM hotline.tickets WHERE caller_id = '110101195001011234'
