//! Projections: read models kept current from the global log.
//!
//! A [`Projection`] names itself, says which event types it handles, and
//! applies batches of events idempotently. The [`ProjectionRunner`] reads
//! after the projection's checkpoint (catch-up and live are one loop), applies,
//! and saves the checkpoint only once the batch is applied. Delivery is at
//! least once; because handlers are idempotent, the effect is exactly once.
//!
//! Failures: a transient error retries the batch with exponential backoff and
//! jitter, the checkpoint held; an event that keeps failing goes to the dead
//! letters ([`ProjectionStore::add_dead_letters`]) together with every later event
//! of its key (its stream, by default: [`Projection::key`]), so no read model
//! sees a stream's events out of order, while other keys go on. An operator asks for a retry
//! ([`ProjectionStore::retry_dead_letters`]) once the cause is fixed, and the runner
//! applies the dead letters in order. With [`FailurePolicy::Stop`] the
//! projection stops at the poison event instead.

mod claim;
mod partitioned;
mod runner;
mod store;
mod wait;

use async_trait::async_trait;

use crate::envelope::RecordedEvent;
use crate::error::BoxError;
use crate::store::EventFilter;

pub use claim::{Claim, PartitionOwner, checkpoint_name, owner_id, partition_of};
pub use partitioned::{DEFAULT_CLAIM_TTL, PartitionedRunner};
pub use runner::{
    Backoff, FailurePolicy, ProjectionRunner, RunnerError, RunnerOptions, RunnerProgress,
    RunnerState,
};
pub use store::{DeadLetter, Deadline, Lease, ProjectionStore, hold_until};
pub use wait::{WaitError, wait_for_checkpoint};

/// A read model fed by the global log.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: the key of its checkpoint, dead letters and lease.
    fn name(&self) -> String;

    /// The events it handles; the filter goes into the store's query.
    fn filter(&self) -> EventFilter;

    /// Applies a batch, in log order.
    ///
    /// Must be idempotent: applying a batch twice leaves the read model as
    /// applying it once. An event that cannot be applied is reported in the
    /// outcome, and the projection must then not apply the later events of
    /// the same stream in this batch (the runner dead-letters them behind it).
    async fn apply(&self, batch: &[RecordedEvent]) -> Result<BatchOutcome, ProjectionError>;

    /// The key that orders this projection's events: a dead-lettered event
    /// holds back the later events of its key, and no others; and the key
    /// that places an event in a partition ([`partition_of`]). The stream
    /// id by default (one read-model document per stream); a process
    /// manager orders by instance.
    fn key(&self, event: &RecordedEvent) -> String {
        event.stream_id.clone()
    }

    /// How many partitions it runs as (1, the default: one runner at a
    /// time, under a lease). Part of its definition: its checkpoints and
    /// dead letters are per partition ([`checkpoint_name`]), so a change
    /// starts them afresh, a rebuild. A [`PartitionedRunner`] runs the
    /// partitions it claims.
    fn partitions(&self) -> u32 {
        1
    }
}

/// What became of a batch.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Events that could not be applied, by index into the batch, with why.
    pub failed: Vec<FailedEvent>,
}

impl BatchOutcome {
    /// Every event was applied.
    pub fn applied() -> Self {
        Self::default()
    }
}

/// One event the projection could not apply.
#[derive(Debug)]
pub struct FailedEvent {
    /// Index into the batch.
    pub index: usize,
    /// What went wrong, with its causes: the dead letter records
    /// [`report`](crate::error::report) of it.
    pub error: BoxError,
}

/// Why a whole batch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The read model is unreachable or overloaded: retry later, with backoff.
    #[error("transient projection failure: {0}")]
    Transient(#[source] BoxError),
    /// Retrying cannot help (a bug, a broken index): stop the projection.
    #[error("projection failure: {0}")]
    Fatal(#[source] BoxError),
}
