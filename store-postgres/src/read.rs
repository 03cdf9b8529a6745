//! Reads: streams, the gap-free global log, the head and the log's lag.

use std::sync::Arc;
use std::time::Duration;

use annals::{
    Appended, EventFilter, ExpectedVersion, Metadata, Payload, Position, RecordedEvent, StoreError,
};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

use crate::append::statement::outcome;
use crate::connections::Connections;
use crate::error::{retry_lost, store_error};
use crate::store::PgEventStore;
use crate::xid::{self, Xid8};

const READ_ALL: &str = include_str!("sql/read_all.sql");
const READ_ALL_FILTERED: &str = include_str!("sql/read_all_filtered.sql");
const READ_STREAM: &str = include_str!("sql/read_stream.sql");
const HEAD: &str = include_str!("sql/head.sql");
const LOG_LAG: &str = include_str!("sql/log_lag.sql");
const COMMAND_OUTCOME: &str = include_str!("sql/command_outcome.sql");
const STREAM_VERSION: &str = "SELECT version FROM annals_streams WHERE stream_id = $1";

/// What keeps readers of the global log from the newest events.
///
/// Readers only pass events whose transaction is older than every
/// transaction still running on the server (see the [crate
/// documentation](crate)). A transaction that stays open (in any database of
/// the server, once it has written anything) holds every reader back: events
/// committed after it started are stored but not yet readable. This is the
/// price of never skipping an event; watch it, and keep transactions short.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLag {
    /// Transactions from this id on are still running: readers stop before
    /// the first event labelled with it or later.
    pub horizon: u64,
    /// Committed events readers cannot see yet because an older transaction
    /// is still running.
    pub held_back_events: u64,
    /// When the oldest of those events was recorded.
    pub held_back_since: Option<DateTime<Utc>>,
    /// The oldest running transaction that has written something, if any
    /// (possibly in another database of the same server).
    pub oldest_transaction: Option<RunningTransaction>,
}

impl LogLag {
    /// How long the oldest held-back event has waited (zero when none).
    pub fn held_back_for(&self, now: DateTime<Utc>) -> Duration {
        self.held_back_since
            .and_then(|since| (now - since).to_std().ok())
            .unwrap_or_default()
    }
}

/// A running transaction, as `pg_stat_activity` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningTransaction {
    /// The server process id (for `pg_terminate_backend`).
    pub pid: i32,
    /// The client's `application_name`.
    pub application_name: Option<String>,
    /// The database it runs in.
    pub database: Option<String>,
    /// `active`, `idle in transaction`, ...
    pub state: Option<String>,
    /// How long the transaction has been open.
    pub age: Duration,
}

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
        recorded_at: row.try_get(9)?,
    })
}

/// Runs a query of events and decodes the rows as they arrive, so that the
/// client decodes while the server still produces (one page is one query).
async fn fetch_events<'q>(
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
const PREALLOCATE: usize = 1024;

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl PgEventStore {
    pub(crate) async fn read_stream_events(
        &self,
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
            fetch_events(query, &self.inner.conns, capacity)
        })
        .await
        .map_err(store_error)
    }

    pub(crate) async fn read_log(
        &self,
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
                    fetch_events(query, &self.inner.conns, capacity)
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
                    fetch_events(query, &self.inner.conns, capacity)
                })
                .await
            }
        }
        .map_err(store_error)
    }

    pub(crate) async fn readable_head(&self) -> Result<Position, StoreError> {
        let row: Option<(Xid8, i64)> =
            retry_lost(|| sqlx::query_as(HEAD).fetch_optional(&self.inner.pool))
                .await
                .map_err(store_error)?;
        Ok(row.map_or(Position::START, |(tx, gp)| xid::position(tx, gp)))
    }

    /// What currently holds readers of the global log back: see [`LogLag`].
    ///
    /// Counting the held-back events reads the rows above the horizon, which
    /// are few unless a transaction has been open for long.
    pub async fn log_lag(&self) -> Result<LogLag, StoreError> {
        let row = retry_lost(|| sqlx::query(LOG_LAG).fetch_one(&self.inner.pool))
            .await
            .map_err(store_error)?;
        let lag = || -> Result<LogLag, sqlx::Error> {
            let horizon: Xid8 = row.try_get(0)?;
            let events: i64 = row.try_get(1)?;
            let pid: Option<i32> = row.try_get(3)?;
            let age: Option<f64> = row.try_get(7)?;
            let oldest_transaction = match pid {
                Some(pid) => Some(RunningTransaction {
                    pid,
                    application_name: row.try_get(4)?,
                    database: row.try_get(5)?,
                    state: row.try_get(6)?,
                    age: age
                        .filter(|s| s.is_finite() && *s > 0.0)
                        .map(Duration::from_secs_f64)
                        .unwrap_or_default(),
                }),
                None => None,
            };
            Ok(LogLag {
                horizon: horizon.0,
                held_back_events: u64::try_from(events).unwrap_or(0),
                held_back_since: row.try_get(2)?,
                oldest_transaction,
            })
        };
        lag().map_err(store_error)
    }
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
