//! What a store offers projections beyond events and checkpoints:
//! dead letters and a single-runner lease.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::envelope::RecordedEvent;
use crate::store::{EventStore, StoreError};

/// An event a projection set aside.
#[derive(Debug, Clone, PartialEq)]
pub struct ParkedEvent {
    /// The event, as read from the log.
    pub event: RecordedEvent,
    /// Why it failed; `None` when it only waits behind an earlier parked event of its stream.
    pub error: Option<String>,
    /// How many times it was tried.
    pub attempts: u32,
    /// An operator asked for it to be tried again.
    pub retry_requested: bool,
}

/// A store that can keep a projection's dead letters and lease.
#[async_trait]
pub trait ProjectionStore: EventStore {
    /// Parks events (idempotent by event id: parking again updates error and attempts).
    async fn park(&self, projection: &str, events: Vec<ParkedEvent>) -> Result<(), StoreError>;

    /// The projection's parked events, in log order.
    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, StoreError>;

    /// Removes events from the dead letters once they are applied.
    async fn unpark(&self, projection: &str, event_ids: &[Uuid]) -> Result<(), StoreError>;

    /// Marks every parked event of the projection for a retry; returns how many.
    async fn request_retry(&self, projection: &str) -> Result<u64, StoreError>;

    /// Tries to become the projection's one active runner. `None` when
    /// another holds the lease.
    async fn try_lease(&self, projection: &str) -> Result<Option<Box<dyn Lease>>, StoreError>;

    /// Stores a process manager's deadline (idempotent by id), so it fires
    /// even after a restart.
    async fn schedule_deadline(&self, deadline: Deadline) -> Result<(), StoreError>;

    /// The process's deadlines due at `now`, earliest first, at most `limit`.
    async fn due_deadlines(
        &self,
        process: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Deadline>, StoreError>;

    /// Removes a deadline once it has fired.
    async fn complete_deadline(&self, process: &str, id: Uuid) -> Result<(), StoreError>;

    /// Removes an instance's pending deadlines of this name: what they
    /// waited for has happened.
    async fn cancel_deadlines(
        &self,
        process: &str,
        instance: Uuid,
        name: &str,
    ) -> Result<(), StoreError>;
}

/// A moment at which a process manager instance wants to be woken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    /// Unique, derived from what scheduled it, so scheduling is idempotent.
    pub id: Uuid,
    /// The process manager's name.
    pub process: String,
    /// The process instance (its correlation id).
    pub instance: Uuid,
    /// What the deadline is for, e.g. `payment-timeout`.
    pub name: String,
    /// When it is due.
    pub due_at: DateTime<Utc>,
}

/// The right to run a projection, held until released or lost.
#[async_trait]
pub trait Lease: Send + Sync {
    /// Resolves once the lease is lost (its connection dropped); the holder
    /// must stop writing.
    async fn lost(&mut self);

    /// Gives the lease up.
    async fn release(self: Box<Self>);
}
