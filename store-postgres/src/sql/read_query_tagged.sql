-- The events matching a query of one item with tags after a position, in log
-- order, at most $3, gap-free as read_all.sql (only rows labelled below every
-- running transaction): read_query.sql without the merge of several items.
--
-- $1, $2: the position to read after; $4 the item's types (empty: any type);
-- $5 its tags (every one required, at least one).
--
-- Through the GIN index on tags, then sorted by position: the OFFSET 0 fence
-- keeps the planner from walking the primary key in log order and filtering
-- every row (which the LIMIT makes look cheap), so the cost follows the
-- tags' events, not the log.
SELECT t.transaction_id, t.global_position, t.event_id, t.stream_id, t.stream_version,
       t.event_type, t.schema_version, t.payload, t.metadata, t.recorded_at, t.tags
  FROM (SELECT e.*
          FROM annals_events e
         WHERE e.tags @> $5::text[]
           AND e.tags <> '{}'::text[] -- the index's predicate
           AND (cardinality($4::text[]) = 0 OR e.event_type = ANY ($4::text[]))
        OFFSET 0) t
 WHERE (t.transaction_id, t.global_position) > ($1, $2)
   AND t.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY t.transaction_id, t.global_position
 LIMIT $3
