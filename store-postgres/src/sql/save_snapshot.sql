INSERT INTO annals_snapshots (stream_id, stream_version, schema_version, state)
VALUES ($1, $2, $3, $4)
ON CONFLICT (stream_id) DO UPDATE
   SET stream_version = excluded.stream_version,
       schema_version = excluded.schema_version,
       state = excluded.state,
       saved_at = now()
