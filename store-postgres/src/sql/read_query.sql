-- The events matching a query after a position, in log order, at most $3,
-- gap-free as read_all.sql (only rows labelled below every running
-- transaction).
--
-- $1, $2: the position to read after. Per query item: $4 its types (a jsonb
-- array of strings; [] = any type), $5 its tags (a jsonb array; every one
-- required). An event matches when it matches any item.
--
-- Each item is looked up on its own, through the index that suits its shape,
-- and the first $3 of each are merged (whole rows: a second lookup of each
-- by its key would cost as much as the first). A query of one tagged item is
-- read first by read_query_tagged.sql, in any order, and by this statement
-- only when it has more matches than the page holds.
--   * tagged: the GIN index on tags, the types and the position as filters.
--     The OFFSET 0 fence keeps the planner from walking the primary key in
--     log order and filtering every row (which a LIMIT makes look cheap), and
--     from intersecting with a bitmap of every position after $1, $2 (as
--     large as the log): the cost follows the tags' events, not the log;
--   * types only: annals_events_type_idx, one ordered range scan per type,
--     stopped by the LIMIT. The fence plans the scan as if it read every
--     event of the type (where the type index wins); without it, the LIMIT
--     makes walking the primary key in log order and filtering look cheaper,
--     and a rare type would be searched for through the whole log;
--   * neither (every event): the primary key, in order.
-- The branches of the other shapes stop at their one-time filter.
WITH item AS MATERIALIZED (
    SELECT ARRAY(SELECT jsonb_array_elements_text(i.types)) AS types,
           ARRAY(SELECT jsonb_array_elements_text(i.tags)) AS tags
      FROM unnest($4::jsonb[], $5::jsonb[]) AS i(types, tags)
),
bound AS MATERIALIZED (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin
),
found AS (
    SELECT f.*
      FROM item i
     CROSS JOIN bound b
     CROSS JOIN LATERAL (
        (SELECT t.*
           FROM (SELECT e.*
                   FROM annals_events e
                  WHERE cardinality(i.tags) > 0
                    AND e.tags @> i.tags
                    AND e.tags <> '{}'::text[] -- the index's predicate
                    AND (cardinality(i.types) = 0 OR e.event_type = ANY (i.types))
                 OFFSET 0) t
          WHERE (t.transaction_id, t.global_position) > ($1, $2)
            AND t.transaction_id < b.xmin
          ORDER BY t.transaction_id, t.global_position
          LIMIT $3)
        UNION ALL
        (SELECT o.*
           FROM unnest(i.types) AS ty(event_type)
          CROSS JOIN LATERAL (
              SELECT t.*
                FROM (SELECT e.*
                        FROM annals_events e
                       WHERE e.event_type = ty.event_type
                         AND (e.transaction_id, e.global_position) > ($1, $2)
                         AND e.transaction_id < b.xmin
                       ORDER BY e.transaction_id, e.global_position
                      OFFSET 0) t
               ORDER BY t.transaction_id, t.global_position
               LIMIT $3) o
          WHERE cardinality(i.tags) = 0)
        UNION ALL
        (SELECT e.*
           FROM annals_events e
          WHERE cardinality(i.tags) = 0 AND cardinality(i.types) = 0
            AND (e.transaction_id, e.global_position) > ($1, $2)
            AND e.transaction_id < b.xmin
          ORDER BY e.transaction_id, e.global_position
          LIMIT $3)
     ) f
)
-- An event matching several items is found once per item.
SELECT DISTINCT ON (f.transaction_id, f.global_position)
       f.transaction_id, f.global_position, f.event_id, f.stream_id, f.stream_version,
       f.event_type, f.schema_version, f.payload, f.metadata, f.recorded_at, f.tags
  FROM found f
 ORDER BY f.transaction_id, f.global_position
 LIMIT $3
