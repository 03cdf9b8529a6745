-- Removes an instance's deadlines of one name that no firer has claimed yet.
DELETE FROM annals_deadlines
 WHERE process = $1 AND instance = $2 AND name = $3 AND attempts = 0
