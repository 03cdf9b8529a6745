-- The oldest running transaction that has an id, other than the caller's:
-- what holds pg_snapshot_xmin back (log_lag.sql's `oldest`). None when the
-- only older ids are prepared transactions (pg_prepared_xacts). The age by
-- the clock, not now(): the caller's own transaction may be old.
SELECT a.pid, a.application_name, a.datname::text AS database, a.state,
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8 AS age_seconds
  FROM pg_stat_activity a
 WHERE a.backend_xid IS NOT NULL
   AND a.pid <> pg_backend_pid()
 ORDER BY age(a.backend_xid) DESC
 LIMIT 1
