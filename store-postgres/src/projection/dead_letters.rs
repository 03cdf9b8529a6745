//! Dead letters ([`ProjectionStore::add_dead_letters`](annals::projection::ProjectionStore::add_dead_letters)
//! and the rest): events a projection set aside, one row per projection and
//! event in `annals_dead_letters`, returned in log order with the event.

use annals::StoreError;
use annals::projection::DeadLetter;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{retry_lost, store_error};
use crate::handle::PgEventStore;
use crate::read::recorded_event;
use crate::xid;

const ADD_DEAD_LETTERS: &str = include_str!("../sql/add_dead_letters.sql");
const DEAD_LETTERS: &str = include_str!("../sql/dead_letters.sql");
const REMOVE_DEAD_LETTERS: &str =
    "DELETE FROM annals_dead_letters WHERE projection = $1 AND event_id = ANY($2)";
const RETRY_DEAD_LETTERS: &str = include_str!("../sql/retry_dead_letters.sql");

/// Dead-letters events (idempotent by event id: dead-lettering again updates the error,
/// the attempts and the retry request).
pub(crate) async fn add_dead_letters(
    store: &PgEventStore,
    projection: &str,
    events: Vec<DeadLetter>,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut transactions = Vec::with_capacity(events.len());
    let mut sequences = Vec::with_capacity(events.len());
    let mut streams = Vec::with_capacity(events.len());
    let mut versions = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut errors = Vec::with_capacity(events.len());
    let mut attempts = Vec::with_capacity(events.len());
    let mut retries = Vec::with_capacity(events.len());
    for dead_letters in events {
        let (transaction, sequence) = xid::store_params(dead_letters.event.position)?;
        ids.push(dead_letters.event.event_id);
        transactions.push(transaction);
        sequences.push(sequence);
        streams.push(dead_letters.event.stream_id);
        versions.push(i64::try_from(dead_letters.event.stream_version).unwrap_or(i64::MAX));
        types.push(dead_letters.event.event_type);
        errors.push(dead_letters.error);
        attempts.push(i32::try_from(dead_letters.attempts).unwrap_or(i32::MAX));
        retries.push(dead_letters.retry_requested);
    }
    retry_lost(|| {
        sqlx::query(ADD_DEAD_LETTERS)
            .bind(projection)
            .bind(&ids)
            .bind(&transactions)
            .bind(&sequences)
            .bind(&streams)
            .bind(&versions)
            .bind(&types)
            .bind(&errors)
            .bind(&attempts)
            .bind(&retries)
            .execute(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(())
}

/// The projection's dead letters, in log order.
pub(crate) async fn dead_letters(
    store: &PgEventStore,
    projection: &str,
) -> Result<Vec<DeadLetter>, StoreError> {
    let rows = retry_lost(|| {
        sqlx::query(DEAD_LETTERS)
            .bind(projection)
            .fetch_all(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    rows.iter()
        .map(|row| {
            Ok(DeadLetter {
                event: recorded_event(row)?,
                error: row.try_get("error")?,
                attempts: u32::try_from(row.try_get::<i32, _>("attempts")?).unwrap_or(0),
                retry_requested: row.try_get("retry_requested")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(store_error)
}

/// Removes applied events from the dead letters.
pub(crate) async fn remove_dead_letters(
    store: &PgEventStore,
    projection: &str,
    event_ids: &[Uuid],
) -> Result<(), StoreError> {
    if event_ids.is_empty() {
        return Ok(());
    }
    retry_lost(|| {
        sqlx::query(REMOVE_DEAD_LETTERS)
            .bind(projection)
            .bind(event_ids)
            .execute(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(())
}

/// Marks every dead letter of the projection for a retry; returns how many.
pub(crate) async fn retry_dead_letters(
    store: &PgEventStore,
    projection: &str,
) -> Result<u64, StoreError> {
    let events = retry_lost(|| {
        sqlx::query(RETRY_DEAD_LETTERS)
            .bind(projection)
            .execute(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(events.rows_affected())
}
