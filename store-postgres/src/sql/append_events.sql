-- Hot path, the batch from arrays ($5 ids, $6 types, $7 schema versions,
-- $8 payloads, $9 metadata, $10 tags: a jsonb array of strings per event) in
-- batch order, labelled with the stream row's transaction label; and the
-- position of its last event.
inserted AS (
    INSERT INTO annals_events
        (transaction_id, stream_id, stream_version, event_id, event_type,
         schema_version, payload, metadata, tags)
    SELECT st.transaction_id, $1, st.version - cardinality($5) + e.ord, e.event_id,
           e.event_type, e.schema_version, e.payload, e.metadata,
           ARRAY(SELECT jsonb_array_elements_text(e.tags))
      FROM stream st,
           unnest($5, $6::text[], $7::int[], $8::jsonb[], $9::jsonb[], $10::jsonb[])
               WITH ORDINALITY AS e(event_id, event_type, schema_version, payload, metadata, tags, ord)
     ORDER BY e.ord
    RETURNING global_position
),
last AS (
    SELECT max(global_position) AS global_position FROM inserted
)
