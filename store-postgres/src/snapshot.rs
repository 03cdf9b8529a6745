//! Snapshots: one row per stream in `annals_snapshots`, replaced on save.

use annals::{Snapshot, StoreError};
use serde_json::Value;

use crate::error::{retry_lost, store_error};
use crate::handle::PgEventStore;
use crate::xid;

const SAVE_SNAPSHOT: &str = include_str!("sql/save_snapshot.sql");
const LOAD_SNAPSHOT: &str =
    "SELECT stream_version, schema_version, state FROM annals_snapshots WHERE stream_id = $1";

/// Stores the stream's snapshot, replacing the one before.
pub(crate) async fn save_snapshot(
    store: &PgEventStore,
    snapshot: Snapshot,
) -> Result<(), StoreError> {
    let version = i64::try_from(snapshot.stream_version).map_err(|_| {
        StoreError::InvalidInput(format!(
            "snapshot version {} is out of range",
            snapshot.stream_version
        ))
    })?;
    let schema_version = i32::try_from(snapshot.schema_version).map_err(|_| {
        StoreError::InvalidInput(format!(
            "snapshot schema version {} is out of range",
            snapshot.schema_version
        ))
    })?;
    if snapshot.stream_id.trim().is_empty() {
        return Err(StoreError::InvalidInput(
            "snapshot stream id is empty".into(),
        ));
    }
    retry_lost(|| {
        sqlx::query(SAVE_SNAPSHOT)
            .bind(&snapshot.stream_id)
            .bind(version)
            .bind(schema_version)
            .bind(&snapshot.state)
            .execute(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(())
}

/// The stream's snapshot, if one was saved.
pub(crate) async fn load_snapshot(
    store: &PgEventStore,
    stream: &str,
) -> Result<Option<Snapshot>, StoreError> {
    let row: Option<(i64, i32, Value)> = retry_lost(|| {
        sqlx::query_as(LOAD_SNAPSHOT)
            .bind(stream)
            .fetch_optional(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(row.map(|(version, schema_version, state)| Snapshot {
        stream_id: stream.to_owned(),
        stream_version: xid::version(version),
        schema_version: u32::try_from(schema_version).unwrap_or(0),
        state,
    }))
}
