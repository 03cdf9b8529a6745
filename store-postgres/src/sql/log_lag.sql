-- What holds readers of the global log back: the bound (the oldest running
-- transaction id anywhere on the server), the committed events not yet
-- readable behind it, and the oldest transaction that has an id.
WITH horizon AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin
), held_back AS (
    SELECT count(*) AS events, min(e.recorded_at) AS since
      FROM annals_events e, horizon h
     WHERE e.transaction_id >= h.xmin
), oldest AS (
    SELECT a.pid, a.application_name, a.datname::text AS database, a.state,
           extract(epoch FROM now() - a.xact_start)::float8 AS age_seconds
      FROM pg_stat_activity a
     WHERE a.backend_xid IS NOT NULL
       AND a.pid <> pg_backend_pid()
     ORDER BY age(a.backend_xid) DESC
     LIMIT 1
)
SELECT h.xmin, b.events, b.since,
       o.pid, o.application_name, o.database, o.state, o.age_seconds
  FROM horizon h
 CROSS JOIN held_back b
  LEFT JOIN oldest o ON true
