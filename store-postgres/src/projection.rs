//! What projections and process managers keep beside the events: dead
//! letters, the single-runner lease, and deadlines.
//!
//! The lease is a session-level advisory lock held on a connection of its
//! own, outside the pool: it is released when the holder releases it, when
//! its process dies, or when the connection drops, and the holder learns of
//! a drop within one heartbeat.

use std::time::Duration;

use annals::StoreError;
use annals::projection::{Deadline, Lease, ParkedEvent, ProjectionStore, hold_until};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection, Row};
use uuid::Uuid;

use crate::error::{retry_lost, store_error};
use crate::handle::PgEventStore;
use crate::read::recorded_event;
use crate::xid;

const PARK: &str = include_str!("sql/park.sql");
const PARKED: &str = include_str!("sql/parked.sql");
const CLAIM_DEADLINES: &str = include_str!("sql/claim_deadlines.sql");

/// How often a lease holder checks its connection.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Takes the projection's advisory lock if it is free. The key is derived
/// from the schema and the projection name, so that stores in different
/// schemas of one database do not lock each other out.
const TRY_LEASE: &str = "SELECT k, pg_try_advisory_lock(k) \
     FROM (SELECT hashtextextended(coalesce(current_schema(), '') || '/' || $1, 0) AS k) AS key";

#[async_trait]
impl ProjectionStore for PgEventStore {
    async fn park(&self, projection: &str, events: Vec<ParkedEvent>) -> Result<(), StoreError> {
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
                .execute(&self.inner.pool)
        })
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, StoreError> {
        let rows = retry_lost(|| {
            sqlx::query(PARKED)
                .bind(projection)
                .fetch_all(&self.inner.pool)
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

    async fn unpark(&self, projection: &str, event_ids: &[Uuid]) -> Result<(), StoreError> {
        if event_ids.is_empty() {
            return Ok(());
        }
        retry_lost(|| {
            sqlx::query(
                "DELETE FROM annals_dead_letters WHERE projection = $1 AND event_id = ANY($2)",
            )
            .bind(projection)
            .bind(event_ids)
            .execute(&self.inner.pool)
        })
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn request_retry(&self, projection: &str) -> Result<u64, StoreError> {
        let events = retry_lost(|| {
            sqlx::query(
                "UPDATE annals_dead_letters SET retry_requested = true, updated_at = now() \
                 WHERE projection = $1",
            )
            .bind(projection)
            .execute(&self.inner.pool)
        })
        .await
        .map_err(store_error)?;
        let deadlines = retry_lost(|| {
            sqlx::query(
                "UPDATE annals_deadlines SET dead_lettered = false, fire_at = $2 \
                 WHERE process = $1 AND dead_lettered",
            )
            .bind(projection)
            .bind(Utc::now())
            .execute(&self.inner.pool)
        })
        .await
        .map_err(store_error)?;
        Ok(events.rows_affected() + deadlines.rows_affected())
    }

    async fn try_lease(&self, projection: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        let options = self.inner.pool.connect_options().as_ref().clone();
        let options = options.application_name(&format!("annals-lease:{projection}"));
        let mut connection = PgConnection::connect_with(&options)
            .await
            .map_err(store_error)?;
        let (key, taken): (i64, bool) = sqlx::query_as(TRY_LEASE)
            .bind(projection)
            .fetch_one(&mut connection)
            .await
            .map_err(store_error)?;
        if !taken {
            // Closing is best effort; the lock was not ours.
            let _ = connection.close().await;
            return Ok(None);
        }
        Ok(Some(Box::new(PgLease { connection, key })))
    }

    async fn schedule_deadline(&self, deadline: Deadline) -> Result<(), StoreError> {
        retry_lost(|| {
            sqlx::query(
                "INSERT INTO annals_deadlines (process, id, instance, name, due_at, fire_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (process, id) DO NOTHING",
            )
            .bind(&deadline.process)
            .bind(deadline.id)
            .bind(deadline.instance)
            .bind(&deadline.name)
            .bind(deadline.due_at)
            .execute(&self.inner.pool)
        })
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn deadlines(&self, process: &str, limit: usize) -> Result<Vec<Deadline>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = retry_lost(|| {
            sqlx::query(
                "SELECT id, instance, name, due_at, attempts, error, dead_lettered \
                 FROM annals_deadlines WHERE process = $1 ORDER BY due_at, id LIMIT $2",
            )
            .bind(process)
            .bind(limit)
            .fetch_all(&self.inner.pool)
        })
        .await
        .map_err(store_error)?;
        deadlines(process, &rows)
    }

    async fn next_deadline(&self, process: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        retry_lost(|| {
            sqlx::query_scalar(
                "SELECT min(fire_at) FROM annals_deadlines \
                 WHERE process = $1 AND NOT dead_lettered",
            )
            .bind(process)
            .fetch_one(&self.inner.pool)
        })
        .await
        .map_err(store_error)
    }

    async fn claim_deadlines(
        &self,
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
            .fetch_all(&self.inner.pool)
            .await
            .map_err(store_error)?;
        let mut claimed = deadlines(process, &rows)?;
        claimed.sort_by_key(|d| (d.due_at, d.id));
        Ok(claimed)
    }

    async fn fail_deadline(
        &self,
        process: &str,
        id: Uuid,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        retry_lost(|| {
            sqlx::query(
                "UPDATE annals_deadlines SET error = $3, \
                 fire_at = coalesce($4, fire_at), dead_lettered = ($4 IS NULL) \
                 WHERE process = $1 AND id = $2",
            )
            .bind(process)
            .bind(id)
            .bind(error)
            .bind(retry_at)
            .execute(&self.inner.pool)
        })
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn cancel_deadlines(
        &self,
        process: &str,
        instance: Uuid,
        name: &str,
    ) -> Result<(), StoreError> {
        retry_lost(|| {
            sqlx::query(
                "DELETE FROM annals_deadlines \
                 WHERE process = $1 AND instance = $2 AND name = $3 AND attempts = 0",
            )
            .bind(process)
            .bind(instance)
            .bind(name)
            .execute(&self.inner.pool)
        })
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn complete_deadline(&self, process: &str, id: Uuid) -> Result<(), StoreError> {
        retry_lost(|| {
            sqlx::query("DELETE FROM annals_deadlines WHERE process = $1 AND id = $2")
                .bind(process)
                .bind(id)
                .execute(&self.inner.pool)
        })
        .await
        .map_err(store_error)?;
        Ok(())
    }
}

/// Deadlines from rows of `id, instance, name, due_at, attempts, error, dead_lettered`.
fn deadlines(process: &str, rows: &[PgRow]) -> Result<Vec<Deadline>, StoreError> {
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

/// A projection's lease: an advisory lock on a dedicated connection.
struct PgLease {
    connection: PgConnection,
    key: i64,
}

#[async_trait]
impl Lease for PgLease {
    async fn lost(&mut self) {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let alive = tokio::time::timeout(HEARTBEAT * 4, self.connection.ping()).await;
            if !matches!(alive, Ok(Ok(()))) {
                tracing::warn!(key = self.key, "lease connection lost");
                return;
            }
        }
    }

    async fn release(mut self: Box<Self>) {
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut self.connection)
            .await;
        if let Err(error) = unlocked {
            tracing::warn!(%error, "lease not released cleanly; it ends with its connection");
        }
        let _ = self.connection.close().await;
    }
}
