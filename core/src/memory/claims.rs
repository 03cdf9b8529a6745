//! The in-memory store's claims on partitions: the same rules as the
//! PostgreSQL store's `annals_claim` (migration 0008), over maps.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::projection::{Claim, PartitionOwner, hold_until};

/// One partition's row.
#[derive(Debug, Clone)]
struct Slot {
    owner: Option<String>,
    generation: u64,
    expires_at: DateTime<Utc>,
}

/// Every projection's partitions and live owners.
#[derive(Debug, Default)]
pub(super) struct Claims {
    partitions: HashMap<String, BTreeMap<u32, Slot>>,
    /// Per projection and owner: until when it is alive, and whether it drains.
    claimants: HashMap<String, HashMap<String, (DateTime<Utc>, bool)>>,
}

impl Claims {
    /// One heartbeat (see `ProjectionStore::claim`).
    pub(super) fn claim(
        &mut self,
        projection: &str,
        partitions: u32,
        owner: &str,
        ttl: Duration,
    ) -> Vec<Claim> {
        let now = Utc::now();
        let until = hold_until(ttl);
        let claimants = self.claimants.entry(projection.to_owned()).or_default();
        let draining = claimants.get(owner).is_some_and(|&(_, draining)| draining);
        claimants.insert(owner.to_owned(), (until, draining));
        let live = claimants
            .values()
            .filter(|&&(at, draining)| at > now && !draining)
            .count()
            .max(1);
        let share = if draining {
            0
        } else {
            partitions.div_ceil(live as u32) as usize
        };
        let slots = self.partitions.entry(projection.to_owned()).or_default();
        for partition in 0..partitions {
            slots.entry(partition).or_insert(Slot {
                owner: None,
                generation: 0,
                expires_at: DateTime::<Utc>::MIN_UTC,
            });
        }
        let mut held = 0;
        for (_, slot) in slots.range_mut(..partitions) {
            if slot.owner.as_deref() == Some(owner) {
                held += 1;
                if held > share {
                    slot.owner = None;
                    slot.expires_at = DateTime::<Utc>::MIN_UTC;
                } else {
                    slot.expires_at = until;
                }
            }
        }
        for (_, slot) in slots.range_mut(..partitions) {
            if held >= share {
                break;
            }
            if slot.owner.is_none() || slot.expires_at <= now {
                slot.owner = Some(owner.to_owned());
                slot.generation += 1;
                slot.expires_at = until;
                held += 1;
            }
        }
        slots
            .range(..partitions)
            .filter(|(_, slot)| slot.owner.as_deref() == Some(owner))
            .map(|(&partition, slot)| Claim {
                projection: projection.to_owned(),
                partition,
                partitions,
                owner: owner.to_owned(),
                generation: slot.generation,
                expires_at: slot.expires_at,
            })
            .collect()
    }

    /// Marks `owner` draining or not; false when it is not a claimant.
    pub(super) fn drain(&mut self, projection: &str, owner: &str, draining: bool) -> bool {
        match self
            .claimants
            .get_mut(projection)
            .and_then(|claimants| claimants.get_mut(owner))
        {
            Some((_, flag)) => {
                *flag = draining;
                true
            }
            None => false,
        }
    }

    /// Gives up every claim of `owner` on `projection`.
    pub(super) fn release(&mut self, projection: &str, owner: &str) {
        if let Some(slots) = self.partitions.get_mut(projection) {
            for slot in slots.values_mut() {
                if slot.owner.as_deref() == Some(owner) {
                    slot.owner = None;
                    slot.expires_at = DateTime::<Utc>::MIN_UTC;
                }
            }
        }
        if let Some(claimants) = self.claimants.get_mut(projection) {
            claimants.remove(owner);
        }
    }

    /// Whether `claim` still holds its partition.
    pub(super) fn holds(&self, claim: &Claim) -> bool {
        self.partitions
            .get(&claim.projection)
            .and_then(|slots| slots.get(&claim.partition))
            .is_some_and(|slot| {
                slot.owner.as_deref() == Some(&claim.owner) && slot.generation == claim.generation
            })
    }

    /// The projection's partitions, for operators.
    pub(super) fn owners(&self, projection: &str) -> Vec<PartitionOwner> {
        self.partitions
            .get(projection)
            .map(|slots| {
                slots
                    .iter()
                    .map(|(&partition, slot)| PartitionOwner {
                        partition,
                        owner: slot.owner.clone(),
                        generation: slot.generation,
                        expires_at: slot.owner.as_ref().map(|_| slot.expires_at),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
