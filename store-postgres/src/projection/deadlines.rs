//! Process managers' deadlines ([`Deadline`], scheduled, claimed, failed,
//! cancelled and completed through [`ProjectionStore`](annals::projection::ProjectionStore)):
//! one row per process and deadline id in `annals_deadlines`. `fire_at` is
//! when a deadline fires next (its due time, then the end of a claim's hold
//! or the retry time); a dead letter waits for an operator.

use std::time::Duration;

use annals::StoreError;
use annals::projection::{Deadline, hold_until};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::{retry_lost, store_error};
use crate::handle::PgEventStore;

const SCHEDULE_DEADLINE: &str = include_str!("../sql/schedule_deadline.sql");
const DEADLINES: &str = include_str!("../sql/deadlines.sql");
const NEXT_DEADLINE: &str = include_str!("../sql/next_deadline.sql");
const CLAIM_DEADLINES: &str = include_str!("../sql/claim_deadlines.sql");
const FAIL_DEADLINE: &str = include_str!("../sql/fail_deadline.sql");
const CANCEL_DEADLINES: &str = include_str!("../sql/cancel_deadlines.sql");
const COMPLETE_DEADLINE: &str = "DELETE FROM annals_deadlines WHERE process = $1 AND id = $2";
const RETRY_DEAD_LETTERS: &str = include_str!("../sql/retry_dead_letter_deadlines.sql");

/// Stores a deadline (idempotent by id).
pub(crate) async fn schedule_deadline(
    store: &PgEventStore,
    deadline: Deadline,
) -> Result<(), StoreError> {
    retry_lost(|| {
        sqlx::query(SCHEDULE_DEADLINE)
            .bind(&deadline.process)
            .bind(deadline.id)
            .bind(deadline.instance)
            .bind(&deadline.name)
            .bind(deadline.due_at)
            .execute(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(())
}

/// The process's deadlines, dead letters included, earliest due first.
pub(crate) async fn deadlines(
    store: &PgEventStore,
    process: &str,
    limit: usize,
) -> Result<Vec<Deadline>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = retry_lost(|| {
        sqlx::query(DEADLINES)
            .bind(process)
            .bind(limit)
            .fetch_all(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    from_rows(process, &rows)
}

/// When the process's next deadline fires (dead letters aside).
pub(crate) async fn next_deadline(
    store: &PgEventStore,
    process: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    retry_lost(|| {
        sqlx::query_scalar(NEXT_DEADLINE)
            .bind(process)
            .fetch_one(&store.inner.pool)
    })
    .await
    .map_err(store_error)
}

/// Claims the process's deadlines due by `due_by` for `hold`, earliest first.
pub(crate) async fn claim_deadlines(
    store: &PgEventStore,
    process: &str,
    due_by: DateTime<Utc>,
    limit: usize,
    hold: Duration,
) -> Result<Vec<Deadline>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let until = hold_until(hold);
    // Not retried on a lost connection: the claim may have committed,
    // and claiming again would count an attempt twice. The claims come
    // back after `hold`.
    let rows = sqlx::query(CLAIM_DEADLINES)
        .bind(process)
        .bind(due_by)
        .bind(limit)
        .bind(until)
        .fetch_all(&store.inner.pool)
        .await
        .map_err(store_error)?;
    let mut claimed = from_rows(process, &rows)?;
    claimed.sort_by_key(|d| (d.due_at, d.id));
    Ok(claimed)
}

/// Records a failed firing: again at `retry_at`, or a dead letter.
pub(crate) async fn fail_deadline(
    store: &PgEventStore,
    process: &str,
    id: Uuid,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    retry_lost(|| {
        sqlx::query(FAIL_DEADLINE)
            .bind(process)
            .bind(id)
            .bind(error)
            .bind(retry_at)
            .execute(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(())
}

/// Removes an instance's deadlines of this name that no firer has claimed.
pub(crate) async fn cancel_deadlines(
    store: &PgEventStore,
    process: &str,
    instance: Uuid,
    name: &str,
) -> Result<(), StoreError> {
    retry_lost(|| {
        sqlx::query(CANCEL_DEADLINES)
            .bind(process)
            .bind(instance)
            .bind(name)
            .execute(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(())
}

/// Removes a deadline once what it triggered is recorded.
pub(crate) async fn complete_deadline(
    store: &PgEventStore,
    process: &str,
    id: Uuid,
) -> Result<(), StoreError> {
    retry_lost(|| {
        sqlx::query(COMPLETE_DEADLINE)
            .bind(process)
            .bind(id)
            .execute(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(())
}

/// Makes the process's dead-lettered deadlines due to fire again now;
/// returns how many.
pub(crate) async fn retry_dead_letters(
    store: &PgEventStore,
    process: &str,
) -> Result<u64, StoreError> {
    let deadlines = retry_lost(|| {
        sqlx::query(RETRY_DEAD_LETTERS)
            .bind(process)
            .bind(Utc::now())
            .execute(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(deadlines.rows_affected())
}

/// Deadlines from rows of `id, instance, name, due_at, attempts, error, dead_lettered`.
fn from_rows(process: &str, rows: &[PgRow]) -> Result<Vec<Deadline>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok(Deadline {
                id: row.try_get("id")?,
                process: process.to_owned(),
                instance: row.try_get("instance")?,
                name: row.try_get("name")?,
                due_at: row.try_get("due_at")?,
                attempts: u32::try_from(row.try_get::<i32, _>("attempts")?).unwrap_or(0),
                error: row.try_get("error")?,
                dead_lettered: row.try_get("dead_lettered")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(store_error)
}
