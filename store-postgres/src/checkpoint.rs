//! Checkpoints: how far each named projection or subscriber has processed
//! the global log, as the position pair in `annals_checkpoints`.

use annals::{Position, StoreError};

use crate::error::{retry_lost, store_error};
use crate::handle::PgEventStore;
use crate::xid::{self, Xid8};

const SAVE_CHECKPOINT: &str = include_str!("sql/save_checkpoint.sql");
const LOAD_CHECKPOINT: &str =
    "SELECT transaction_id, global_position FROM annals_checkpoints WHERE name = $1";

/// Stores how far `name` has processed the global log.
pub(crate) async fn save_checkpoint(
    store: &PgEventStore,
    name: &str,
    position: Position,
) -> Result<(), StoreError> {
    if name.trim().is_empty() {
        return Err(StoreError::InvalidInput("checkpoint name is empty".into()));
    }
    let (transaction, sequence) = xid::store_params(position)?;
    retry_lost(|| {
        sqlx::query(SAVE_CHECKPOINT)
            .bind(name)
            .bind(transaction)
            .bind(sequence)
            .execute(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(())
}

/// How far `name` has processed the global log, if it saved a checkpoint.
pub(crate) async fn load_checkpoint(
    store: &PgEventStore,
    name: &str,
) -> Result<Option<Position>, StoreError> {
    let row: Option<(Xid8, i64)> = retry_lost(|| {
        sqlx::query_as(LOAD_CHECKPOINT)
            .bind(name)
            .fetch_optional(&store.inner.pool)
    })
    .await
    .map_err(store_error)?;
    Ok(row.map(|(tx, gp)| xid::position(tx, gp)))
}
