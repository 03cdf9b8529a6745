-- Marks every dead letter of a projection for a retry.
UPDATE annals_dead_letters SET retry_requested = true, updated_at = now()
 WHERE projection = $1
