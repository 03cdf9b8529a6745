-- Dead-letters events of a projection ($1), idempotent by event id
-- (dead-lettering again updates the error, the attempts and the retry
-- request). With a claim ($11 projection, $12 partition, $13 owner, $14
-- generation; all NULL for none), only while the claim holds: the fence of
-- save_claimed_checkpoint.sql. Answers whether it wrote. Transaction ids
-- ($3) come as text: see save_claimed_checkpoint.sql.
WITH claim AS (
    SELECT 1
      FROM annals_claims
     WHERE projection = $11 AND partition = $12 AND owner = $13 AND generation = $14
       FOR SHARE
),
allowed AS (
    SELECT $11::text IS NULL OR EXISTS (SELECT 1 FROM claim) AS ok
),
written AS (
    INSERT INTO annals_dead_letters
           (projection, event_id, transaction_id, global_position, stream_id, stream_version,
            event_type, error, attempts, retry_requested)
    SELECT $1, p.event_id, p.transaction_id::xid8, p.global_position, p.stream_id,
           p.stream_version, p.event_type, p.error, p.attempts, p.retry_requested
      FROM UNNEST($2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[],
                  $8::text[], $9::int[], $10::bool[])
           AS p(event_id, transaction_id, global_position, stream_id, stream_version, event_type,
                error, attempts, retry_requested)
     WHERE (SELECT ok FROM allowed)
    ON CONFLICT (projection, event_id) DO UPDATE
       SET error = EXCLUDED.error,
           attempts = EXCLUDED.attempts,
           retry_requested = EXCLUDED.retry_requested,
           updated_at = now()
    RETURNING 1
)
SELECT ok FROM allowed
