//! What a store offers projections beyond events and checkpoints: dead
//! letters, claims on partitions and the single-runner lease, and process
//! managers' deadlines.

use async_trait::async_trait;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::claim::{Claim, PartitionOwner};
use crate::envelope::RecordedEvent;
use crate::position::Position;
use crate::store::{EventStore, StoreError};

/// An event a projection set aside.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The event, as read from the log.
    pub event: RecordedEvent,
    /// Why it failed; `None` when it only waits behind an earlier dead letter of its stream.
    pub error: Option<String>,
    /// How many times it was tried.
    pub attempts: u32,
    /// An operator asked for it to be tried again.
    pub retry_requested: bool,
}

/// A store that can keep a projection's dead letters and lease.
#[async_trait]
pub trait ProjectionStore: EventStore {
    /// Dead-letters events (idempotent by event id: dead-lettering again updates error and attempts).
    async fn add_dead_letters(
        &self,
        projection: &str,
        events: Vec<DeadLetter>,
    ) -> Result<(), StoreError>;

    /// The projection's dead letters, in log order.
    async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, StoreError>;

    /// Removes events from the dead letters once they are applied.
    async fn remove_dead_letters(
        &self,
        projection: &str,
        event_ids: &[Uuid],
    ) -> Result<(), StoreError>;

    /// Marks every dead letter of the projection for a retry, and makes the
    /// dead-lettered deadlines of the process manager of this name due to
    /// fire again now; returns how many events and deadlines.
    async fn retry_dead_letters(&self, projection: &str) -> Result<u64, StoreError>;

    /// Tries to become the projection's one active runner. `None` when
    /// another holds the lease.
    async fn try_lease(&self, projection: &str) -> Result<Option<Box<dyn Lease>>, StoreError>;

    /// One heartbeat of `owner` for the `partitions` partitions of
    /// `projection`: records that the owner is alive for `ttl`, renews its
    /// claims, gives back those above its share (`ceil(partitions / live
    /// owners)`, the highest partitions first), takes free or expired ones
    /// up to its share (raising their generation), and returns the claims it
    /// holds afterwards, by partition. An owner calls it well within `ttl`
    /// (every third of it) while it runs; one that stops leaves its
    /// partitions to the others after `ttl`.
    async fn claim(
        &self,
        projection: &str,
        partitions: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<Claim>, StoreError>;

    /// Gives up every claim `owner` holds on `projection`, at once (the
    /// others take its partitions at their next heartbeat).
    async fn release_claims(&self, projection: &str, owner: &str) -> Result<(), StoreError>;

    /// Marks `owner` draining (or, with `false`, not any more), for
    /// maintenance: at its next heartbeat it gives its partitions back and
    /// takes none, and the other owners share them without it. False when
    /// `owner` is not among the projection's claimants.
    async fn drain(
        &self,
        projection: &str,
        owner: &str,
        draining: bool,
    ) -> Result<bool, StoreError>;

    /// Every partition of `projection` ever claimed, by partition: for
    /// operators.
    async fn partition_owners(&self, projection: &str) -> Result<Vec<PartitionOwner>, StoreError>;

    /// Dead-letters events for a claimed partition (under
    /// [`Claim::checkpoint_name`], as [`add_dead_letters`](Self::add_dead_letters)
    /// does) only while the partition is still the claim's; otherwise
    /// writes nothing and fails with [`StoreError::Fenced`].
    async fn add_claimed_dead_letters(
        &self,
        claim: &Claim,
        events: Vec<DeadLetter>,
    ) -> Result<(), StoreError>;

    /// Saves the checkpoint of a claimed partition
    /// ([`Claim::checkpoint_name`]) only while the partition is still the
    /// claim's (same owner and generation); otherwise writes nothing and
    /// fails with [`StoreError::Fenced`]. A new owner of the partition
    /// waits for a save under way to commit, so it reads the checkpoint
    /// after it.
    async fn save_claimed_checkpoint(
        &self,
        claim: &Claim,
        position: Position,
    ) -> Result<(), StoreError>;

    /// Stores a process manager's deadline (idempotent by id), so it fires
    /// even after a restart.
    async fn schedule_deadline(&self, deadline: Deadline) -> Result<(), StoreError>;

    /// The process's deadlines not yet completed, dead letters included,
    /// earliest due first, at most `limit`: for operators and tests.
    async fn deadlines(&self, process: &str, limit: usize) -> Result<Vec<Deadline>, StoreError>;

    /// When the process's next deadline is to fire (dead letters aside);
    /// `None` when none is pending.
    async fn next_deadline(&self, process: &str) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Claims the process's deadlines whose firing time is at or before
    /// `due_by` (earliest first, at most `limit`), so that one firer has
    /// them at a time: each claimed deadline counts an attempt and is not
    /// claimed again for `hold` (a firer that dies leaves it to fire again
    /// after that). A claimed deadline is no longer cancelled by
    /// [`cancel_deadlines`](Self::cancel_deadlines): what it started must
    /// finish. Dead letters are never claimed.
    async fn claim_deadlines(
        &self,
        process: &str,
        due_by: DateTime<Utc>,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Deadline>, StoreError>;

    /// Removes a deadline once what it triggered is recorded.
    async fn complete_deadline(&self, process: &str, id: Uuid) -> Result<(), StoreError>;

    /// Records that firing a claimed deadline failed: it fires again at
    /// `retry_at`, or, with `None`, it becomes a dead letter (kept with its
    /// error and never claimed again until an operator asks for a retry with
    /// [`retry_dead_letters`](Self::retry_dead_letters)).
    async fn fail_deadline(
        &self,
        process: &str,
        id: Uuid,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;

    /// Removes an instance's deadlines of this name that have not started
    /// firing: what they waited for has happened.
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
    /// How many times it was claimed to fire (0: not yet).
    pub attempts: u32,
    /// Why the last firing failed, if it did.
    pub error: Option<String>,
    /// Set aside after failing too often: it waits for an operator.
    pub dead_lettered: bool,
}

impl Deadline {
    /// A deadline not yet fired.
    pub fn new(
        process: impl Into<String>,
        id: Uuid,
        instance: Uuid,
        name: impl Into<String>,
        due_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            process: process.into(),
            instance,
            name: name.into(),
            due_at,
            attempts: 0,
            error: None,
            dead_lettered: false,
        }
    }
}

/// The right to run a projection, held until released or lost: the claim on
/// its one partition.
#[async_trait]
pub trait Lease: Send + Sync {
    /// The claim behind the lease: what the holder's checkpoint saves carry
    /// ([`ProjectionStore::save_claimed_checkpoint`]).
    fn claim(&self) -> &Claim;

    /// Resolves once the lease is lost (it could not be renewed, or another
    /// runner holds it now); the holder must stop writing.
    async fn lost(&mut self);

    /// Gives the lease up.
    async fn release(self: Box<Self>);
}

/// When a claim taken now for `hold` ends (saturating: a hold too long to
/// represent lasts forever).
pub fn hold_until(hold: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(hold)
        .ok()
        .and_then(|hold| Utc::now().checked_add_signed(hold))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
