SELECT e.transaction_id, e.global_position, e.event_id, e.stream_id, e.stream_version,
       e.event_type, e.schema_version, e.payload, e.metadata, e.recorded_at,
       e.tags
  FROM annals_events e
 WHERE e.stream_id = $1
   AND e.stream_version >= $2
 ORDER BY e.stream_version
 LIMIT $3
