INSERT INTO annals_checkpoints (name, transaction_id, global_position)
VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE
   SET transaction_id = excluded.transaction_id,
       global_position = excluded.global_position,
       updated_at = now()
