-- Refused: whether one phone number called about medical insurance.
SELECT count(*) AS tickets
FROM hotline.tickets
WHERE caller_phone = '13800138000' AND category = '医保咨询'
