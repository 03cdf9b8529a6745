//! Partitioned runners on the in-memory store: runners share a projection's
//! partitions, every event is applied once, in order per key, and a runner
//! that leaves hands its partitions (and their checkpoints) to the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::memory::MemoryStore;
use annals::projection::{
    BatchOutcome, FailurePolicy, PartitionedRunner, Projection, ProjectionError, ProjectionStore,
    checkpoint_name, partition_of,
};
use annals::testing::{eventually, eventually_async, fast_runner_options, new_event};
use annals::{EventFilter, EventStore, ExpectedVersion, RecordedEvent};
use async_trait::async_trait;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const PARTITIONS: u32 = 4;
const TTL: Duration = Duration::from_millis(600);

/// Counts each event's applications and checks the order per stream.
#[derive(Default)]
struct Counting {
    applied: Mutex<HashMap<Uuid, u32>>,
    last: Mutex<HashMap<String, u64>>,
    out_of_order: AtomicUsize,
}

impl Counting {
    fn count(&self, id: Uuid) -> u32 {
        self.applied.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
}

#[async_trait]
impl Projection for Counting {
    fn name(&self) -> String {
        "counting".into()
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }

    fn partitions(&self) -> u32 {
        PARTITIONS
    }

    async fn apply(&self, batch: &[RecordedEvent]) -> Result<BatchOutcome, ProjectionError> {
        let mut applied = self.applied.lock().unwrap();
        let mut last = self.last.lock().unwrap();
        for event in batch {
            *applied.entry(event.event_id).or_default() += 1;
            let previous = last.insert(event.stream_id.clone(), event.stream_version);
            if previous.is_some_and(|v| v + 1 != event.stream_version) {
                self.out_of_order.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(BatchOutcome::applied())
    }
}

async fn append_round(store: &MemoryStore, streams: usize, per_stream: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..per_stream {
        for s in 0..streams {
            let event = new_event("Ticked", json!({ "i": i }));
            ids.push(event.event_id);
            store
                .append(&format!("stream-{s}"), ExpectedVersion::Any, vec![event])
                .await
                .unwrap();
        }
    }
    ids
}

fn runner(
    store: &MemoryStore,
    projection: &Arc<Counting>,
) -> Arc<PartitionedRunner<MemoryStore, Counting>> {
    Arc::new(
        PartitionedRunner::new(
            store.clone(),
            Arc::clone(projection),
            fast_runner_options(FailurePolicy::DeadLetter { max_attempts: 1 }),
        )
        .with_claim_ttl(TTL),
    )
}

async fn held_by(store: &MemoryStore) -> HashMap<String, usize> {
    let mut held = HashMap::new();
    for partition in store.partition_owners("counting").await.unwrap() {
        if let Some(owner) = partition.owner {
            *held.entry(owner).or_default() += 1;
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_share_the_partitions_and_apply_each_event_once() {
    let store = MemoryStore::new();
    let projection = Arc::new(Counting::default());
    let (a, b) = (runner(&store, &projection), runner(&store, &projection));
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let task_a = tokio::spawn({
        let (a, stop) = (Arc::clone(&a), stop_a.clone());
        async move { a.run(stop).await }
    });
    let task_b = tokio::spawn({
        let (b, stop) = (Arc::clone(&b), stop_b.clone());
        async move { b.run(stop).await }
    });
    let mut ids = append_round(&store, 12, 10).await;

    // Two runners, four partitions: two each, once both have beaten twice.
    eventually_async("two partitions each", || async {
        let held = held_by(&store).await;
        held.get(a.owner()) == Some(&2) && held.get(b.owner()) == Some(&2)
    })
    .await;
    ids.extend(append_round(&store, 12, 10).await);
    eventually("every event applied", || {
        ids.iter().all(|&id| projection.count(id) > 0)
    })
    .await;
    assert!(
        ids.iter().all(|&id| projection.count(id) == 1),
        "an event was applied twice"
    );
    assert_eq!(projection.out_of_order.load(Ordering::SeqCst), 0);

    // Each partition's checkpoint is its own.
    let head = store.head().await.unwrap();
    eventually_async("every partition saved up to the head", || async {
        let mut all = true;
        for partition in 0..PARTITIONS {
            let name = checkpoint_name("counting", partition, PARTITIONS);
            all &= store.load_checkpoint(&name).await.unwrap() == Some(head);
        }
        all
    })
    .await;
    let used: std::collections::HashSet<u32> = (0..12)
        .map(|s| partition_of(&format!("stream-{s}"), PARTITIONS))
        .collect();
    assert!(
        used.len() > 1,
        "the streams all fell in one partition: {used:?}"
    );

    // A leaves: it finishes, saves and gives its partitions back; B takes
    // them over from A's checkpoints.
    stop_a.cancel();
    task_a.await.unwrap().unwrap();
    eventually_async("B holds every partition", || async {
        held_by(&store).await.get(b.owner()) == Some(&(PARTITIONS as usize))
    })
    .await;
    let later = append_round(&store, 12, 5).await;
    eventually("the later events applied", || {
        later.iter().all(|&id| projection.count(id) > 0)
    })
    .await;
    assert!(
        ids.iter()
            .chain(&later)
            .all(|&id| projection.count(id) == 1),
        "an event was applied twice across the handover"
    );
    assert_eq!(projection.out_of_order.load(Ordering::SeqCst), 0);
    stop_b.cancel();
    task_b.await.unwrap().unwrap();
    assert!(
        held_by(&store).await.is_empty(),
        "claims kept after both stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_stops_beating_loses_its_partitions_after_the_time_to_live() {
    let store = MemoryStore::new();
    let projection = Arc::new(Counting::default());
    let b = runner(&store, &projection);
    // A dead runner's claims: taken, never renewed.
    let dead = store
        .claim("counting", PARTITIONS, "dead", TTL)
        .await
        .unwrap();
    assert_eq!(dead.len(), PARTITIONS as usize);
    let ids = append_round(&store, 8, 5).await;
    let stop = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let task = tokio::spawn({
        let (b, stop) = (Arc::clone(&b), stop.clone());
        async move { b.run(stop).await }
    });
    eventually("every event applied", || {
        ids.iter().all(|&id| projection.count(id) == 1)
    })
    .await;
    assert!(
        started.elapsed() >= TTL / 2,
        "partitions were taken before the dead runner's claims expired"
    );
    for claim in &dead {
        assert!(matches!(
            store
                .save_claimed_checkpoint(claim, annals::Position::new(1, 1))
                .await,
            Err(annals::StoreError::Fenced { .. })
        ));
    }
    stop.cancel();
    task.await.unwrap().unwrap();
}
