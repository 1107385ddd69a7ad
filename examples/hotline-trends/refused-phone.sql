-- Refused: a caller's phone number is an identifier; no answer carries one, not even as a
-- group key.
SELECT caller_phone, count(*) AS tickets FROM hotline.tickets GROUP BY caller_phone
