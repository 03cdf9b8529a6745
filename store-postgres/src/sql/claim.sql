-- One heartbeat of an owner ($3) for the $2 partitions of a projection ($1),
-- alive for $4 seconds: annals_claim (migrations/0008_claims.sql) renews,
-- gives back and takes claims, and answers the ones the owner holds.
SELECT r_partition, r_generation, r_expires_at
  FROM annals_claim($1, $2, $3, make_interval(secs => $4))
