-- Hot path (see append.rs), the events' tags ($10): their rows locked before
-- the stream's, as every append locks them (annals_lock_tags, migrations/
-- 0007). `floor`, the highest label a conditional append left on them above
-- this transaction's id, raises the events' label (NULL: nothing to raise).
tag AS MATERIALIZED (
    SELECT annals_lock_tags($10::jsonb[]) AS floor
     -- Untagged events (most) call nothing.
     WHERE EXISTS (SELECT 1 FROM unnest($10::jsonb[]) AS e(tags) WHERE e.tags <> '[]'::jsonb)
)
