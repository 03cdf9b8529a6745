//! Claims on partitions ([`ProjectionStore::claim`](annals::projection::ProjectionStore::claim)
//! and the rest): rows in `annals_claims` and `annals_claimants`, kept by
//! the functions of `migrations/0008_claims.sql`, and the fenced checkpoint
//! save. Every call is one transaction of unprepared (unnamed) statements:
//! a pooler in transaction mode (PgBouncer) gives a client a server
//! connection for one transaction only, where neither a statement prepared
//! in an earlier transaction nor one prepared outside it would be found. So
//! claims, and what they fence, work through such a pooler.

use std::time::Duration;

use annals::projection::{Claim, PartitionOwner};
use annals::{Position, StoreError};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row};

use crate::error::{retry_lost, store_error};
use crate::handle::PgEventStore;
use crate::xid;

const CLAIM: &str = include_str!("../sql/claim.sql");
const RELEASE_CLAIMS: &str = include_str!("../sql/release_claims.sql");
const DRAIN: &str = include_str!("../sql/drain.sql");
const PARTITION_OWNERS: &str = include_str!("../sql/partition_owners.sql");
const SAVE_CLAIMED_CHECKPOINT: &str = include_str!("../sql/save_claimed_checkpoint.sql");

/// A statement with its parameters bound.
pub(super) type Bound = Query<'static, Postgres, PgArguments>;

/// Runs `sql` with the parameters `bind` adds, unprepared, in a transaction
/// of its own (see the module's docs); its rows.
pub(super) async fn run(
    store: &PgEventStore,
    sql: &'static str,
    bind: impl Fn(Bound) -> Bound,
) -> Result<Vec<PgRow>, StoreError> {
    retry_lost(|| async {
        let mut transaction = store.inner.pool.begin().await?;
        let rows = bind(sqlx::query(sql).persistent(false))
            .fetch_all(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(rows)
    })
    .await
    .map_err(store_error)
}

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
    let rows = run(store, CLAIM, |query| {
        query
            .bind(projection.to_owned())
            .bind(count)
            .bind(owner.to_owned())
            .bind(ttl.as_secs_f64())
    })
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Claim {
                projection: projection.to_owned(),
                partition: row.try_get::<i32, _>(0)?.unsigned_abs(),
                partitions,
                owner: owner.to_owned(),
                generation: row.try_get::<i64, _>(1)?.unsigned_abs(),
                expires_at: row.try_get(2)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(store_error)
}

/// Gives up every claim of `owner` on `projection`.
pub(crate) async fn release_claims(
    store: &PgEventStore,
    projection: &str,
    owner: &str,
) -> Result<(), StoreError> {
    run(store, RELEASE_CLAIMS, |query| {
        query.bind(projection.to_owned()).bind(owner.to_owned())
    })
    .await?;
    Ok(())
}

/// Marks an owner draining, or not; false when it is not a claimant.
pub(crate) async fn drain(
    store: &PgEventStore,
    projection: &str,
    owner: &str,
    draining: bool,
) -> Result<bool, StoreError> {
    let rows = run(store, DRAIN, |query| {
        query
            .bind(projection.to_owned())
            .bind(owner.to_owned())
            .bind(draining)
    })
    .await?;
    let found = rows
        .first()
        .map(|row| row.try_get::<Option<bool>, _>(0))
        .transpose()
        .map_err(store_error)?;
    Ok(found.flatten().unwrap_or(false))
}

/// The projection's partitions and their owners.
pub(crate) async fn partition_owners(
    store: &PgEventStore,
    projection: &str,
) -> Result<Vec<PartitionOwner>, StoreError> {
    let rows = run(store, PARTITION_OWNERS, |query| {
        query.bind(projection.to_owned())
    })
    .await?;
    rows.iter()
        .map(|row| {
            Ok(PartitionOwner {
                partition: row.try_get::<i32, _>(0)?.unsigned_abs(),
                owner: row.try_get(1)?,
                generation: row.try_get::<i64, _>(2)?.unsigned_abs(),
                expires_at: row.try_get::<Option<DateTime<Utc>>, _>(3)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(store_error)
}

/// A claim as a fenced write checks it (`save_claimed_checkpoint.sql`):
/// projection, partition, owner and generation, bound in that order.
pub(super) struct Fence {
    projection: String,
    partition: i32,
    owner: String,
    generation: i64,
}

impl Fence {
    /// The fence of `claim`; a claim out of the columns' range could not
    /// hold, and is refused as fenced.
    pub(super) fn of(claim: &Claim) -> Result<Self, StoreError> {
        Ok(Self {
            projection: claim.projection.clone(),
            partition: i32::try_from(claim.partition).map_err(|_| claim.fenced())?,
            owner: claim.owner.clone(),
            generation: i64::try_from(claim.generation).map_err(|_| claim.fenced())?,
        })
    }

    /// Binds the four parameters.
    pub(super) fn bind(&self, query: Bound) -> Bound {
        query
            .bind(self.projection.clone())
            .bind(self.partition)
            .bind(self.owner.clone())
            .bind(self.generation)
    }
}

/// Saves a claimed partition's checkpoint, fenced by its generation.
pub(crate) async fn save_claimed_checkpoint(
    store: &PgEventStore,
    claim: &Claim,
    position: Position,
) -> Result<(), StoreError> {
    let (transaction, sequence) = xid::store_params(position)?;
    let fence = Fence::of(claim)?;
    let name = claim.checkpoint_name();
    let saved = run(store, SAVE_CLAIMED_CHECKPOINT, |query| {
        fence
            .bind(query)
            .bind(name.clone())
            .bind(transaction.0.to_string())
            .bind(sequence)
    })
    .await?;
    if saved.is_empty() {
        return Err(claim.fenced());
    }
    Ok(())
}
