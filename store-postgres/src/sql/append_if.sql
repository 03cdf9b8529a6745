-- Conditional appends (see append/conditional.rs): one or more appends (in
-- the log in their order, several to one stream possible), each with a
-- condition, checked and written in one statement of the transaction whose
-- id labels their events.
--
-- Nothing happens until every transaction with an id below this one's has
-- ended (`ready`): the statement then answers one row, 'wait', and the
-- caller runs it again (in the same transaction, so with the same id) once
-- pg_snapshot_xmin has reached the id. A READ COMMITTED statement takes its
-- snapshot when it starts, so when `ready` holds, that snapshot sees every
-- event that can precede this transaction's in the log.
--
-- $1: the NOTIFY channel ('' sends none).
-- Per append k (ordinality): $2 stream, $3 command id (NULL: none), $4 event
-- count, $5 and $6 the condition's position (0, 0 when it has none), $7 held
-- (checked but not written: its condition may depend on the events of an
-- earlier append of the group, which the caller settles).
-- Per event, in batch order: $8 its append k, $9 its place in that append
-- (1-based), $10 id, $11 type, $12 schema version, $13 payload, $14 metadata,
-- $15 tags (a jsonb array of strings).
-- Per condition query item: $16 its append k, $17 its types (a jsonb array;
-- [] = any type), $18 its tags (a jsonb array; all required).
--
-- One row per append (none but 'wait' until ready), its outcome in `kind`:
--   replayed   its command id or its event ids were recorded: the first
--              outcome (as annals_append answers), nothing written
--   duplicate  some of its event ids are stored elsewhere (annals_append's
--              columns say where), nothing written
--   failed     an event matching its condition is stored after the
--              condition's position: that event's position, nothing written
--   held       none of the above; not written (the caller decides)
--   appended   written: versions, label, the position of the last event and
--              of each event in batch order
--   moved      none of the above, but its stream's label is above this
--              transaction's id (an append to the stream by a younger
--              transaction committed): nothing written, to be run again in
--              a new transaction
WITH
ready AS MATERIALIZED (
    SELECT pg_current_xact_id() AS label,
           pg_snapshot_xmin(pg_current_snapshot()) >= pg_current_xact_id() AS ok
),
member AS MATERIALIZED (
    SELECT m.k, m.stream_id, m.command_id, m.n, m.after_tx, m.after_gp, m.hold
      FROM unnest($2::text[], $3::uuid[], $4::int[], $5::xid8[], $6::bigint[], $7::bool[])
               WITH ORDINALITY AS m(stream_id, command_id, n, after_tx, after_gp, hold, k)
     WHERE (SELECT ok FROM ready)
),
event AS MATERIALIZED (
    SELECT e.*
      FROM unnest($8::int[], $9::int[], $10::uuid[], $11::text[], $12::int[], $13::jsonb[],
                  $14::jsonb[], $15::jsonb[])
               WITH ORDINALITY AS e(k, i, event_id, event_type, schema_version, payload,
                                    metadata, tags, ord)
     WHERE (SELECT ok FROM ready)
),
-- Idempotency first: a recorded command, or the event ids stored (in order,
-- in this stream), answers the first outcome whatever the condition says.
-- annals_stored_events says which, only for the appends with a stored id
-- (a retry; found through the event id index, the function is not called
-- for the others).
stored AS MATERIALIZED (
    SELECT DISTINCT e.k FROM event e JOIN annals_events s ON s.event_id = e.event_id
),
repeated AS MATERIALIZED (
    SELECT m.k, r.o_outcome, r.o_first_version, r.o_stream_version, r.o_transaction_id,
           r.o_global_position, r.o_event_id, r.o_event_stream
      FROM member m
      JOIN (SELECT e.k, array_agg(e.event_id ORDER BY e.i) AS ids FROM event e GROUP BY e.k) b
        ON b.k = m.k
     CROSS JOIN LATERAL (
        SELECT c.*, 1 AS pref FROM annals_command_outcome(m.command_id) c
         WHERE m.command_id IS NOT NULL
        UNION ALL
        SELECT s.*, 2 FROM annals_stored_events(m.stream_id, b.ids) s
         WHERE EXISTS (SELECT 1 FROM stored st WHERE st.k = m.k)
        ORDER BY pref
        LIMIT 1
     ) r
),
item AS MATERIALIZED (
    SELECT i.k, m.after_tx, m.after_gp,
           ARRAY(SELECT jsonb_array_elements_text(i.types)) AS types,
           ARRAY(SELECT jsonb_array_elements_text(i.tags)) AS tags
      FROM unnest($16::int[], $17::jsonb[], $18::jsonb[]) AS i(k, types, tags)
      JOIN member m ON m.k = i.k
     WHERE NOT EXISTS (SELECT 1 FROM repeated r WHERE r.k = i.k)
),
-- The first event matching each condition after its position, each item
-- through the index that suits it (as read_query.sql, whose comments say
-- why the fences). Every visible event counts, also those labelled above
-- this transaction (they follow it in the log, but were recorded first).
hit AS (
    SELECT DISTINCT ON (i.k) i.k, f.transaction_id, f.global_position
      FROM item i
     CROSS JOIN LATERAL (
        (SELECT t.transaction_id, t.global_position
           FROM (SELECT e.transaction_id, e.global_position
                   FROM annals_events e
                  WHERE cardinality(i.tags) > 0
                    AND e.tags @> i.tags
                    AND e.tags <> '{}'::text[] -- the index's predicate
                    AND (cardinality(i.types) = 0 OR e.event_type = ANY (i.types))
                 OFFSET 0) t
          WHERE (t.transaction_id, t.global_position) > (i.after_tx, i.after_gp)
          ORDER BY t.transaction_id, t.global_position
          LIMIT 1)
        UNION ALL
        (SELECT o.transaction_id, o.global_position
           FROM unnest(i.types) AS ty(event_type)
          CROSS JOIN LATERAL (
              SELECT t.transaction_id, t.global_position
                FROM (SELECT e.transaction_id, e.global_position
                        FROM annals_events e
                       WHERE e.event_type = ty.event_type
                         AND (e.transaction_id, e.global_position) > (i.after_tx, i.after_gp)
                       ORDER BY e.transaction_id, e.global_position
                      OFFSET 0) t
               ORDER BY t.transaction_id, t.global_position
               LIMIT 1) o
          WHERE cardinality(i.tags) = 0)
        UNION ALL
        (SELECT e.transaction_id, e.global_position
           FROM annals_events e
          WHERE cardinality(i.tags) = 0 AND cardinality(i.types) = 0
            AND (e.transaction_id, e.global_position) > (i.after_tx, i.after_gp)
          ORDER BY e.transaction_id, e.global_position
          LIMIT 1)
     ) f
     ORDER BY i.k, f.transaction_id, f.global_position
),
-- The appends to write, with their place among the group's appends to the
-- same stream (in group order, which is the log order).
writer AS (
    SELECT m.k, m.stream_id, m.command_id, m.n,
           sum(m.n) OVER (PARTITION BY m.stream_id ORDER BY m.k) - m.n AS before,
           sum(m.n) OVER (PARTITION BY m.stream_id) AS total
      FROM member m
     WHERE NOT m.hold
       AND NOT EXISTS (SELECT 1 FROM repeated r WHERE r.k = m.k)
       AND NOT EXISTS (SELECT 1 FROM hit h WHERE h.k = m.k)
),
-- The stream rows, moved once per stream as an append with
-- ExpectedVersion::Any moves them, but only while their label is not above
-- this transaction's id: then the events are labelled with the id itself,
-- the label `ready` waited for.
stream AS (
    INSERT INTO annals_streams AS s (stream_id, version, transaction_id)
    SELECT w.stream_id, w.total, r.label
      FROM (SELECT DISTINCT stream_id, total FROM writer) w, ready r
    ON CONFLICT (stream_id) DO UPDATE
       SET version = s.version + excluded.version,
           transaction_id = excluded.transaction_id
     WHERE s.transaction_id <= excluded.transaction_id
    RETURNING s.stream_id, s.version, s.transaction_id
),
-- Each append's events follow the stream's version before the group and
-- the group's earlier appends to the stream.
placed AS (
    SELECT w.k, w.stream_id, w.command_id, w.n, st.version - w.total + w.before AS base,
           st.transaction_id
      FROM writer w
      JOIN stream st ON st.stream_id = w.stream_id
),
inserted AS (
    INSERT INTO annals_events
        (transaction_id, stream_id, stream_version, event_id, event_type,
         schema_version, payload, metadata, tags)
    SELECT p.transaction_id, p.stream_id, p.base + e.i, e.event_id,
           e.event_type, e.schema_version, e.payload, e.metadata,
           ARRAY(SELECT jsonb_array_elements_text(e.tags))
      FROM event e
      JOIN placed p ON p.k = e.k
     ORDER BY e.ord
    RETURNING stream_id, stream_version, global_position
),
written AS (
    SELECT p.k, p.base + 1 AS first_version, p.base + p.n AS version, p.transaction_id,
           max(i.global_position) AS last_position,
           array_agg(i.global_position ORDER BY i.stream_version) AS positions
      FROM placed p
      JOIN inserted i
        ON i.stream_id = p.stream_id
       AND i.stream_version > p.base
       AND i.stream_version <= p.base + p.n
     GROUP BY p.k, p.base, p.n, p.transaction_id
),
command AS (
    INSERT INTO annals_processed_commands
        (command_id, stream_id, first_version, stream_version, transaction_id, global_position)
    SELECT p.command_id, p.stream_id, x.first_version, x.version, x.transaction_id,
           x.last_position
      FROM placed p JOIN written x ON x.k = p.k
     WHERE p.command_id IS NOT NULL
),
notified AS (
    SELECT CASE WHEN $1 <> '' AND EXISTS (SELECT 1 FROM inserted) THEN pg_notify($1, '') END
)
SELECT 0::bigint AS k, 'wait'::text AS kind, r.label, NULL::bigint AS first_version,
       NULL::bigint AS stream_version, NULL::xid8 AS transaction_id,
       NULL::bigint AS global_position, NULL::uuid AS event_id, NULL::text AS event_stream,
       NULL::bigint[] AS positions
  FROM ready r
 WHERE NOT r.ok
UNION ALL
SELECT m.k,
       CASE WHEN rp.k IS NOT NULL THEN rp.o_outcome
            WHEN h.k IS NOT NULL THEN 'failed'
            WHEN m.hold THEN 'held'
            WHEN x.k IS NOT NULL THEN 'appended'
            ELSE 'moved' END,
       r.label,
       coalesce(rp.o_first_version, x.first_version),
       coalesce(rp.o_stream_version, x.version),
       coalesce(rp.o_transaction_id, h.transaction_id, x.transaction_id),
       coalesce(rp.o_global_position, h.global_position, x.last_position),
       rp.o_event_id,
       rp.o_event_stream,
       x.positions
  FROM member m
 CROSS JOIN ready r
 CROSS JOIN notified
  LEFT JOIN repeated rp ON rp.k = m.k
  LEFT JOIN hit h ON h.k = m.k
  LEFT JOIN written x ON x.k = m.k
 ORDER BY k
