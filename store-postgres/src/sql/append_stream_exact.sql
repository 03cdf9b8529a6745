-- Hot path (see append.rs), the stream row for ExpectedVersion::Exact($2),
-- $2 > 0: move it from version $2, which locks it; no row when it is
-- elsewhere, or when the command id $3 is already recorded.
stream AS (
    UPDATE annals_streams AS s
       SET version = s.version + cardinality($5::uuid[]),
           transaction_id = greatest(pg_current_xact_id(), s.transaction_id, (SELECT floor FROM tag))
     WHERE s.stream_id = $1
       AND s.version = $2
       AND NOT EXISTS (SELECT 1 FROM annals_processed_commands c WHERE c.command_id = $3)
    RETURNING s.version, s.transaction_id
)
