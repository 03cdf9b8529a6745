-- Hot path, only with a command id: record the command's outcome.
command AS (
    INSERT INTO annals_processed_commands
        (command_id, stream_id, first_version, stream_version, transaction_id, global_position)
    SELECT $3, $1, st.version - cardinality($5) + 1, st.version, st.transaction_id, l.global_position
      FROM stream st, last l
)
