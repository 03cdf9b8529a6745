-- Claims a process's deadlines due to fire by $2, earliest first, at most $3:
-- counts an attempt and hides each from other claims until $4 (a firer that
-- dies leaves it to fire again then). SKIP LOCKED: concurrent firers take
-- different deadlines instead of waiting for each other.
UPDATE annals_deadlines AS d
SET attempts = d.attempts + 1, fire_at = $4
FROM (
    SELECT process, id FROM annals_deadlines
    WHERE process = $1 AND fire_at <= $2 AND NOT dead_lettered
    ORDER BY fire_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
) AS due
WHERE d.process = due.process AND d.id = due.id
RETURNING d.id, d.instance, d.name, d.due_at, d.attempts, d.error, d.dead_lettered
