-- Conditional appends (see append/conditional.rs): annals_append_if
-- (migrations/0007_tag_locks.sql) checks and writes them; its comment says
-- what each parameter and outcome means. $19: whether the call waits for
-- older transactions (some condition item names no tag) instead of locking
-- the tags; $20: how long it may wait for a lock (lock_timeout).
SELECT r_k, r_kind, r_label, r_first_version, r_stream_version, r_transaction_id,
       r_global_position, r_event_id, r_event_stream, r_positions
  FROM annals_append_if($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                        $16, $17, $18, $19, $20)
