//! Dead letters ([`ProjectionStore::park`](annals::projection::ProjectionStore::park)
//! and the rest): events a projection set aside, one row per projection and
//! event in `annals_dead_letters`, returned in log order with the event.

use annals::StoreError;
use annals::projection::ParkedEvent;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{retry_lost, store_error};
use crate::handle::PgEventStore;
use crate::read::recorded_event;
use crate::xid;

const PARK: &str = include_str!("../sql/park.sql");
const PARKED: &str = include_str!("../sql/parked.sql");
const UNPARK: &str = "DELETE FROM annals_dead_letters WHERE projection = $1 AND event_id = ANY($2)";
const REQUEST_RETRY: &str = include_str!("../sql/request_retry.sql");

/// Parks events (idempotent by event id: parking again updates the error,
/// the attempts and the retry request).
pub(crate) async fn park(
    store: &PgEventStore,
    projection: &str,
    events: Vec<ParkedEvent>,
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
    for parked in events {
        let (transaction, sequence) = xid::store_params(parked.event.position)?;
        ids.push(parked.event.event_id);
        transactions.push(transaction);
        sequences.push(sequence);
        streams.push(parked.event.stream_id);
        versions.push(i64::try_from(parked.event.stream_version).unwrap_or(i64::MAX));
        types.push(parked.event.event_type);
        errors.push(parked.error);
        attempts.push(i32::try_from(parked.attempts).unwrap_or(i32::MAX));
        retries.push(parked.retry_requested);
    }
    retry_lost(|| {
        sqlx::query(PARK)
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

/// The projection's parked events, in log order.
pub(crate) async fn parked(
    store: &PgEventStore,
    projection: &str,
) -> Result<Vec<ParkedEvent>, StoreError> {
    let rows = retry_lost(|| {
        sqlx::query(PARKED)
            .bind(projection)
            .fetch_all(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    rows.iter()
        .map(|row| {
            Ok(ParkedEvent {
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
pub(crate) async fn unpark(
    store: &PgEventStore,
    projection: &str,
    event_ids: &[Uuid],
) -> Result<(), StoreError> {
    if event_ids.is_empty() {
        return Ok(());
    }
    retry_lost(|| {
        sqlx::query(UNPARK)
            .bind(projection)
            .bind(event_ids)
            .execute(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(())
}

/// Marks every parked event of the projection for a retry; returns how many.
pub(crate) async fn request_retry(
    store: &PgEventStore,
    projection: &str,
) -> Result<u64, StoreError> {
    let events = retry_lost(|| {
        sqlx::query(REQUEST_RETRY)
            .bind(projection)
            .execute(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(events.rows_affected())
}
