//! The [`ProjectionStore`] contract, claims on partitions: how owners share
//! a projection's partitions, how an expired claim changes hands, and the
//! fence on what a former owner records.

use std::collections::BTreeMap;
use std::time::Duration;

use super::helpers::*;
use super::projection_store::{letter, logged};
use crate::position::Position;
use crate::projection::{Claim, ProjectionStore};
use crate::store::{EventStore, StoreError};

/// Long enough not to expire during a case.
const LONG: Duration = Duration::from_secs(60);
/// Short enough to wait out.
const SHORT: Duration = Duration::from_millis(300);

async fn beat<S: ProjectionStore>(
    store: &S,
    projection: &str,
    partitions: u32,
    owner: &str,
    ttl: Duration,
) -> Vec<Claim> {
    store
        .claim(projection, partitions, owner, ttl)
        .await
        .unwrap_or_else(|e| panic!("claim({projection:?}, {partitions}, {owner:?}) failed: {e}"))
}

fn partitions_of(claims: &[Claim]) -> Vec<u32> {
    claims.iter().map(|c| c.partition).collect()
}

/// Who owns each partition, as operators see it.
async fn owners<S: ProjectionStore>(store: &S, projection: &str) -> BTreeMap<u32, Option<String>> {
    store
        .partition_owners(projection)
        .await
        .unwrap_or_else(|e| panic!("partition_owners({projection:?}) failed: {e}"))
        .into_iter()
        .map(|p| (p.partition, p.owner))
        .collect()
}

/// A checkpoint position that no log needs to hold.
fn position(n: u64) -> Position {
    Position::new(n, n)
}

/// Owners that beat in turn end up with every partition owned once, none
/// holding more than `ceil(partitions / owners)`: a newcomer gets its share
/// once the others gave theirs back at their next heartbeat.
pub async fn claims_share_partitions_among_live_owners<S: ProjectionStore>(store: &S) {
    let name = unique("shared");
    let first = beat(store, &name, 8, "a", LONG).await;
    assert_eq!(
        partitions_of(&first),
        (0..8).collect::<Vec<_>>(),
        "a lone owner holds every partition"
    );
    assert!(
        first
            .iter()
            .all(|c| c.generation == 1 && c.partitions == 8 && c.owner == "a")
    );
    assert!(
        beat(store, &name, 8, "b", LONG).await.is_empty(),
        "a newcomer took partitions still held"
    );
    assert_eq!(
        partitions_of(&beat(store, &name, 8, "a", LONG).await),
        [0, 1, 2, 3],
        "a gives back above its share of 4"
    );
    let b = beat(store, &name, 8, "b", LONG).await;
    assert_eq!(partitions_of(&b), [4, 5, 6, 7], "b takes what a gave back");
    assert!(
        b.iter().all(|c| c.generation == 2),
        "a new owner raises the generation: {b:?}"
    );
    // A third owner: shares of 3.
    assert!(beat(store, &name, 8, "c", LONG).await.is_empty());
    assert_eq!(
        partitions_of(&beat(store, &name, 8, "a", LONG).await),
        [0, 1, 2]
    );
    assert_eq!(
        partitions_of(&beat(store, &name, 8, "b", LONG).await),
        [4, 5, 6]
    );
    assert_eq!(
        partitions_of(&beat(store, &name, 8, "c", LONG).await),
        [3, 7]
    );
    // Steady: another round changes nothing.
    for owner in ["a", "b", "c"] {
        assert!(beat(store, &name, 8, owner, LONG).await.len() <= 3);
    }
    let owned = owners(store, &name).await;
    assert_eq!(owned.len(), 8);
    assert!(
        owned.values().all(Option::is_some),
        "a partition is unowned: {owned:?}"
    );
    let mut held = BTreeMap::<String, usize>::new();
    for owner in owned.into_values().flatten() {
        *held.entry(owner).or_default() += 1;
    }
    assert_eq!(
        held.values().copied().collect::<Vec<_>>(),
        [3, 3, 2],
        "{held:?}"
    );
}

/// An owner that stops beating loses its partitions once its claims expire,
/// to an owner that beats, with a new generation; while they have not
/// expired, nobody takes them.
pub async fn expired_claims_go_to_another_owner<S: ProjectionStore>(store: &S) {
    let name = unique("expiring");
    let old = beat(store, &name, 2, "old", SHORT).await;
    assert_eq!(partitions_of(&old), [0, 1]);
    assert!(
        beat(store, &name, 2, "new", LONG).await.is_empty(),
        "claims were taken before they expired"
    );
    tokio::time::sleep(SHORT + Duration::from_millis(200)).await;
    let new = beat(store, &name, 2, "new", LONG).await;
    assert_eq!(
        partitions_of(&new),
        [0, 1],
        "expired claims were not taken over"
    );
    for (before, after) in old.iter().zip(&new) {
        assert_eq!(
            after.generation,
            before.generation + 1,
            "a takeover raises the generation"
        );
    }
    // The old owner comes back: its partitions are gone, and it gets its
    // share again only once the new owner gives it up.
    assert!(beat(store, &name, 2, "old", LONG).await.is_empty());
    assert_eq!(
        partitions_of(&beat(store, &name, 2, "new", LONG).await),
        [0]
    );
    let back = beat(store, &name, 2, "old", LONG).await;
    assert_eq!(partitions_of(&back), [1]);
    assert_eq!(back[0].generation, old[1].generation + 2);
}

/// A checkpoint save (or a dead letter) under a claim the owner lost writes
/// nothing and fails as fenced; the new owner's goes through, under the
/// same name.
pub async fn fenced_checkpoint_save_writes_nothing<S: ProjectionStore>(store: &S) {
    let name = unique("fenced");
    let old = beat(store, &name, 4, "old", SHORT).await;
    let stale = old
        .iter()
        .find(|c| c.partition == 2)
        .cloned()
        .expect("partition 2 held");
    store
        .save_claimed_checkpoint(&stale, position(10))
        .await
        .expect("the owner saves its partition's checkpoint");
    let checkpoint = stale.checkpoint_name();
    assert_eq!(checkpoint, format!("{name}#2/4"));
    assert_eq!(
        EventStore::load_checkpoint(store, &checkpoint)
            .await
            .ok()
            .flatten(),
        Some(position(10))
    );

    tokio::time::sleep(SHORT + Duration::from_millis(200)).await;
    let new = beat(store, &name, 4, "new", LONG).await;
    let current = new
        .iter()
        .find(|c| c.partition == 2)
        .cloned()
        .expect("partition 2 taken over");
    match store.save_claimed_checkpoint(&stale, position(20)).await {
        Err(StoreError::Fenced {
            projection,
            partition,
            generation,
        }) => {
            assert_eq!(
                (projection, partition, generation),
                (name.clone(), 2, stale.generation)
            );
        }
        other => panic!("a save under a lost claim was not fenced: {other:?}"),
    }
    assert_eq!(
        EventStore::load_checkpoint(store, &checkpoint)
            .await
            .ok()
            .flatten(),
        Some(position(10)),
        "a fenced save moved the checkpoint"
    );
    store
        .save_claimed_checkpoint(&current, position(30))
        .await
        .expect("the new owner saves");
    assert_eq!(
        EventStore::load_checkpoint(store, &checkpoint)
            .await
            .ok()
            .flatten(),
        Some(position(30))
    );
    // Dead letters are fenced the same way, and kept under the partition's name.
    let events = logged(store, 1).await;
    match store
        .add_claimed_dead_letters(&stale, vec![letter(&events[0], Some("boom"), 1)])
        .await
    {
        Err(StoreError::Fenced { .. }) => {}
        other => panic!("a dead letter under a lost claim was not fenced: {other:?}"),
    }
    assert!(
        store
            .dead_letters(&checkpoint)
            .await
            .unwrap_or_default()
            .is_empty(),
        "a fenced dead letter was written"
    );
    store
        .add_claimed_dead_letters(&current, vec![letter(&events[0], Some("boom"), 1)])
        .await
        .expect("the new owner dead-letters");
    let kept = store.dead_letters(&checkpoint).await.unwrap_or_default();
    assert_eq!(
        kept.len(),
        1,
        "the new owner's dead letter under {checkpoint:?}"
    );
    // Coming back does not revive the old claim either.
    let _ = beat(store, &name, 4, "old", LONG).await;
    assert!(matches!(
        store.save_claimed_checkpoint(&stale, position(40)).await,
        Err(StoreError::Fenced { .. })
    ));
}

/// Released claims are free at once, and the releaser no longer counts
/// among the live owners.
pub async fn released_claims_are_free_at_once<S: ProjectionStore>(store: &S) {
    let name = unique("released");
    assert_eq!(beat(store, &name, 4, "a", LONG).await.len(), 4);
    assert!(beat(store, &name, 4, "b", LONG).await.is_empty());
    store
        .release_claims(&name, "a")
        .await
        .unwrap_or_else(|e| panic!("release_claims failed: {e}"));
    assert!(
        owners(store, &name).await.values().all(Option::is_none),
        "released claims kept an owner"
    );
    assert_eq!(
        partitions_of(&beat(store, &name, 4, "b", LONG).await),
        [0, 1, 2, 3],
        "the remaining owner takes every released partition"
    );
}

/// A draining owner gives its partitions back at its next heartbeat and
/// takes none; the others share them without it; undrained, it gets its
/// share again.
pub async fn a_draining_owner_gives_its_partitions_back<S: ProjectionStore>(store: &S) {
    let name = unique("drained");
    assert_eq!(beat(store, &name, 4, "a", LONG).await.len(), 4);
    assert!(beat(store, &name, 4, "b", LONG).await.is_empty());
    assert_eq!(beat(store, &name, 4, "a", LONG).await.len(), 2);
    assert_eq!(beat(store, &name, 4, "b", LONG).await.len(), 2);
    assert!(
        store.drain(&name, "a", true).await.unwrap_or(false),
        "a is a claimant"
    );
    assert!(
        !store.drain(&name, "nobody", true).await.unwrap_or(true),
        "draining an unknown owner"
    );
    assert!(
        beat(store, &name, 4, "a", LONG).await.is_empty(),
        "a draining owner kept partitions"
    );
    assert_eq!(
        beat(store, &name, 4, "b", LONG).await.len(),
        4,
        "b takes a's partitions"
    );
    assert!(
        beat(store, &name, 4, "a", LONG).await.is_empty(),
        "a draining owner took partitions"
    );
    assert!(store.drain(&name, "a", false).await.unwrap_or(false));
    assert!(beat(store, &name, 4, "a", LONG).await.is_empty());
    assert_eq!(beat(store, &name, 4, "b", LONG).await.len(), 2);
    assert_eq!(
        beat(store, &name, 4, "a", LONG).await.len(),
        2,
        "undrained, a gets its share"
    );
}
