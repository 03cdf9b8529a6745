-- A projection's partitions and their owners, for operators (a free
-- partition's expiry, -infinity, is not read: sqlx cannot decode it).
SELECT partition, owner, generation,
       CASE WHEN owner IS NOT NULL THEN expires_at END AS expires_at
  FROM annals_claims
 WHERE projection = $1
 ORDER BY partition
