-- annals: tags on events, for queries across streams (dynamic consistency
-- boundaries: EventStore::read_query and EventStore::append_if).
--
-- A query item selects events of some types carrying all of some tags:
-- `tags @> $item_tags AND tags <> '{}'` uses the GIN index below; an item of
-- types only uses annals_events_type_idx (event_type, transaction_id,
-- global_position) from 0001, which also yields them in log order.

-- A constant default: adding the column rewrites nothing.
ALTER TABLE annals_events ADD COLUMN tags text[] NOT NULL DEFAULT '{}';

-- Only tagged events: an untagged one costs appends nothing here (and no
-- query item looks for "no tags" through this index). Without fastupdate:
-- its pending list would make every lookup (each conditional append's
-- check) read every entry appended since the last cleanup.
CREATE INDEX annals_events_tags_idx ON annals_events USING gin (tags)
    WITH (fastupdate = off)
    WHERE tags <> '{}'::text[];

-- The append function of 0002, with the events' tags (p_tags: one jsonb
-- array of strings per event). The body is 0002's but for the tags column.
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

-- 0002's signature stays, for processes of the previous version during a
-- rolling upgrade: their events carry no tags.
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
LANGUAGE sql
AS $$
    SELECT * FROM annals_append(p_stream, p_expected, p_command_id, p_check_ids, p_channel,
                                p_event_ids, p_event_types, p_schema_versions, p_payloads,
                                p_metadata, array_fill('[]'::jsonb, ARRAY[cardinality(p_event_ids)]));
$$;
