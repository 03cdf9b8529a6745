-- Hot path (see append.rs), the stream row for ExpectedVersion::Any ($2 = -1)
-- and NoStream ($2 = 0): create it, or move it (Any only: for NoStream an
-- existing row yields no row, so nothing is inserted). No row either when the
-- command id $3 is already recorded. Labelled at least the tags' floor.
stream AS (
    INSERT INTO annals_streams AS s (stream_id, version, transaction_id)
    SELECT $1, cardinality($5::uuid[]), greatest(pg_current_xact_id(), (SELECT floor FROM tag))
     WHERE NOT EXISTS (SELECT 1 FROM annals_processed_commands c WHERE c.command_id = $3)
    ON CONFLICT (stream_id) DO UPDATE
       SET version = s.version + excluded.version,
           transaction_id = greatest(excluded.transaction_id, s.transaction_id)
     WHERE $2 < 0
    RETURNING s.version, s.transaction_id
)
