-- The global log after a position, gap-free: only rows whose transaction
-- label is older than every transaction still running. A row below that
-- bound is committed (or rolled back) for good, and every row written later
-- gets a label at or above it, so nothing can appear behind what this
-- returns.
SELECT e.transaction_id, e.global_position, e.event_id, e.stream_id, e.stream_version,
       e.event_type, e.schema_version, e.payload, e.metadata, e.recorded_at,
       e.tags
  FROM annals_events e
 WHERE (e.transaction_id, e.global_position) > ($1, $2)
   AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY e.transaction_id, e.global_position
 LIMIT $3
