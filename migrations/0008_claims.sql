-- annals: claims. A projection (or process manager) runs as partitions;
-- each partition has at most one owner at a time, recorded here, not in a
-- session's advisory lock: a claim survives a restart of the connection and
-- works through a connection pooler in transaction mode, and it ends when
-- its owner stops renewing it (a process that died, froze or lost the
-- database), at expires_at.
--
-- Fencing: every new owner of a partition raises its generation. What an
-- owner records on behalf of a partition (its checkpoint) is written only
-- while the partition's row still carries the owner's generation, checked under a share lock on that row in the same statement
-- (store-postgres/src/sql/save_claimed_checkpoint.sql): a claimer that takes
-- the partition waits for such a write to commit, and a write that comes
-- after the claim finds the new generation and writes nothing.
CREATE TABLE annals_claims (
    projection text        NOT NULL,
    partition  integer     NOT NULL CHECK (partition >= 0),
    -- NULL: free.
    owner      text,
    generation bigint      NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (projection, partition)
);

-- The owners that are alive (they renewed within their time to live), per
-- projection, including those that own nothing yet: what the partitions
-- are shared among. A draining owner (annals_drain) gives its partitions
-- back at its next heartbeat and takes none, for maintenance.
CREATE TABLE annals_claimants (
    projection text        NOT NULL,
    owner      text        NOT NULL,
    expires_at timestamptz NOT NULL,
    draining   boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (projection, owner)
);

-- One heartbeat of p_owner for the p_partitions partitions of p_projection
-- (partitions 0 .. p_partitions - 1): records that the owner is alive until
-- now() + p_ttl, renews its claims, gives back the ones above its share,
-- takes free or expired ones up to its share, and returns the claims it
-- holds afterwards. Its share is ceil(p_partitions / live owners), so that
-- no owner holds more than that once every owner has beaten once, and an
-- owner that dies leaves its partitions to the others after p_ttl.
--
-- Heartbeats of one projection run one at a time (they lock its claim
-- rows), so that two owners never count free partitions at once.
CREATE FUNCTION annals_claim(
    p_projection text,
    p_partitions integer,
    p_owner      text,
    p_ttl        interval
)
RETURNS TABLE (r_partition integer, r_generation bigint, r_expires_at timestamptz)
LANGUAGE plpgsql
AS $$
DECLARE
    v_live   integer;
    v_share  integer;
    v_held   integer;
BEGIN
    INSERT INTO annals_claimants AS c (projection, owner, expires_at)
    VALUES (p_projection, p_owner, now() + p_ttl)
    ON CONFLICT (projection, owner) DO UPDATE SET expires_at = excluded.expires_at;

    INSERT INTO annals_claims (projection, partition)
    SELECT p_projection, g FROM generate_series(0, p_partitions - 1) AS g
    ON CONFLICT (projection, partition) DO NOTHING;
    PERFORM 1 FROM annals_claims c
      WHERE c.projection = p_projection
      ORDER BY c.partition
        FOR UPDATE;

    SELECT count(*) INTO v_live
      FROM annals_claimants c
     WHERE c.projection = p_projection AND c.expires_at > now() AND NOT c.draining;
    v_share := ceil(p_partitions::numeric / greatest(v_live, 1))::integer;
    IF (SELECT c.draining FROM annals_claimants c
         WHERE c.projection = p_projection AND c.owner = p_owner) THEN
        v_share := 0;
    END IF;

    -- Renew: an expired claim nobody took is still this owner's (its
    -- generation is unchanged, so nothing it wrote can conflict).
    UPDATE annals_claims c
       SET expires_at = now() + p_ttl
     WHERE c.projection = p_projection AND c.owner = p_owner AND c.partition < p_partitions;

    -- Above the share: the highest partitions go back.
    UPDATE annals_claims c
       SET owner = NULL, expires_at = '-infinity'
     WHERE c.projection = p_projection
       AND c.partition IN (SELECT m.partition
                             FROM annals_claims m
                            WHERE m.projection = p_projection AND m.owner = p_owner
                              AND m.partition < p_partitions
                            ORDER BY m.partition
                           OFFSET v_share);

    SELECT count(*) INTO v_held
      FROM annals_claims c
     WHERE c.projection = p_projection AND c.owner = p_owner AND c.partition < p_partitions;
    IF v_held < v_share THEN
        UPDATE annals_claims c
           SET owner = p_owner, generation = c.generation + 1, expires_at = now() + p_ttl
         WHERE c.projection = p_projection
           AND c.partition IN (SELECT f.partition
                                 FROM annals_claims f
                                WHERE f.projection = p_projection AND f.partition < p_partitions
                                  AND (f.owner IS NULL OR f.expires_at <= now())
                                ORDER BY f.partition
                                LIMIT v_share - v_held);
    END IF;

    -- Owners long dead leave the table (their claims expired with them).
    DELETE FROM annals_claimants c
     WHERE c.projection = p_projection AND c.expires_at < now() - p_ttl;

    RETURN QUERY
        SELECT c.partition, c.generation, c.expires_at
          FROM annals_claims c
         WHERE c.projection = p_projection AND c.owner = p_owner AND c.partition < p_partitions
         ORDER BY c.partition;
END;
$$;

-- Marks p_owner draining (p_draining) or not: a draining owner gives its
-- partitions back at its next heartbeat and takes none until undrained,
-- and the others share them without it.
CREATE FUNCTION annals_drain(p_projection text, p_owner text, p_draining boolean)
RETURNS boolean
LANGUAGE sql
AS $$
    UPDATE annals_claimants
       SET draining = p_draining
     WHERE projection = p_projection AND owner = p_owner
    RETURNING true;
$$;

-- Gives up every claim p_owner holds on p_projection and leaves its
-- claimants: the others take its partitions at their next heartbeat.
CREATE FUNCTION annals_release(p_projection text, p_owner text)
RETURNS void
LANGUAGE sql
AS $$
    UPDATE annals_claims
       SET owner = NULL, expires_at = '-infinity'
     WHERE projection = p_projection AND owner = p_owner;
    DELETE FROM annals_claimants WHERE projection = p_projection AND owner = p_owner;
$$;
