-- annals: tags as consistency boundaries. A conditional append whose
-- condition names a tag in every item locks those tags instead of waiting
-- for every older transaction of the server (see
-- store-postgres/src/append/conditional.rs for why it holds).
--
-- annals_tags has one row per tag ever written or checked. Every append
-- locks the rows of its events' tags before its stream's (annals_lock_tags),
-- so a conditional append that holds a tag's row sees, once it has the row,
-- every event with that tag that can precede its own; and it leaves its
-- label on the rows of the tags it checked, so that an append of such an
-- event that comes later is labelled at or above it and follows it in the
-- log.
CREATE TABLE annals_tags (
    tag            text PRIMARY KEY,
    -- The label of the last conditional append that checked this tag (or of
    -- the transaction that created the row): appends with this tag are
    -- labelled at least this.
    transaction_id xid8 NOT NULL
);

-- Locks the rows of the tags in p_tags (one jsonb array of strings per
-- event, as annals_append takes them), creating the missing ones, in tag
-- order (so that appends sharing several tags cannot deadlock on them);
-- the highest label on them above this transaction's id, if any. Held to
-- commit. An existing row is locked without being written
-- (`ON CONFLICT DO UPDATE ... WHERE` locks every conflicting row, and only
-- writes where the condition holds): the condition is false unless a
-- conditional append left a label above this transaction's id, so ordinary
-- appends add no row version.
CREATE FUNCTION annals_lock_tags(p_tags jsonb[])
RETURNS xid8
LANGUAGE plpgsql
AS $$
DECLARE
    v_floor xid8;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unnest(p_tags) AS e(tags) WHERE e.tags <> '[]'::jsonb) THEN
        RETURN NULL;
    END IF;
    WITH locked AS (
        INSERT INTO annals_tags AS t (tag, transaction_id)
        SELECT DISTINCT x.tag, pg_current_xact_id()
          FROM unnest(p_tags) AS e(tags)
         CROSS JOIN LATERAL jsonb_array_elements_text(e.tags) AS x(tag)
         ORDER BY 1
        ON CONFLICT (tag) DO UPDATE
           SET transaction_id = t.transaction_id
         WHERE t.transaction_id > excluded.transaction_id
        RETURNING t.transaction_id
    )
    SELECT max(l.transaction_id) INTO v_floor FROM locked l;
    RETURN v_floor;
END;
$$;

-- 0006's append, which now locks its events' tags before its stream and
-- labels its events at least as the tags' rows say.
CREATE OR REPLACE FUNCTION annals_append(
    p_stream          text,
    p_expected        bigint,
    p_command_id      uuid,
    p_check_ids       boolean,
    p_channel         text,
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_payloads        jsonb[],
    p_metadata        jsonb[],
    p_tags            jsonb[]
)
RETURNS TABLE (
    o_outcome         text,
    o_first_version   bigint,
    o_stream_version  bigint,
    o_transaction_id  xid8,
    o_global_position bigint,
    o_event_id        uuid,
    o_event_stream    text
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_count    bigint := cardinality(p_event_ids);
    v_version  bigint;
    v_label    xid8;
    v_position bigint;
    v_floor    xid8;
BEGIN
    IF p_command_id IS NOT NULL THEN
        RETURN QUERY SELECT * FROM annals_command_outcome(p_command_id);
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;

    IF p_check_ids THEN
        RETURN QUERY SELECT * FROM annals_stored_events(p_stream, p_event_ids);
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;

    -- The events' tags first (annals_lock_tags: the order every append
    -- locks in), then the stream.
    v_floor := annals_lock_tags(p_tags);

    -- Check the expected version and move the stream in one write, which
    -- also locks the stream row until commit: appends to one stream are
    -- serialised here. The label is at least the stream's previous label
    -- and any label a conditional append left on one of the tags.
    IF p_expected < 0 THEN
        INSERT INTO annals_streams AS s (stream_id, version, transaction_id)
        VALUES (p_stream, v_count, greatest(pg_current_xact_id(), v_floor))
        ON CONFLICT (stream_id) DO UPDATE
            SET version = s.version + v_count,
                transaction_id = greatest(excluded.transaction_id, s.transaction_id)
        RETURNING s.version, s.transaction_id INTO v_version, v_label;
    ELSIF p_expected = 0 THEN
        INSERT INTO annals_streams AS s (stream_id, version, transaction_id)
        VALUES (p_stream, v_count, greatest(pg_current_xact_id(), v_floor))
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING s.version, s.transaction_id INTO v_version, v_label;
    ELSE
        UPDATE annals_streams AS s
           SET version = s.version + v_count,
               transaction_id = greatest(pg_current_xact_id(), s.transaction_id, v_floor)
         WHERE s.stream_id = p_stream
           AND s.version = p_expected
        RETURNING s.version, s.transaction_id INTO v_version, v_label;
    END IF;

    IF v_version IS NULL THEN
        -- The stream is elsewhere. A retry of something that already
        -- happened is not a conflict: look for the command and the ids
        -- (each statement sees what committed meanwhile).
        IF p_command_id IS NOT NULL THEN
            RETURN QUERY SELECT * FROM annals_command_outcome(p_command_id);
            IF FOUND THEN
                RETURN;
            END IF;
        END IF;
        RETURN QUERY SELECT * FROM annals_stored_events(p_stream, p_event_ids);
        IF FOUND THEN
            RETURN;
        END IF;
        RETURN QUERY
            SELECT 'conflict'::text, NULL::bigint,
                   coalesce((SELECT s.version FROM annals_streams s WHERE s.stream_id = p_stream), 0),
                   NULL::xid8, NULL::bigint, NULL::uuid, p_stream;
        RETURN;
    END IF;

    -- In batch order, so that global positions follow stream versions.
    INSERT INTO annals_events
        (transaction_id, stream_id, stream_version, event_id, event_type,
         schema_version, payload, metadata, tags)
    SELECT v_label, p_stream, v_version - v_count + e.ord, e.event_id, e.event_type,
           e.schema_version, e.payload, e.metadata,
           ARRAY(SELECT jsonb_array_elements_text(e.tags))
      FROM unnest(p_event_ids, p_event_types, p_schema_versions, p_payloads, p_metadata, p_tags)
           WITH ORDINALITY AS e(event_id, event_type, schema_version, payload, metadata, tags, ord)
     ORDER BY e.ord;
    -- The last position this session drew: the batch's last event.
    v_position := currval('annals_events_global_position_seq'::regclass);

    IF p_command_id IS NOT NULL THEN
        INSERT INTO annals_processed_commands
            (command_id, stream_id, first_version, stream_version, transaction_id, global_position)
        VALUES (p_command_id, p_stream, v_version - v_count + 1, v_version, v_label, v_position);
    END IF;

    IF p_channel <> '' THEN
        PERFORM pg_notify(p_channel, '');
    END IF;

    RETURN QUERY
        SELECT 'appended'::text, v_version - v_count + 1, v_version,
               v_label, v_position, NULL::uuid, p_stream;
END;
$$;

-- Conditional appends (see store-postgres/src/append/conditional.rs): one or
-- more appends (in the log in their order, several to one stream possible),
-- each with a condition, checked and written by one call.
--
-- Two ways, by p_wait:
--   * false (every condition item names a tag): lock the tags of the
--     conditions and of the events, then the streams' rows, and label the
--     events at or above every label found there; called in autocommit.
--   * true (some item names no tag): nothing happens until every
--     transaction with an id below this one's has ended: the call answers
--     one row, 'wait', and the caller calls again (in the same transaction,
--     so with the same id) once pg_snapshot_xmin has reached the id. The
--     events are labelled with the id itself; a tag or stream labelled above
--     it (by a younger transaction) answers 'moved' for every append.
-- Either way the check runs in a statement after the locks were taken, so
-- its snapshot sees every event that can precede this call's.
--
-- p_channel: the NOTIFY channel ('' sends none). p_lock_timeout: the
-- transaction's lock_timeout from here on (such as '10000ms').
-- Per append k (ordinality): p_streams, p_command_ids (NULL: none),
-- p_counts (events), p_after_transactions and p_after_positions (the
-- condition's position; 0, 0 when it has none), p_hold (checked but not
-- written: its condition may depend on the events of an earlier append of
-- the group, which the caller settles).
-- Per event, in batch order: p_owners (its append k), p_places (its place
-- in that append, 1-based), p_event_ids, p_event_types, p_schema_versions,
-- p_payloads, p_metadata, p_tags (a jsonb array of strings).
-- Per condition query item: p_item_owners (its append k), p_item_types (a
-- jsonb array; [] = any type), p_item_tags (a jsonb array; all required).
--
-- One row per append (none but 'wait' until ready), its outcome in r_kind:
--   replayed   its command id or its event ids were recorded: the first
--              outcome (as annals_append answers), nothing written
--   duplicate  some of its event ids are stored elsewhere (annals_append's
--              columns say where), nothing written
--   failed     an event matching its condition is stored after the
--              condition's position: that event's position, nothing written
--   held       none of the above; not written (the caller decides)
--   appended   written: versions, label, the position of the last event and
--              of each event in batch order
--   moved      none of the above, but its stream (or, waiting, a tag) is
--              labelled above the label the call chose: nothing written, to
--              be run again in a new transaction
CREATE FUNCTION annals_append_if(
    p_channel              text,
    p_streams              text[],
    p_command_ids          uuid[],
    p_counts               integer[],
    p_after_transactions   xid8[],
    p_after_positions      bigint[],
    p_hold                 boolean[],
    p_owners               integer[],
    p_places               integer[],
    p_event_ids            uuid[],
    p_event_types          text[],
    p_schema_versions      integer[],
    p_payloads             jsonb[],
    p_metadata             jsonb[],
    p_tags                 jsonb[],
    p_item_owners          integer[],
    p_item_types           jsonb[],
    p_item_tags            jsonb[],
    p_wait                 boolean,
    p_lock_timeout         text
)
RETURNS TABLE (
    r_k               bigint,
    r_kind            text,
    r_label           xid8,
    r_first_version   bigint,
    r_stream_version  bigint,
    r_transaction_id  xid8,
    r_global_position bigint,
    r_event_id        uuid,
    r_event_stream    text,
    r_positions       bigint[]
)
LANGUAGE plpgsql
-- Its plan does not depend on the values (index choices are made per item
-- at run time); replanning it for each call (what PostgreSQL keeps doing
-- when a generic plan's estimates, made for arrays of unknown length, look
-- costlier than a custom plan) costs more than running it. Every look at
-- the log goes through an index: a generic plan made while the table's
-- statistics were stale (a log that grew fast since the last ANALYZE)
-- would otherwise scan the whole log for each check, until the next ANALYZE.
-- And no JIT: on a large log the plan's estimated cost (of branches that
-- mostly do not run) passes jit_above_cost, and compiling it took 90 ms to
-- 1 s per call, for a call that runs in a fraction of a millisecond.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    v_id    xid8 := pg_current_xact_id();
    v_floor xid8;
    v_label xid8;
BEGIN
    -- A lock held by a long transaction (an append inside a caller's
    -- transaction) fails the call instead of holding it indefinitely.
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    IF p_wait AND pg_snapshot_xmin(pg_current_snapshot()) < v_id THEN
        RETURN QUERY SELECT 0::bigint, 'wait'::text, v_id, NULL::bigint, NULL::bigint,
                            NULL::xid8, NULL::bigint, NULL::uuid, NULL::text, NULL::bigint[];
        RETURN;
    END IF;

    -- The events' tags and the tags the conditions check (the same shape:
    -- one jsonb array per event or item), before the streams, which the
    -- write below locks: the order every append locks in.
    v_floor := annals_lock_tags(p_tags || p_item_tags);
    IF p_wait THEN
        v_label := v_id;
        IF v_floor > v_id THEN
            RETURN QUERY SELECT m.k, 'moved'::text, v_id, NULL::bigint, NULL::bigint,
                                NULL::xid8, NULL::bigint, NULL::uuid, NULL::text, NULL::bigint[]
                           FROM unnest(p_streams) WITH ORDINALITY AS m(stream_id, k);
            RETURN;
        END IF;
    ELSE
        v_label := greatest(v_id, v_floor);
    END IF;

    RETURN QUERY
    WITH
    member AS MATERIALIZED (
        SELECT m.k, m.stream_id, m.command_id, m.n, m.after_tx, m.after_gp, m.hold
          FROM unnest(p_streams, p_command_ids, p_counts, p_after_transactions, p_after_positions, p_hold)
                   WITH ORDINALITY AS m(stream_id, command_id, n, after_tx, after_gp, hold, k)
    ),
    event AS MATERIALIZED (
        SELECT e.*
          FROM unnest(p_owners, p_places, p_event_ids, p_event_types, p_schema_versions, p_payloads,
                      p_metadata, p_tags)
                   WITH ORDINALITY AS e(k, i, event_id, event_type, schema_version, payload,
                                        metadata, tags, ord)
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
          FROM unnest(p_item_owners, p_item_types, p_item_tags) AS i(k, types, tags)
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
    -- the label chosen (v_label): then the events are labelled with it.
    stream AS (
        INSERT INTO annals_streams AS s (stream_id, version, transaction_id)
        SELECT w.stream_id, w.total, v_label
          FROM (SELECT DISTINCT stream_id, total FROM writer) w
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
        SELECT CASE WHEN p_channel <> '' AND EXISTS (SELECT 1 FROM inserted) THEN pg_notify(p_channel, '') END
    ),
    -- When anything was written, later appends of the checked tags follow
    -- it: the label goes on their rows (locked above). By the primary key
    -- (= ANY of an array), whatever the generic plan thinks of the join.
    relabel AS (
        UPDATE annals_tags AS t
           SET transaction_id = v_label
         WHERE t.tag = ANY (ARRAY(SELECT DISTINCT x.tag
                                    FROM item i CROSS JOIN LATERAL unnest(i.tags) AS x(tag)))
           AND t.transaction_id < v_label
           AND EXISTS (SELECT 1 FROM inserted)
    )
    SELECT m.k,
           CASE WHEN rp.k IS NOT NULL THEN rp.o_outcome
                WHEN h.k IS NOT NULL THEN 'failed'
                WHEN m.hold THEN 'held'
                WHEN x.k IS NOT NULL THEN 'appended'
                ELSE 'moved' END,
           v_label,
           coalesce(rp.o_first_version, x.first_version),
           coalesce(rp.o_stream_version, x.version),
           coalesce(rp.o_transaction_id, h.transaction_id, x.transaction_id),
           coalesce(rp.o_global_position, h.global_position, x.last_position),
           rp.o_event_id,
           rp.o_event_stream,
           x.positions
      FROM member m
     CROSS JOIN notified
      LEFT JOIN repeated rp ON rp.k = m.k
      LEFT JOIN hit h ON h.k = m.k
      LEFT JOIN written x ON x.k = m.k
     ORDER BY k;

END;
$$;
