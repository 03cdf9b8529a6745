-- Marks an owner ($2) of a projection ($1) draining, or not ($3): NULL when
-- it is not among the projection's claimants.
SELECT annals_drain($1, $2, $3)
