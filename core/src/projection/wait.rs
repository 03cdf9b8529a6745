//! Read your own writes: wait until a projection has passed a position.

use std::time::Duration;

use tokio::time::Instant;

use crate::position::Position;
use crate::store::{EventFilter, EventStore, StoreError};

/// Why a wait ended without the projection catching up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The projection had not passed the position when time ran out.
    #[error("projection {projection:?} is at {checkpoint}, behind {wanted} after {waited:?}")]
    Timeout {
        /// The projection waited on.
        projection: String,
        /// Its checkpoint at the end.
        checkpoint: Position,
        /// The position asked for.
        wanted: Position,
        /// How long it waited.
        waited: Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Interval between checks: short, because callers are waiting on a request.
const POLL: Duration = Duration::from_millis(10);

/// Waits, at most `timeout`, until the projection named `projection` (which
/// reads `filter`) has seen everything up to `position`.
///
/// A projection has seen a position when its checkpoint passed it, or when
/// no event it handles lies between its checkpoint and that position (so a
/// token from an event it does not handle does not wait in vain). Works across
/// processes: it reads the checkpoint from the store.
pub async fn wait_for_checkpoint<S: EventStore + ?Sized>(
    store: &S,
    projection: &str,
    filter: &EventFilter,
    position: Position,
    timeout: Duration,
) -> Result<Position, WaitError> {
    let start = Instant::now();
    loop {
        let checkpoint = store.load_checkpoint(projection).await?.unwrap_or_default();
        if checkpoint >= position {
            return Ok(checkpoint);
        }
        // The head first: a read after it sees everything up to it. Asked
        // after the read, the head could pass `position` with an event the
        // read did not see yet (on PostgreSQL, one whose transaction ended
        // in between), and a stale read would count as fresh.
        let head = store.head().await?;
        let next = store.read_all(checkpoint, 1, filter).await?;
        let nothing_pending = match next.first() {
            Some(event) => event.position > position,
            None => head >= position,
        };
        if nothing_pending {
            return Ok(checkpoint);
        }
        if start.elapsed() >= timeout {
            return Err(WaitError::Timeout {
                projection: projection.to_owned(),
                checkpoint,
                wanted: position,
                waited: start.elapsed(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}
