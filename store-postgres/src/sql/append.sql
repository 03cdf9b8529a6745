SELECT o_outcome, o_first_version, o_stream_version, o_transaction_id,
       o_global_position, o_event_id, o_event_stream
  FROM annals_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
