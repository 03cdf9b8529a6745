//! Claims on partitions ([`ProjectionStore::claim`](annals::projection::ProjectionStore::claim)
//! and the rest): rows in `annals_claims` and `annals_claimants`, kept by
//! the functions of `migrations/0008_claims.sql`, and the fenced checkpoint
//! save. Every call is one statement in autocommit, so claims work through
//! a connection pooler in transaction mode.

use std::time::Duration;

use annals::projection::{Claim, PartitionOwner};
use annals::{Position, StoreError};
use chrono::{DateTime, Utc};

use crate::error::{retry_lost, store_error};
use crate::handle::PgEventStore;
use crate::xid;

const CLAIM: &str = include_str!("../sql/claim.sql");
const RELEASE_CLAIMS: &str = include_str!("../sql/release_claims.sql");
const PARTITION_OWNERS: &str = include_str!("../sql/partition_owners.sql");
const SAVE_CLAIMED_CHECKPOINT: &str = include_str!("../sql/save_claimed_checkpoint.sql");

/// One heartbeat of `owner`: the claims it holds afterwards.
pub(crate) async fn claim(
    store: &PgEventStore,
    projection: &str,
    partitions: u32,
    owner: &str,
    ttl: Duration,
) -> Result<Vec<Claim>, StoreError> {
    let count = i32::try_from(partitions)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            StoreError::InvalidInput(format!(
                "{partitions} partitions: a projection has 1 to {} partitions",
                i32::MAX
            ))
        })?;
    if projection.trim().is_empty() || owner.trim().is_empty() {
        return Err(StoreError::InvalidInput(
            "a claim needs a projection and an owner".into(),
        ));
    }
    let rows: Vec<(i32, i64, DateTime<Utc>)> = retry_lost(|| {
        sqlx::query_as(CLAIM)
            .bind(projection)
            .bind(count)
            .bind(owner)
            .bind(ttl.as_secs_f64())
            .fetch_all(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(rows
        .into_iter()
        .map(|(partition, generation, expires_at)| Claim {
            projection: projection.to_owned(),
            partition: partition.unsigned_abs(),
            partitions,
            owner: owner.to_owned(),
            generation: generation.unsigned_abs(),
            expires_at,
        })
        .collect())
}

/// Gives up every claim of `owner` on `projection`.
pub(crate) async fn release_claims(
    store: &PgEventStore,
    projection: &str,
    owner: &str,
) -> Result<(), StoreError> {
    retry_lost(|| {
        sqlx::query(RELEASE_CLAIMS)
            .bind(projection)
            .bind(owner)
            .execute(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(())
}

/// A row of `partition_owners.sql`: partition, owner, generation, expiry.
type OwnerRow = (i32, Option<String>, i64, Option<DateTime<Utc>>);

/// The projection's partitions and their owners.
pub(crate) async fn partition_owners(
    store: &PgEventStore,
    projection: &str,
) -> Result<Vec<PartitionOwner>, StoreError> {
    let rows: Vec<OwnerRow> = retry_lost(|| {
        sqlx::query_as(PARTITION_OWNERS)
            .bind(projection)
            .fetch_all(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(rows
        .into_iter()
        .map(
            |(partition, owner, generation, expires_at)| PartitionOwner {
                partition: partition.unsigned_abs(),
                expires_at,
                owner,
                generation: generation.unsigned_abs(),
            },
        )
        .collect())
}

/// Saves a claimed partition's checkpoint, fenced by its generation.
pub(crate) async fn save_claimed_checkpoint(
    store: &PgEventStore,
    claim: &Claim,
    position: Position,
) -> Result<(), StoreError> {
    let (transaction, sequence) = xid::store_params(position)?;
    let fenced = || StoreError::Fenced {
        projection: claim.projection.clone(),
        partition: claim.partition,
        generation: claim.generation,
    };
    let partition = i32::try_from(claim.partition).map_err(|_| fenced())?;
    let generation = i64::try_from(claim.generation).map_err(|_| fenced())?;
    let name = claim.checkpoint_name();
    let saved: Option<i32> = retry_lost(|| {
        sqlx::query_scalar(SAVE_CLAIMED_CHECKPOINT)
            .bind(&claim.projection)
            .bind(partition)
            .bind(&claim.owner)
            .bind(generation)
            .bind(&name)
            .bind(transaction)
            .bind(sequence)
            .fetch_optional(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    saved.map(|_| ()).ok_or_else(fenced)
}
