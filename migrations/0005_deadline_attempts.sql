-- Deadlines are claimed before they fire, retried when what they trigger
-- fails, and kept as dead letters when they keep failing.
--
-- fire_at is when the deadline is next to be claimed: its due time at first,
-- later while a firer holds it or after a failure. attempts counts claims: a
-- deadline that was ever claimed has started firing and is no longer
-- cancelled (what it began must finish).
ALTER TABLE annals_deadlines
    ADD COLUMN fire_at       timestamptz,
    ADD COLUMN attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN error         text,
    ADD COLUMN dead_lettered boolean NOT NULL DEFAULT false;

UPDATE annals_deadlines SET fire_at = due_at;

ALTER TABLE annals_deadlines ALTER COLUMN fire_at SET NOT NULL;

DROP INDEX annals_deadlines_due_idx;

-- The firing loop claims each process's earliest live deadlines.
CREATE INDEX annals_deadlines_fire_idx ON annals_deadlines (process, fire_at)
    WHERE NOT dead_lettered;
