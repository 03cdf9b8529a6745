-- annals: the event log and the tables around it.
--
-- Every name is unqualified: the tables land in the first schema of the
-- connection's search_path (tests give each test its own schema).

-- The event log.
--
-- `transaction_id` is the log's ordering label: the id of the writing
-- transaction, or, when that transaction got its id before an earlier
-- writer of the same stream committed, that writer's label (see
-- `annals_streams.transaction_id`). Readers order the log by
-- (transaction_id, global_position) and only read rows whose label is older
-- than every running transaction (pg_snapshot_xmin), so no reader passes an
-- event that commits later.
CREATE TABLE annals_events (
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version > 0),
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    -- The global read: WHERE (transaction_id, global_position) > $after
    -- AND transaction_id < xmin ORDER BY transaction_id, global_position.
    CONSTRAINT annals_events_pkey PRIMARY KEY (transaction_id, global_position),
    -- Optimistic concurrency backstop and the stream read.
    CONSTRAINT annals_events_stream_version_key UNIQUE (stream_id, stream_version),
    -- Idempotent appends by event id.
    CONSTRAINT annals_events_event_id_key UNIQUE (event_id)
);

-- Filtered global reads (projections name the event types they handle).
CREATE INDEX annals_events_type_idx
    ON annals_events (event_type, transaction_id, global_position);

-- Each stream's current version: the row appends lock to check the expected
-- version. `transaction_id` is the label of the stream's last event; a later
-- append labels its events with at least this value, so the log order
-- (transaction_id, global_position) agrees with each stream's version order
-- even when transaction ids were assigned out of lock order.
CREATE TABLE annals_streams (
    stream_id      text   PRIMARY KEY,
    version        bigint NOT NULL CHECK (version > 0),
    transaction_id xid8   NOT NULL
);

-- The latest snapshot of each stream's aggregate state.
CREATE TABLE annals_snapshots (
    stream_id      text        PRIMARY KEY,
    stream_version bigint      NOT NULL CHECK (stream_version >= 0),
    schema_version integer     NOT NULL,
    state          jsonb       NOT NULL,
    saved_at       timestamptz NOT NULL DEFAULT now()
);

-- How far each projection (or named subscriber) has processed the log.
CREATE TABLE annals_checkpoints (
    name            text        PRIMARY KEY,
    transaction_id  xid8        NOT NULL,
    global_position bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Events a projection set aside (dead letters), per projection and event.
-- Parking again updates error and attempts; applying the event later
-- removes the row. The event itself stays in annals_events; the row copies
-- what an operator needs to see without a join.
CREATE TABLE annals_dead_letters (
    projection      text        NOT NULL,
    event_id        uuid        NOT NULL,
    transaction_id  xid8        NOT NULL,
    global_position bigint      NOT NULL,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL,
    event_type      text        NOT NULL,
    -- NULL when the event did not fail itself but waits behind an earlier
    -- parked event of its stream.
    error           text,
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- An operator asked for the event to be tried again.
    retry_requested boolean     NOT NULL DEFAULT false,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT annals_dead_letters_pkey PRIMARY KEY (projection, event_id)
);

-- Commands that already ran, with their first outcome, so that a retried
-- command returns that outcome and writes nothing.
CREATE TABLE annals_processed_commands (
    command_id      uuid        PRIMARY KEY,
    stream_id       text        NOT NULL,
    first_version   bigint      NOT NULL,
    stream_version  bigint      NOT NULL,
    transaction_id  xid8        NOT NULL,
    global_position bigint      NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
