SELECT e.transaction_id, e.global_position, e.event_id, e.stream_id, e.stream_version,
       e.event_type, e.schema_version, e.payload, e.metadata, e.recorded_at,
       e.tags,
       d.error, d.attempts, d.retry_requested
  FROM annals_dead_letters d
  JOIN annals_events e ON e.event_id = d.event_id
 WHERE d.projection = $1
 ORDER BY d.transaction_id, d.global_position
