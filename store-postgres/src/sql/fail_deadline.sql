-- A claimed deadline failed: it fires again at $4, or, when $4 is NULL, it
-- becomes a dead letter. The error is kept either way.
UPDATE annals_deadlines
   SET error = $3, fire_at = coalesce($4, fire_at), dead_lettered = ($4 IS NULL)
 WHERE process = $1 AND id = $2
