-- annals: the append, complete, as one server-side call.
--
-- `annals_append` checks the expected version, moves the stream row, inserts
-- every event of the batch from arrays, records the command id and notifies
-- listeners: one statement, so one round trip and (in autocommit) one
-- transaction. It never writes when it answers anything but 'appended'.
--
-- The store's common case runs a leaner single statement instead
-- (store-postgres/src/sql/append_*.sql) and calls this function only when
-- that statement wrote nothing (to learn why: replay, conflict, duplicate),
-- after a lost race, and for appends inside the caller's transaction.
--
-- Outcomes (o_outcome):
--   appended   written; o_first_version..o_stream_version, position of the last event
--   replayed   nothing written: the command id, or every event id, was already
--              stored; the other columns describe the first outcome
--   duplicate  nothing written: o_event_id is stored at o_event_stream / o_stream_version
--   conflict   nothing written: the stream is at o_stream_version
--
-- A race with a concurrent append of the same ids or command id surfaces as a
-- unique violation (nothing written); the caller retries with p_check_ids and
-- then gets 'replayed' or 'duplicate'.

-- Where the given event ids are already stored, as an append outcome:
-- 'replayed' when all of them are stored in p_stream, in batch order at
-- consecutive versions (a retry of an append that succeeded, or of part of
-- it); 'duplicate' (naming one of them, preferring one stored in another
-- stream) when only some are, or elsewhere, or out of order; no row when none
-- is stored.
CREATE FUNCTION annals_stored_events(p_stream text, p_event_ids uuid[])
RETURNS TABLE (
    o_outcome         text,
    o_first_version   bigint,
    o_stream_version  bigint,
    o_transaction_id  xid8,
    o_global_position bigint,
    o_event_id        uuid,
    o_event_stream    text
)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_found     bigint;
    v_in_order  bigint;
BEGIN
    -- In order: every id in p_stream at (version of the first id) + its
    -- place in the batch, i.e. one value of stream_version - ord.
    SELECT count(*),
           count(*) FILTER (WHERE e.stream_id = p_stream
                              AND e.stream_version - b.ord = (
                                  SELECT f.stream_version - 1
                                    FROM annals_events f
                                   WHERE f.event_id = p_event_ids[1]
                                     AND f.stream_id = p_stream))
      INTO v_found, v_in_order
      FROM unnest(p_event_ids) WITH ORDINALITY AS b(event_id, ord)
      JOIN annals_events e ON e.event_id = b.event_id;

    IF v_found = 0 THEN
        RETURN;
    END IF;

    IF v_in_order = cardinality(p_event_ids) THEN
        RETURN QUERY
            SELECT 'replayed'::text, min(e.stream_version) OVER (), e.stream_version,
                   e.transaction_id, e.global_position, NULL::uuid, e.stream_id
              FROM annals_events e
             WHERE e.event_id = ANY (p_event_ids)
             ORDER BY e.stream_version DESC
             LIMIT 1;
        RETURN;
    END IF;

    RETURN QUERY
        SELECT 'duplicate'::text, NULL::bigint, e.stream_version,
               e.transaction_id, e.global_position, e.event_id, e.stream_id
          FROM unnest(p_event_ids) WITH ORDINALITY AS b(event_id, ord)
          JOIN annals_events e ON e.event_id = b.event_id
         ORDER BY e.stream_id = p_stream, b.ord
         LIMIT 1;
END;
$$;

-- The outcome recorded for a command id, as an append outcome ('replayed').
CREATE FUNCTION annals_command_outcome(p_command_id uuid)
RETURNS TABLE (
    o_outcome         text,
    o_first_version   bigint,
    o_stream_version  bigint,
    o_transaction_id  xid8,
    o_global_position bigint,
    o_event_id        uuid,
    o_event_stream    text
)
LANGUAGE sql STABLE
AS $$
    SELECT 'replayed'::text, c.first_version, c.stream_version,
           c.transaction_id, c.global_position, NULL::uuid, c.stream_id
      FROM annals_processed_commands c
     WHERE c.command_id = p_command_id;
$$;

-- Appends a batch to one stream.
--
-- p_expected: -1 any version, 0 no stream, n > 0 exactly version n.
-- p_check_ids: look the event ids up before writing (the retry after a
--   unique violation); otherwise they are only looked up on a conflict.
-- p_channel: the NOTIFY channel; '' sends no notification.
CREATE FUNCTION annals_append(
    p_stream          text,
    p_expected        bigint,
    p_command_id      uuid,
    p_check_ids       boolean,
    p_channel         text,
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_payloads        jsonb[],
    p_metadata        jsonb[]
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

    -- Check the expected version and move the stream in one write, which
    -- also locks the stream row until commit: appends to one stream are
    -- serialised here. The label is at least the stream's previous label.
    IF p_expected < 0 THEN
        INSERT INTO annals_streams AS s (stream_id, version, transaction_id)
        VALUES (p_stream, v_count, pg_current_xact_id())
        ON CONFLICT (stream_id) DO UPDATE
            SET version = s.version + v_count,
                transaction_id = greatest(pg_current_xact_id(), s.transaction_id)
        RETURNING s.version, s.transaction_id INTO v_version, v_label;
    ELSIF p_expected = 0 THEN
        INSERT INTO annals_streams AS s (stream_id, version, transaction_id)
        VALUES (p_stream, v_count, pg_current_xact_id())
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING s.version, s.transaction_id INTO v_version, v_label;
    ELSE
        UPDATE annals_streams AS s
           SET version = s.version + v_count,
               transaction_id = greatest(pg_current_xact_id(), s.transaction_id)
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
         schema_version, payload, metadata)
    SELECT v_label, p_stream, v_version - v_count + e.ord, e.event_id, e.event_type,
           e.schema_version, e.payload, e.metadata
      FROM unnest(p_event_ids, p_event_types, p_schema_versions, p_payloads, p_metadata)
           WITH ORDINALITY AS e(event_id, event_type, schema_version, payload, metadata, ord)
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
