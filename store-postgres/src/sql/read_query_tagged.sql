-- The events matching a query of one item with tags after a position, at
-- most $3, in no particular order (the caller sorts them), gap-free as
-- read_all.sql (only rows labelled below every running transaction): for
-- reads that fit in one page (a decision's state), read_query.sql without
-- its merge and without sorting whole rows on the server, which costs more
-- than the read. The caller asks for one row more than it wants: when that
-- many come back, the set is incomplete, and it reads again with
-- read_query.sql, in order.
--
-- $1, $2: the position to read after; $4 the item's types (empty: any type);
-- $5 its tags (every one required, at least one).
--
-- Through the GIN index on tags: the OFFSET 0 fence keeps the planner from
-- walking the primary key and filtering every row, so the cost follows the
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
   AND t.transaction_id < (SELECT pg_snapshot_xmin(pg_current_snapshot())) -- once, not per row
 LIMIT $3
