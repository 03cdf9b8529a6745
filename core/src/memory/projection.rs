//! The in-memory store's dead letters, leases and deadlines.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::MemoryStore;
use crate::position::Position;
use crate::projection::{Deadline, Lease, ParkedEvent, ProjectionStore};
use crate::store::StoreError;

/// What projections and process managers keep beside the events.
#[derive(Debug, Default)]
pub(super) struct Projections {
    parked: HashMap<String, BTreeMap<Position, ParkedEvent>>,
    deadlines: HashMap<String, HashMap<Uuid, Deadline>>,
    leases: Arc<Mutex<HashSet<String>>>,
}

impl MemoryStore {
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
    async fn park(&self, projection: &str, events: Vec<ParkedEvent>) -> Result<(), StoreError> {
        self.projections(|p| {
            let parked = p.parked.entry(projection.to_owned()).or_default();
            for event in events {
                parked.insert(event.event.position, event);
            }
        });
        Ok(())
    }

    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, StoreError> {
        Ok(self.projections(|p| {
            p.parked
                .get(projection)
                .map(|parked| parked.values().cloned().collect())
                .unwrap_or_default()
        }))
    }

    async fn unpark(&self, projection: &str, event_ids: &[Uuid]) -> Result<(), StoreError> {
        self.projections(|p| {
            if let Some(parked) = p.parked.get_mut(projection) {
                parked.retain(|_, e| !event_ids.contains(&e.event.event_id));
            }
        });
        Ok(())
    }

    async fn request_retry(&self, projection: &str) -> Result<u64, StoreError> {
        Ok(self.projections(|p| {
            p.parked.get_mut(projection).map_or(0, |parked| {
                parked.values_mut().for_each(|e| e.retry_requested = true);
                parked.len() as u64
            })
        }))
    }

    async fn try_lease(&self, projection: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        let leases = self.projections(|p| Arc::clone(&p.leases));
        let taken = leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(projection.to_owned());
        Ok(taken.then(|| {
            Box::new(MemoryLease {
                leases,
                name: projection.to_owned(),
            }) as Box<dyn Lease>
        }))
    }

    async fn schedule_deadline(&self, deadline: Deadline) -> Result<(), StoreError> {
        self.projections(|p| {
            p.deadlines
                .entry(deadline.process.clone())
                .or_default()
                .entry(deadline.id)
                .or_insert(deadline);
        });
        Ok(())
    }

    async fn due_deadlines(
        &self,
        process: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Deadline>, StoreError> {
        Ok(self.projections(|p| {
            let mut due: Vec<Deadline> = p
                .deadlines
                .get(process)
                .map(|all| all.values().filter(|d| d.due_at <= now).cloned().collect())
                .unwrap_or_default();
            due.sort_by_key(|d| (d.due_at, d.id));
            due.truncate(limit);
            due
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

    async fn cancel_deadlines(
        &self,
        process: &str,
        instance: Uuid,
        name: &str,
    ) -> Result<(), StoreError> {
        self.projections(|p| {
            if let Some(all) = p.deadlines.get_mut(process) {
                all.retain(|_, d| d.instance != instance || d.name != name);
            }
        });
        Ok(())
    }
}

/// An in-process lease: held until released or dropped (a process that
/// dies drops it), never lost otherwise.
struct MemoryLease {
    leases: Arc<Mutex<HashSet<String>>>,
    name: String,
}

#[async_trait]
impl Lease for MemoryLease {
    async fn lost(&mut self) {
        std::future::pending::<()>().await;
    }

    async fn release(self: Box<Self>) {
        // Dropping releases.
    }
}

impl Drop for MemoryLease {
    fn drop(&mut self) {
        self.leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.name);
    }
}
