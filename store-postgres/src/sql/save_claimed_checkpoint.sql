-- Saves a partition's checkpoint ($5) only while the partition ($1, $2) is
-- still its owner's ($3) with the owner's generation ($4): the fence of
-- migrations/0008_claims.sql. The share lock on the claim row makes a
-- claimer wait until this save commits; a save that comes after a claim
-- locks the row's newest version, whose generation no longer matches, and
-- writes nothing (no row returned). The transaction id ($6) comes as text:
-- a parameter typed xid8 would make sqlx look the type up with a prepared
-- statement of its own, which a pooler in transaction mode cannot keep.
WITH claim AS (
    SELECT 1
      FROM annals_claims
     WHERE projection = $1 AND partition = $2 AND owner = $3 AND generation = $4
       FOR SHARE
)
INSERT INTO annals_checkpoints (name, transaction_id, global_position)
SELECT $5, $6::xid8, $7 FROM claim
ON CONFLICT (name) DO UPDATE
   SET transaction_id = excluded.transaction_id,
       global_position = excluded.global_position,
       updated_at = now()
RETURNING 1
