-- Stores a deadline, due and to fire at $5; idempotent by (process, id).
INSERT INTO annals_deadlines (process, id, instance, name, due_at, fire_at)
VALUES ($1, $2, $3, $4, $5, $5)
ON CONFLICT (process, id) DO NOTHING
