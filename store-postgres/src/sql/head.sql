-- The last position readers can see (read_all.sql's bound).
SELECT e.transaction_id, e.global_position
  FROM annals_events e
 WHERE e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY e.transaction_id DESC, e.global_position DESC
 LIMIT 1
