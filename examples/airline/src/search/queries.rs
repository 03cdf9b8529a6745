//! The flight queries every API answers (REST and gRPC): a search or a
//! flight by id, read from the read side once it has seen the caller's
//! `min_position`.

use std::sync::Arc;
use std::time::Duration;

use annals::projection::{WaitError, wait_for_checkpoint};
use annals::{EventStore, Position, StoreError};
use uuid::Uuid;

use super::{
    FlightPage, FlightReads, FlightSearch, FlightView, ReadError, SearchError, flight_events,
};

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A parameter breaks its rule.
    #[error(transparent)]
    Invalid(#[from] SearchError),
    /// The read side had not seen `min_position` when the wait ended.
    #[error(
        "the flight read side is at {checkpoint}, not yet at {wanted} after {:.1} s; retry",
        waited.as_secs_f64()
    )]
    Behind {
        /// How far the read side had come.
        checkpoint: Position,
        /// The position asked for.
        wanted: Position,
        /// How long the query waited.
        waited: Duration,
    },
    /// The event store, which keeps the read side's checkpoint, failed.
    #[error("the event store is unavailable")]
    Store(#[source] StoreError),
    /// The read side failed (or refused the cursor).
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// A page of results and the position the read side had certainly seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<T> {
    /// What was asked for.
    pub value: T,
    /// Pass it on as `min_position` to read at least this fresh.
    pub position: Position,
}

/// The flight queries over a read side and the store that keeps its
/// checkpoint. Cheap to clone.
#[derive(Clone)]
pub struct FlightQueries {
    store: Arc<dyn EventStore>,
    reads: Arc<dyn FlightReads>,
    read_wait: Duration,
}

impl FlightQueries {
    /// Queries of `reads`, whose checkpoint `store` keeps; a `min_position`
    /// is waited for at most `read_wait`.
    pub fn new(
        store: Arc<dyn EventStore>,
        reads: Arc<dyn FlightReads>,
        read_wait: Duration,
    ) -> Self {
        Self {
            store,
            reads,
            read_wait,
        }
    }

    /// The read side.
    pub fn reads(&self) -> &Arc<dyn FlightReads> {
        &self.reads
    }

    /// The longest a `min_position` is waited for.
    pub fn read_wait(&self) -> Duration {
        self.read_wait
    }

    /// Waits, at most `wait` (capped at [`FlightQueries::read_wait`]), until
    /// the read side has seen `min_position`; answers a position the read
    /// side has certainly seen. Without `min_position`, answers its
    /// checkpoint at once.
    pub async fn read_barrier(
        &self,
        min_position: Option<Position>,
        wait: Duration,
    ) -> Result<Position, QueryError> {
        let projection = self.reads.projection_name();
        let Some(wanted) = min_position else {
            return self
                .store
                .load_checkpoint(&projection)
                .await
                .map(Option::unwrap_or_default)
                .map_err(QueryError::Store);
        };
        let wait = wait.min(self.read_wait);
        match wait_for_checkpoint(
            self.store.as_ref(),
            &projection,
            &flight_events(),
            wanted,
            wait,
        )
        .await
        {
            Ok(checkpoint) => Ok(checkpoint.max(wanted)),
            Err(WaitError::Timeout {
                checkpoint, waited, ..
            }) => Err(QueryError::Behind {
                checkpoint,
                wanted,
                waited,
            }),
            Err(WaitError::Store(error)) => Err(QueryError::Store(error)),
        }
    }

    /// One page of scheduled flights matching `search`, once the read side
    /// has seen `min_position` (waited for at most `wait`, see
    /// [`FlightQueries::read_barrier`]).
    pub async fn search(
        &self,
        search: &FlightSearch,
        min_position: Option<Position>,
        wait: Duration,
    ) -> Result<Answer<FlightPage>, QueryError> {
        let position = self.read_barrier(min_position, wait).await?;
        let page = self.reads.search(search).await?;
        Ok(Answer {
            value: page,
            position,
        })
    }

    /// One flight, cancelled ones included (`None` when the read side does
    /// not know it), once the read side has seen `min_position`.
    pub async fn flight(
        &self,
        id: Uuid,
        min_position: Option<Position>,
        wait: Duration,
    ) -> Result<Answer<Option<FlightView>>, QueryError> {
        let position = self.read_barrier(min_position, wait).await?;
        let flight = self.reads.flight(id).await?;
        Ok(Answer {
            value: flight,
            position,
        })
    }
}

impl std::fmt::Debug for FlightQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightQueries")
            .field("projection", &self.reads.projection_name())
            .field("read_wait", &self.read_wait)
            .finish_non_exhaustive()
    }
}
