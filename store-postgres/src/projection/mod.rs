//! What projections and process managers keep beside the events
//! ([`ProjectionStore`], core's `projection` module): each method calls the
//! function of the same name in
//!
//! * [`dead_letters`]: dead letters (`annals_dead_letters`);
//! * [`claim`]: claims on partitions and the fenced checkpoint save
//!   (`annals_claims`);
//! * [`lease`]: the single-runner lease (the claim on a projection's one
//!   partition);
//! * [`deadlines`]: process managers' deadlines (`annals_deadlines`).
//!
//! [`retry_dead_letters`](ProjectionStore::retry_dead_letters) asks both the dead
//! letters and the deadlines of the name.

mod claim;
mod dead_letters;
mod deadlines;
mod lease;

use std::time::Duration;

use annals::projection::{Claim, DeadLetter, Deadline, Lease, PartitionOwner, ProjectionStore};
use annals::{Position, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::handle::PgEventStore;

#[async_trait]
impl ProjectionStore for PgEventStore {
    async fn add_dead_letters(
        &self,
        projection: &str,
        events: Vec<DeadLetter>,
    ) -> Result<(), StoreError> {
        dead_letters::add_dead_letters(self, projection, events).await
    }

    async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, StoreError> {
        dead_letters::dead_letters(self, projection).await
    }

    async fn remove_dead_letters(
        &self,
        projection: &str,
        event_ids: &[Uuid],
    ) -> Result<(), StoreError> {
        dead_letters::remove_dead_letters(self, projection, event_ids).await
    }

    async fn retry_dead_letters(&self, projection: &str) -> Result<u64, StoreError> {
        let events = dead_letters::retry_dead_letters(self, projection).await?;
        let deadlines = deadlines::retry_dead_letters(self, projection).await?;
        Ok(events + deadlines)
    }

    async fn try_lease(&self, projection: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        lease::try_lease(self, projection).await
    }

    async fn claim(
        &self,
        projection: &str,
        partitions: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        claim::claim(self, projection, partitions, owner, ttl).await
    }

    async fn release_claims(&self, projection: &str, owner: &str) -> Result<(), StoreError> {
        claim::release_claims(self, projection, owner).await
    }

    async fn drain(
        &self,
        projection: &str,
        owner: &str,
        draining: bool,
    ) -> Result<bool, StoreError> {
        claim::drain(self, projection, owner, draining).await
    }

    async fn partition_owners(&self, projection: &str) -> Result<Vec<PartitionOwner>, StoreError> {
        claim::partition_owners(self, projection).await
    }

    async fn add_claimed_dead_letters(
        &self,
        claim: &Claim,
        events: Vec<DeadLetter>,
    ) -> Result<(), StoreError> {
        dead_letters::add_claimed_dead_letters(self, claim, events).await
    }

    async fn save_claimed_checkpoint(
        &self,
        claim: &Claim,
        position: Position,
    ) -> Result<(), StoreError> {
        claim::save_claimed_checkpoint(self, claim, position).await
    }

    async fn schedule_deadline(&self, deadline: Deadline) -> Result<(), StoreError> {
        deadlines::schedule_deadline(self, deadline).await
    }

    async fn deadlines(&self, process: &str, limit: usize) -> Result<Vec<Deadline>, StoreError> {
        deadlines::deadlines(self, process, limit).await
    }

    async fn next_deadline(&self, process: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        deadlines::next_deadline(self, process).await
    }

    async fn claim_deadlines(
        &self,
        process: &str,
        due_by: DateTime<Utc>,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Deadline>, StoreError> {
        deadlines::claim_deadlines(self, process, due_by, limit, hold).await
    }

    async fn fail_deadline(
        &self,
        process: &str,
        id: Uuid,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        deadlines::fail_deadline(self, process, id, error, retry_at).await
    }

    async fn cancel_deadlines(
        &self,
        process: &str,
        instance: Uuid,
        name: &str,
    ) -> Result<(), StoreError> {
        deadlines::cancel_deadlines(self, process, instance, name).await
    }

    async fn complete_deadline(&self, process: &str, id: Uuid) -> Result<(), StoreError> {
        deadlines::complete_deadline(self, process, id).await
    }
}
