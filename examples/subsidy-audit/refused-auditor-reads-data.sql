-- Refused: the auditor reads the log, never the data it is about.
SELECT count(*) AS elderly FROM civil.elderly
