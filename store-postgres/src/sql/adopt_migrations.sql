-- Versions 0.1 of annals recorded in sqlx's `_sqlx_migrations`: carried over
-- once (when that table exists and annals_migrations is empty), for the rows
-- whose version and checksum are annals' own ($1, $2: the embedded ones).
INSERT INTO annals_migrations (version, description, checksum, applied_at)
SELECT s.version, s.description, s.checksum, s.installed_on
FROM _sqlx_migrations AS s
JOIN unnest($1::bigint[], $2::bytea[]) AS ours (version, checksum)
    ON ours.version = s.version AND ours.checksum = s.checksum
WHERE s.success AND NOT EXISTS (SELECT 1 FROM annals_migrations)
ON CONFLICT (version) DO NOTHING
