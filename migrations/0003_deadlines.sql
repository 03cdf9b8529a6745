-- Deadlines of process managers (sagas): each fires once, even after a restart.
CREATE TABLE annals_deadlines (
    process     text        NOT NULL,
    id          uuid        NOT NULL,
    instance    uuid        NOT NULL,
    name        text        NOT NULL,
    due_at      timestamptz NOT NULL,
    CONSTRAINT annals_deadlines_pkey PRIMARY KEY (process, id)
);

-- The firing loop asks for each process's earliest due deadlines.
CREATE INDEX annals_deadlines_due_idx ON annals_deadlines (process, due_at);

-- Listing a projection's dead letters in log order.
CREATE INDEX annals_dead_letters_order_idx
    ON annals_dead_letters (projection, transaction_id, global_position);
