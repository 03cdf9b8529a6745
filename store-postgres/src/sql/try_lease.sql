-- Takes the projection's advisory lock if it is free. The key is derived
-- from the schema and the projection name, so that stores in different
-- schemas of one database do not lock each other out.
SELECT k, pg_try_advisory_lock(k)
  FROM (SELECT hashtextextended(coalesce(current_schema(), '') || '/' || $1, 0) AS k) AS key
