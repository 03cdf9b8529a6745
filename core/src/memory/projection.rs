//! The in-memory store's dead letters, claims, leases and deadlines.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::MemoryStore;
use super::claims::Claims;
use crate::position::Position;
use crate::projection::{
    Claim, DeadLetter, Deadline, Lease, PartitionOwner, ProjectionStore, owner_id,
};
use crate::store::StoreError;

/// A deadline and when it is next to fire (its due time, or after a claim
/// or a failure, later).
#[derive(Debug, Clone)]
struct Pending {
    deadline: Deadline,
    fire_at: DateTime<Utc>,
}

/// What projections and process managers keep beside the events.
#[derive(Debug, Default)]
pub(super) struct Projections {
    dead_letters: HashMap<String, BTreeMap<Position, DeadLetter>>,
    deadlines: HashMap<String, HashMap<Uuid, Pending>>,
    claims: Arc<Mutex<Claims>>,
}

impl MemoryStore {
    fn claims<T>(&self, f: impl FnOnce(&mut Claims) -> T) -> T {
        let claims = self.projections(|p| Arc::clone(&p.claims));
        let mut guard = claims.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Runs `write` only while `claim` holds, under the claims' lock: no
    /// claimer comes in between.
    fn fenced<T>(&self, claim: &Claim, write: impl FnOnce() -> T) -> Result<T, StoreError> {
        self.claims(|c| {
            if c.holds(claim) {
                Ok(write())
            } else {
                Err(claim.fenced())
            }
        })
    }

    fn projections<T>(&self, f: impl FnOnce(&mut Projections) -> T) -> T {
        let mut guard = self
            .shared
            .projections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }
}

#[async_trait]
impl ProjectionStore for MemoryStore {
    async fn add_dead_letters(
        &self,
        projection: &str,
        events: Vec<DeadLetter>,
    ) -> Result<(), StoreError> {
        self.projections(|p| {
            let dead_letters = p.dead_letters.entry(projection.to_owned()).or_default();
            for event in events {
                dead_letters.insert(event.event.position, event);
            }
        });
        Ok(())
    }

    async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(self.projections(|p| {
            p.dead_letters
                .get(projection)
                .map(|dead_letters| dead_letters.values().cloned().collect())
                .unwrap_or_default()
        }))
    }

    async fn remove_dead_letters(
        &self,
        projection: &str,
        event_ids: &[Uuid],
    ) -> Result<(), StoreError> {
        self.projections(|p| {
            if let Some(dead_letters) = p.dead_letters.get_mut(projection) {
                dead_letters.retain(|_, e| !event_ids.contains(&e.event.event_id));
            }
        });
        Ok(())
    }

    async fn retry_dead_letters(&self, projection: &str) -> Result<u64, StoreError> {
        let now = Utc::now();
        Ok(self.projections(|p| {
            let events = p
                .dead_letters
                .get_mut(projection)
                .map_or(0, |dead_letters| {
                    dead_letters
                        .values_mut()
                        .for_each(|e| e.retry_requested = true);
                    dead_letters.len() as u64
                });
            let mut deadlines = 0;
            for pending in p
                .deadlines
                .get_mut(projection)
                .into_iter()
                .flat_map(|all| all.values_mut())
            {
                if pending.deadline.dead_lettered {
                    pending.deadline.dead_lettered = false;
                    pending.fire_at = now;
                    deadlines += 1;
                }
            }
            events + deadlines
        }))
    }

    async fn try_lease(&self, projection: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        let claims = self.projections(|p| Arc::clone(&p.claims));
        let owner = owner_id("lease");
        let mut guard = claims.lock().unwrap_or_else(PoisonError::into_inner);
        // In one process a lease is never lost: it lasts until released.
        let Some(claim) = guard.claim(projection, 1, &owner, Duration::MAX).pop() else {
            guard.release(projection, &owner);
            return Ok(None);
        };
        drop(guard);
        Ok(Some(Box::new(MemoryLease { claims, claim })))
    }

    async fn claim(
        &self,
        projection: &str,
        partitions: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        Ok(self.claims(|c| c.claim(projection, partitions, owner, ttl)))
    }

    async fn release_claims(&self, projection: &str, owner: &str) -> Result<(), StoreError> {
        self.claims(|c| c.release(projection, owner));
        Ok(())
    }

    async fn drain(
        &self,
        projection: &str,
        owner: &str,
        draining: bool,
    ) -> Result<bool, StoreError> {
        Ok(self.claims(|c| c.drain(projection, owner, draining)))
    }

    async fn partition_owners(&self, projection: &str) -> Result<Vec<PartitionOwner>, StoreError> {
        Ok(self.claims(|c| c.owners(projection)))
    }

    async fn add_claimed_dead_letters(
        &self,
        claim: &Claim,
        events: Vec<DeadLetter>,
    ) -> Result<(), StoreError> {
        self.fenced(claim, || {
            self.projections(|p| {
                let dead_letters = p.dead_letters.entry(claim.checkpoint_name()).or_default();
                for event in events {
                    dead_letters.insert(event.event.position, event);
                }
            })
        })
    }

    async fn save_claimed_checkpoint(
        &self,
        claim: &Claim,
        position: Position,
    ) -> Result<(), StoreError> {
        self.fenced(claim, || {
            self.write()
                .checkpoints
                .insert(claim.checkpoint_name(), position);
        })
    }

    async fn schedule_deadline(&self, deadline: Deadline) -> Result<(), StoreError> {
        self.projections(|p| {
            p.deadlines
                .entry(deadline.process.clone())
                .or_default()
                .entry(deadline.id)
                .or_insert(Pending {
                    fire_at: deadline.due_at,
                    deadline,
                });
        });
        Ok(())
    }

    async fn deadlines(&self, process: &str, limit: usize) -> Result<Vec<Deadline>, StoreError> {
        Ok(self.projections(|p| {
            let mut all: Vec<Deadline> = p
                .deadlines
                .get(process)
                .map(|all| all.values().map(|d| d.deadline.clone()).collect())
                .unwrap_or_default();
            all.sort_by_key(|d| (d.due_at, d.id));
            all.truncate(limit);
            all
        }))
    }

    async fn next_deadline(&self, process: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.projections(|p| {
            p.deadlines.get(process).and_then(|all| {
                all.values()
                    .filter(|d| !d.deadline.dead_lettered)
                    .map(|d| d.fire_at)
                    .min()
            })
        }))
    }

    async fn claim_deadlines(
        &self,
        process: &str,
        due_by: DateTime<Utc>,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Deadline>, StoreError> {
        let until = crate::projection::hold_until(hold);
        Ok(self.projections(|p| {
            let Some(all) = p.deadlines.get_mut(process) else {
                return Vec::new();
            };
            let mut due: Vec<&mut Pending> = all
                .values_mut()
                .filter(|d| !d.deadline.dead_lettered && d.fire_at <= due_by)
                .collect();
            due.sort_by_key(|d| (d.fire_at, d.deadline.id));
            due.truncate(limit);
            let mut claimed: Vec<Deadline> = due
                .into_iter()
                .map(|pending| {
                    pending.deadline.attempts += 1;
                    pending.fire_at = until;
                    pending.deadline.clone()
                })
                .collect();
            // The earliest to fire are taken, but handed out in the order
            // they were due: retries must not reorder an instance's deadlines.
            claimed.sort_by_key(|d| (d.due_at, d.id));
            claimed
        }))
    }

    async fn complete_deadline(&self, process: &str, id: Uuid) -> Result<(), StoreError> {
        self.projections(|p| {
            if let Some(all) = p.deadlines.get_mut(process) {
                all.remove(&id);
            }
        });
        Ok(())
    }

    async fn fail_deadline(
        &self,
        process: &str,
        id: Uuid,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.projections(|p| {
            let Some(pending) = p
                .deadlines
                .get_mut(process)
                .and_then(|all| all.get_mut(&id))
            else {
                return;
            };
            pending.deadline.error = Some(error.to_owned());
            match retry_at {
                Some(at) => {
                    pending.fire_at = at;
                    pending.deadline.dead_lettered = false;
                }
                None => pending.deadline.dead_lettered = true,
            }
        });
        Ok(())
    }

    async fn cancel_deadlines(
        &self,
        process: &str,
        instance: Uuid,
        name: &str,
    ) -> Result<(), StoreError> {
        self.projections(|p| {
            if let Some(all) = p.deadlines.get_mut(process) {
                all.retain(|_, d| {
                    let d = &d.deadline;
                    d.instance != instance || d.name != name || d.attempts > 0
                });
            }
        });
        Ok(())
    }
}

/// An in-process lease: held until released or dropped (a process that
/// dies drops it), never lost otherwise.
struct MemoryLease {
    claims: Arc<Mutex<Claims>>,
    claim: Claim,
}

#[async_trait]
impl Lease for MemoryLease {
    fn claim(&self) -> &Claim {
        &self.claim
    }

    async fn lost(&mut self) {
        std::future::pending::<()>().await;
    }

    async fn release(self: Box<Self>) {
        // Dropping releases.
    }
}

impl Drop for MemoryLease {
    fn drop(&mut self) {
        self.claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(&self.claim.projection, &self.claim.owner);
    }
}
