//! Reads ([`EventStore`](annals::EventStore)'s `read_stream`, `read_all`,
//! `head`, `stream_version` and `command_outcome`): streams, the gap-free
//! global log, and what the store recorded for streams and commands.

use std::sync::Arc;

use annals::{
    Appended, EventFilter, ExpectedVersion, Metadata, Payload, Position, RecordedEvent, StoreError,
};
use futures::TryStreamExt;
use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

use crate::append::statement::outcome;
use crate::connections::Connections;
use crate::error::{retry_lost, store_error};
use crate::handle::PgEventStore;
use crate::xid::{self, Xid8};

const READ_ALL: &str = include_str!("sql/read_all.sql");
const READ_ALL_FILTERED: &str = include_str!("sql/read_all_filtered.sql");
const READ_STREAM: &str = include_str!("sql/read_stream.sql");
const HEAD: &str = include_str!("sql/head.sql");
const COMMAND_OUTCOME: &str = include_str!("sql/command_outcome.sql");
const STREAM_VERSION: &str = "SELECT version FROM annals_streams WHERE stream_id = $1";

/// A row of `annals_events` (columns in the order of the read queries).
pub(crate) fn recorded_event(row: &PgRow) -> Result<RecordedEvent, sqlx::Error> {
    let transaction: Xid8 = row.try_get(0)?;
    let global_position: i64 = row.try_get(1)?;
    let stream_version: i64 = row.try_get(4)?;
    let schema_version: i32 = row.try_get(6)?;
    let Json(metadata): Json<Metadata> = row.try_get(8)?;
    // The payload's text, checked but not parsed into a tree.
    let Json(payload): Json<Box<RawValue>> = row.try_get(7)?;
    Ok(RecordedEvent {
        event_id: row.try_get(2)?,
        stream_id: row.try_get(3)?,
        stream_version: xid::version(stream_version),
        position: xid::position(transaction, global_position),
        event_type: row.try_get(5)?,
        schema_version: u32::try_from(schema_version).unwrap_or(0),
        payload: Payload::from(payload),
        metadata,
        tags: row.try_get(10)?,
        recorded_at: row.try_get(9)?,
    })
}

/// Runs a query of events and decodes the rows as they arrive, so that the
/// client decodes while the server still produces (one page is one query).
pub(crate) async fn fetch_events<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    conns: &Arc<Connections>,
    capacity: usize,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    let mut conn = conns.get().await?;
    let mut events = Vec::with_capacity(capacity);
    {
        let mut rows = query.fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            events.push(recorded_event(&row)?);
        }
    }
    conn.release();
    Ok(events)
}

/// Most events a read reserves room for up front.
pub(crate) const PREALLOCATE: usize = 1024;

/// A limit as a SQL `bigint` (`LIMIT` takes no more).
pub(crate) fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Events of one stream from `from_version` on, at most `limit`.
pub(crate) async fn read_stream(
    store: &PgEventStore,
    stream: &str,
    from_version: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let from = i64::try_from(from_version).unwrap_or(i64::MAX);
    let capacity = limit.min(PREALLOCATE);
    retry_lost(|| {
        let query = sqlx::query(READ_STREAM)
            .bind(stream)
            .bind(from)
            .bind(limit_param(limit));
        fetch_events(query, &store.inner.conns, capacity)
    })
    .await
    .map_err(store_error)
}

/// Events of the global log after `after`, at most `limit`, of the
/// filter's types: only events no running transaction can still precede.
pub(crate) async fn read_all(
    store: &PgEventStore,
    after: Position,
    limit: usize,
    filter: &EventFilter,
) -> Result<Vec<RecordedEvent>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let (transaction, sequence) = xid::after_params(after);
    let capacity = limit.min(PREALLOCATE);
    let limit = limit_param(limit);
    match filter.event_types() {
        None => {
            retry_lost(|| {
                let query = sqlx::query(READ_ALL)
                    .bind(transaction)
                    .bind(sequence)
                    .bind(limit);
                fetch_events(query, &store.inner.conns, capacity)
            })
            .await
        }
        Some([]) => return Ok(Vec::new()),
        Some(types) => {
            retry_lost(|| {
                let query = sqlx::query(READ_ALL_FILTERED)
                    .bind(transaction)
                    .bind(sequence)
                    .bind(limit)
                    .bind(types);
                fetch_events(query, &store.inner.conns, capacity)
            })
            .await
        }
    }
    .map_err(store_error)
}

/// The position of the last readable event of the global log.
pub(crate) async fn head(store: &PgEventStore) -> Result<Position, StoreError> {
    let row: Option<(Xid8, i64)> =
        retry_lost(|| sqlx::query_as(HEAD).fetch_optional(&store.inner.pool))
            .await
            .map_err(store_error)?;
    Ok(row.map_or(Position::START, |(tx, gp)| xid::position(tx, gp)))
}

/// The stream's current version (0 = no stream).
pub(crate) async fn stream_version(store: &PgEventStore, stream: &str) -> Result<u64, StoreError> {
    let version: Option<i64> = sqlx::query_scalar(STREAM_VERSION)
        .bind(stream)
        .fetch_optional(&store.inner.pool)
        .await
        .map_err(store_error)?;
    Ok(version.map_or(0, xid::version))
}

/// The outcome recorded for a command id (a row of `annals_append`'s shape).
pub(crate) async fn command_outcome(
    store: &PgEventStore,
    command_id: Uuid,
) -> Result<Option<Appended>, StoreError> {
    let row = sqlx::query(COMMAND_OUTCOME)
        .bind(command_id)
        .fetch_optional(&store.inner.pool)
        .await
        .map_err(store_error)?;
    row.map(|row| outcome(&row, "", ExpectedVersion::Any))
        .transpose()
}
