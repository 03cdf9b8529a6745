INSERT INTO annals_dead_letters
       (projection, event_id, transaction_id, global_position, stream_id, stream_version,
        event_type, error, attempts, retry_requested)
SELECT $1, p.event_id, p.transaction_id, p.global_position, p.stream_id, p.stream_version,
       p.event_type, p.error, p.attempts, p.retry_requested
  FROM UNNEST($2::uuid[], $3::xid8[], $4::bigint[], $5::text[], $6::bigint[], $7::text[],
              $8::text[], $9::int[], $10::bool[])
       AS p(event_id, transaction_id, global_position, stream_id, stream_version, event_type,
            error, attempts, retry_requested)
ON CONFLICT (projection, event_id) DO UPDATE
   SET error = EXCLUDED.error,
       attempts = EXCLUDED.attempts,
       retry_requested = EXCLUDED.retry_requested,
       updated_at = now()
