-- Group commit (see group.rs): the appends of several callers, each to another
-- stream, as one statement and so one transaction and one WAL flush.
--
-- Per append k (ordinality): $1 stream, $2 expectation (-1 any, 0 no stream,
-- n exactly n), $3 command id (NULL: none), $4 event count. $5 the NOTIFY
-- channel ('' sends none). Per event, in batch order: $6 its append k, $7 its
-- place in that append (1-based), $8 id, $9 type, $10 schema version,
-- $11 payload, $12 metadata, $13 tags (a jsonb array of strings).
--
-- Each append is checked on its own, as the single-append statement does
-- (append_stream_*.sql): an append whose expectation fails, or whose command
-- id is recorded, yields no row and writes nothing, while the others are
-- written. One row per written append.
WITH
-- Every event's tags, locked before the streams (annals_lock_tags,
-- migrations/0007); `floor` raises the label of every append of the group.
tag AS MATERIALIZED (
    SELECT annals_lock_tags($13::jsonb[]) AS floor
     -- Untagged events (most) call nothing.
     WHERE EXISTS (SELECT 1 FROM unnest($13::jsonb[]) AS e(tags) WHERE e.tags <> '[]'::jsonb)
),
req AS (
    SELECT r.stream_id, r.expected, r.command_id, r.n, r.k
      FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::int[])
               WITH ORDINALITY AS r(stream_id, expected, command_id, n, k)
     WHERE r.command_id IS NULL
        OR NOT EXISTS (SELECT 1 FROM annals_processed_commands c WHERE c.command_id = r.command_id)
),
any_stream AS (
    INSERT INTO annals_streams AS s (stream_id, version, transaction_id)
    SELECT r.stream_id, r.n, greatest(pg_current_xact_id(), (SELECT floor FROM tag)) FROM req r WHERE r.expected < 0
    ON CONFLICT (stream_id) DO UPDATE
       SET version = s.version + excluded.version,
           transaction_id = greatest(excluded.transaction_id, s.transaction_id)
    RETURNING s.stream_id, s.version, s.transaction_id
),
new_stream AS (
    INSERT INTO annals_streams AS s (stream_id, version, transaction_id)
    SELECT r.stream_id, r.n, greatest(pg_current_xact_id(), (SELECT floor FROM tag)) FROM req r WHERE r.expected = 0
    ON CONFLICT (stream_id) DO NOTHING
    RETURNING s.stream_id, s.version, s.transaction_id
),
exact_stream AS (
    UPDATE annals_streams AS s
       SET version = s.version + r.n,
           transaction_id = greatest(pg_current_xact_id(), s.transaction_id, (SELECT floor FROM tag))
      FROM req r
     WHERE r.expected > 0 AND s.stream_id = r.stream_id AND s.version = r.expected
    RETURNING s.stream_id, s.version, s.transaction_id
),
stream AS (
    SELECT r.k, r.n, r.stream_id, r.command_id, m.version, m.transaction_id
      FROM req r
      JOIN (SELECT * FROM any_stream
            UNION ALL SELECT * FROM new_stream
            UNION ALL SELECT * FROM exact_stream) m ON m.stream_id = r.stream_id
),
inserted AS (
    INSERT INTO annals_events
        (transaction_id, stream_id, stream_version, event_id, event_type,
         schema_version, payload, metadata, tags)
    SELECT st.transaction_id, st.stream_id, st.version - st.n + e.i, e.event_id,
           e.event_type, e.schema_version, e.payload, e.metadata,
           ARRAY(SELECT jsonb_array_elements_text(e.tags))
      FROM unnest($6::bigint[], $7::int[], $8::uuid[], $9::text[], $10::int[],
                  $11::jsonb[], $12::jsonb[], $13::jsonb[])
               WITH ORDINALITY AS e(k, i, event_id, event_type, schema_version, payload, metadata, tags, ord)
      JOIN stream st ON st.k = e.k
     ORDER BY e.ord
    RETURNING stream_id, global_position
),
last AS (
    SELECT stream_id, max(global_position) AS global_position FROM inserted GROUP BY stream_id
),
command AS (
    INSERT INTO annals_processed_commands
        (command_id, stream_id, first_version, stream_version, transaction_id, global_position)
    SELECT st.command_id, st.stream_id, st.version - st.n + 1, st.version, st.transaction_id,
           l.global_position
      FROM stream st JOIN last l ON l.stream_id = st.stream_id
     WHERE st.command_id IS NOT NULL
),
notified AS (
    SELECT CASE WHEN $5 <> '' AND EXISTS (SELECT 1 FROM last) THEN pg_notify($5, '') END AS done
)
SELECT st.k, st.version - st.n + 1, st.version, st.transaction_id, l.global_position
  FROM stream st JOIN last l ON l.stream_id = st.stream_id, notified
