-- Makes a process's dead-lettered deadlines due to fire again at $2.
UPDATE annals_deadlines SET dead_lettered = false, fire_at = $2
 WHERE process = $1 AND dead_lettered
