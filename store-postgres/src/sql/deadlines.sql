-- A process's deadlines, dead letters included, earliest due first, at most $2.
SELECT id, instance, name, due_at, attempts, error, dead_lettered
  FROM annals_deadlines
 WHERE process = $1
 ORDER BY due_at, id
 LIMIT $2
