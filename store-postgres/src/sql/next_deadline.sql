-- When a process's next deadline fires (dead letters aside); NULL when none.
SELECT min(fire_at) FROM annals_deadlines
 WHERE process = $1 AND NOT dead_lettered
