-- The versions of the annals schema applied here: a table of annals' own, so
-- that an application's sqlx migrations (in `_sqlx_migrations`) in the same
-- schema never meet annals' versions.
CREATE TABLE IF NOT EXISTS annals_migrations (
    version     bigint      PRIMARY KEY,
    description text        NOT NULL,
    checksum    bytea       NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
