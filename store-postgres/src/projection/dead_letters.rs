//! Dead letters ([`ProjectionStore::add_dead_letters`](annals::projection::ProjectionStore::add_dead_letters)
//! and the rest): events a projection set aside, one row per projection and
//! event in `annals_dead_letters`, returned in log order with the event.

use annals::StoreError;
use annals::projection::{Claim, DeadLetter};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Postgres, Row};
use uuid::Uuid;

use super::claim::{Fence, run};
use crate::error::{retry_lost, store_error};
use crate::handle::PgEventStore;
use crate::read::recorded_event;
use crate::xid;

const ADD_DEAD_LETTERS: &str = include_str!("../sql/add_dead_letters.sql");
const DEAD_LETTERS: &str = include_str!("../sql/dead_letters.sql");
const REMOVE_DEAD_LETTERS: &str =
    "DELETE FROM annals_dead_letters WHERE projection = $1 AND event_id = ANY($2)";
const RETRY_DEAD_LETTERS: &str = include_str!("../sql/retry_dead_letters.sql");

/// The columns of dead letters, as `add_dead_letters.sql` takes them.
#[derive(Clone, Default)]
struct Rows {
    ids: Vec<Uuid>,
    transactions: Vec<String>,
    sequences: Vec<i64>,
    streams: Vec<String>,
    versions: Vec<i64>,
    types: Vec<String>,
    errors: Vec<Option<String>>,
    attempts: Vec<i32>,
    retries: Vec<bool>,
}

impl Rows {
    fn of(events: Vec<DeadLetter>) -> Result<Self, StoreError> {
        let mut rows = Rows::default();
        for dead_letter in events {
            let (transaction, sequence) = xid::store_params(dead_letter.event.position)?;
            rows.ids.push(dead_letter.event.event_id);
            rows.transactions.push(transaction.0.to_string());
            rows.sequences.push(sequence);
            rows.streams.push(dead_letter.event.stream_id);
            rows.versions
                .push(i64::try_from(dead_letter.event.stream_version).unwrap_or(i64::MAX));
            rows.types.push(dead_letter.event.event_type);
            rows.errors.push(dead_letter.error);
            rows.attempts
                .push(i32::try_from(dead_letter.attempts).unwrap_or(i32::MAX));
            rows.retries.push(dead_letter.retry_requested);
        }
        Ok(rows)
    }

    /// Binds them as `$2` to `$10`.
    fn bind<'q>(self, query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(self.ids)
            .bind(self.transactions)
            .bind(self.sequences)
            .bind(self.streams)
            .bind(self.versions)
            .bind(self.types)
            .bind(self.errors)
            .bind(self.attempts)
            .bind(self.retries)
    }
}

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
    let rows = Rows::of(events)?;
    retry_lost(|| {
        rows.clone()
            .bind(sqlx::query(ADD_DEAD_LETTERS).bind(projection))
            .bind(None::<String>)
            .bind(None::<i32>)
            .bind(None::<String>)
            .bind(None::<i64>)
            .execute(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(())
}

/// Dead-letters events of a claimed partition, only while the claim holds.
pub(crate) async fn add_claimed_dead_letters(
    store: &PgEventStore,
    claim: &Claim,
    events: Vec<DeadLetter>,
) -> Result<(), StoreError> {
    let fence = Fence::of(claim)?;
    let rows = Rows::of(events)?;
    let name = claim.checkpoint_name();
    let written = run(store, ADD_DEAD_LETTERS, |query| {
        fence.bind(rows.clone().bind(query.bind(name.clone())))
    })
    .await?;
    let allowed = written
        .first()
        .map(|row| row.try_get::<bool, _>(0))
        .transpose()
        .map_err(store_error)?;
    if allowed != Some(true) {
        return Err(claim.fenced());
    }
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
