-- read_all.sql restricted to some event types (in the query, so that a
-- projection of rare events does not read the whole log).
SELECT e.transaction_id, e.global_position, e.event_id, e.stream_id, e.stream_version,
       e.event_type, e.schema_version, e.payload, e.metadata, e.recorded_at,
       e.tags
  FROM annals_events e
 WHERE (e.transaction_id, e.global_position) > ($1, $2)
   AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
   AND e.event_type = ANY ($4)
 ORDER BY e.transaction_id, e.global_position
 LIMIT $3
