-- Gives up every claim of an owner ($2) on a projection ($1).
SELECT annals_release($1, $2)
