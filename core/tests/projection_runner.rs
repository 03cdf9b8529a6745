//! The projection runner over the in-memory store: checkpoints, filters,
//! retries, dead letters, the stop policy, live projection, shutdown, the
//! single-runner lease, read-your-writes waits and store outages.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::memory::MemoryStore;
use annals::projection::{
    Backoff, BatchOutcome, FailedEvent, FailurePolicy, Projection, ProjectionError,
    ProjectionRunner, ProjectionStore, RunnerError, RunnerOptions, RunnerState, WaitError,
    wait_for_checkpoint,
};
use annals::testing::{
    Faulty, Operation, PATIENCE, eventually, eventually_async, fast_runner_options, new_event,
};
use annals::{Appended, EventFilter, EventStore, ExpectedVersion, Position, RecordedEvent};
use async_trait::async_trait;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Helpers

/// What a runner's task returned, once it ends (within [`PATIENCE`]).
async fn finished<T>(task: tokio::task::JoinHandle<Result<T, RunnerError>>) -> T {
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("the runner ends")
        .expect("the runner's task does not panic")
        .expect("the runner ends without an error")
}

/// Appends one event of `kind` to `stream`; `poison` marks it as one a broken
/// projection cannot apply.
async fn add(store: &MemoryStore, stream: &str, kind: &str, poison: bool) -> Appended {
    let event = new_event(kind, json!({ "stream": stream, "poison": poison }));
    store
        .append(stream, ExpectedVersion::Any, vec![event])
        .await
        .unwrap()
}

async fn handled(store: &MemoryStore, stream: &str) -> Appended {
    add(store, stream, "Added", false).await
}

fn fast(policy: FailurePolicy) -> RunnerOptions {
    fast_runner_options(policy)
}

async fn checkpoint(store: &MemoryStore, name: &str) -> Option<Position> {
    store.load_checkpoint(name).await.unwrap()
}

// ---------------------------------------------------------------------------
// The test projection

/// Per stream, the versions applied, in the order they were applied.
type Rows = BTreeMap<String, Vec<u64>>;

#[derive(Debug, Default)]
struct Model {
    /// Per stream, the last version applied (the idempotency guard).
    last: HashMap<String, u64>,
    /// The read model.
    rows: Rows,
    /// Positions of the events that changed the model, in order.
    applied: Vec<Position>,
    /// Every event handed to `apply`, with its type.
    delivered: Vec<(Position, String)>,
    /// Calls of `apply`.
    calls: u32,
    /// When each call started, and how many events it got.
    batches: Vec<(Instant, usize)>,
}

/// An idempotent read model that can be told to fail.
struct TestProjection {
    name: String,
    filter: EventFilter,
    model: Mutex<Model>,
    /// Fails the next N calls transiently.
    transient: AtomicU32,
    /// Fails every call transiently while set.
    hold: AtomicBool,
    /// Fails permanently on events with `"poison": true` while set.
    broken: AtomicBool,
    /// Each call takes this long (milliseconds).
    delay_ms: AtomicU64,
    /// Set when a call has started.
    entered: AtomicBool,
}

impl TestProjection {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            filter: EventFilter::types(["Added"]),
            model: Mutex::default(),
            transient: AtomicU32::new(0),
            hold: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            entered: AtomicBool::new(false),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Model) -> T) -> T {
        f(&self.model.lock().unwrap())
    }

    fn rows(&self) -> Rows {
        self.with(|m| m.rows.clone())
    }

    fn applied(&self) -> Vec<Position> {
        self.with(|m| m.applied.clone())
    }

    fn calls(&self) -> u32 {
        self.with(|m| m.calls)
    }

    fn has_applied(&self, position: Position) -> bool {
        self.with(|m| m.applied.contains(&position))
    }
}

#[async_trait]
impl Projection for TestProjection {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn filter(&self) -> EventFilter {
        self.filter.clone()
    }

    async fn apply(&self, batch: &[RecordedEvent]) -> Result<BatchOutcome, ProjectionError> {
        self.entered.store(true, Ordering::SeqCst);
        {
            let mut model = self.model.lock().unwrap();
            model.calls += 1;
            model.batches.push((Instant::now(), batch.len()));
        }
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.hold.load(Ordering::SeqCst) {
            return Err(ProjectionError::Transient("held".into()));
        }
        if self
            .transient
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ProjectionError::Transient("index overloaded".into()));
        }
        let broken = self.broken.load(Ordering::SeqCst);
        let mut model = self.model.lock().unwrap();
        let mut failed = Vec::new();
        let mut failed_streams = HashSet::new();
        for (index, event) in batch.iter().enumerate() {
            model
                .delivered
                .push((event.position, event.event_type.clone()));
            if failed_streams.contains(&event.stream_id) {
                continue; // the contract: nothing after a failed event of its stream
            }
            let poison = event
                .payload
                .to_value()
                .is_ok_and(|p| p["poison"] == json!(true));
            if broken && poison {
                failed_streams.insert(event.stream_id.clone());
                failed.push(FailedEvent {
                    index,
                    error: format!(
                        "poison at {} version {}",
                        event.stream_id, event.stream_version
                    )
                    .into(),
                });
                continue;
            }
            let last = model.last.entry(event.stream_id.clone()).or_default();
            if event.stream_version <= *last {
                continue; // already applied: re-delivery is harmless
            }
            *last = event.stream_version;
            model
                .rows
                .entry(event.stream_id.clone())
                .or_default()
                .push(event.stream_version);
            model.applied.push(event.position);
        }
        Ok(BatchOutcome { failed })
    }
}

/// The model a fresh, never-failing projection builds from the whole log.
async fn clean_build(store: &MemoryStore) -> Rows {
    let projection = TestProjection::new(&format!("clean-{}", Uuid::now_v7()));
    ProjectionRunner::new(store.clone(), Arc::clone(&projection))
        .with_options(fast(FailurePolicy::Stop { max_attempts: 1 }))
        .catch_up()
        .await
        .unwrap();
    projection.rows()
}

/// The positions of the handled events in the store, in log order.
async fn handled_positions(store: &MemoryStore) -> Vec<Position> {
    store
        .read_all(Position::START, usize::MAX, &EventFilter::types(["Added"]))
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect()
}

// ---------------------------------------------------------------------------
// Catch-up

#[tokio::test]
async fn catch_up_applies_each_handled_event_once_in_log_order() {
    let store = MemoryStore::new();
    for i in 0..30 {
        let stream = format!("s-{}", i % 3);
        if i % 4 == 1 {
            add(&store, &stream, "Ignored", false).await;
        } else {
            handled(&store, &stream).await;
        }
    }
    let last = handled(&store, "s-0").await;

    let projection = TestProjection::new("catch-up");
    let mut options = fast(FailurePolicy::Stop { max_attempts: 1 });
    options.batch_size = 4; // several batches
    let runner =
        ProjectionRunner::new(store.clone(), Arc::clone(&projection)).with_options(options);
    let done = runner.catch_up().await.unwrap();

    assert_eq!(done, last.position, "catch_up returns the checkpoint");
    assert_eq!(checkpoint(&store, "catch-up").await, Some(last.position));
    assert_eq!(runner.progress().borrow().checkpoint, last.position);
    let expected = handled_positions(&store).await;
    assert_eq!(
        projection.applied(),
        expected,
        "each handled event once, in log order"
    );
    let delivered = projection.with(|m| m.delivered.clone());
    assert!(
        delivered.iter().all(|(_, kind)| kind == "Added"),
        "the filter is honoured: {delivered:?}"
    );
    assert_eq!(
        delivered.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        expected,
        "nothing delivered twice"
    );
    assert!(projection.calls() >= 6, "batches of at most 4");

    // A second catch-up finds nothing new.
    let calls = projection.calls();
    let again = runner.catch_up().await.unwrap();
    assert_eq!(again, last.position);
    assert_eq!(projection.calls(), calls, "nothing re-applied");
    assert_eq!(projection.applied(), expected);

    // New events: only those are applied.
    let more = handled(&store, "s-9").await;
    assert_eq!(runner.catch_up().await.unwrap(), more.position);
    assert_eq!(projection.applied().last(), Some(&more.position));
    assert_eq!(projection.applied().len(), expected.len() + 1);
    assert_eq!(projection.rows(), clean_build(&store).await);
}

#[tokio::test]
async fn catch_up_returns_when_the_log_ends_with_unhandled_events() {
    let store = MemoryStore::new();
    let last_handled = handled(&store, "s-1").await;
    add(&store, "s-1", "Ignored", false).await;
    add(&store, "s-2", "Ignored", false).await;

    let projection = TestProjection::new("unhandled-tail");
    let runner = ProjectionRunner::new(store.clone(), Arc::clone(&projection))
        .with_options(fast(FailurePolicy::Stop { max_attempts: 1 }));
    let done = tokio::time::timeout(PATIENCE, runner.catch_up())
        .await
        .expect("catch_up must return although the last events are not handled")
        .unwrap();
    assert!(
        done >= last_handled.position,
        "{done} < {}",
        last_handled.position
    );
    assert_eq!(projection.applied(), [last_handled.position]);
    // The next one starts where this one ended and also returns.
    tokio::time::timeout(PATIENCE, runner.catch_up())
        .await
        .expect("second catch_up")
        .unwrap();
    assert_eq!(projection.applied(), [last_handled.position]);
}

// ---------------------------------------------------------------------------
// Transient failures

#[tokio::test]
async fn transient_failures_retry_with_backoff_and_hold_the_checkpoint() {
    let store = MemoryStore::new();
    for i in 0..8 {
        handled(&store, &format!("s-{}", i % 2)).await;
    }
    let last = handled(&store, "s-0").await;

    // Counted failures: the batch is retried with growing delays.
    let projection = TestProjection::new("transient");
    projection.transient.store(3, Ordering::SeqCst);
    let mut options = fast(FailurePolicy::DeadLetter { max_attempts: 1 });
    options.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_secs(1),
    };
    let runner =
        ProjectionRunner::new(store.clone(), Arc::clone(&projection)).with_options(options);
    let start = Instant::now();
    assert_eq!(runner.catch_up().await.unwrap(), last.position);
    let took = start.elapsed();
    assert_eq!(projection.calls(), 4, "three failures, then success");
    assert!(
        took >= Duration::from_millis(20 + 40 + 80),
        "exponential backoff: 3 retries took only {took:?}"
    );
    let status = runner.progress().borrow().clone();
    assert_eq!(status.retries, 3);
    assert_eq!(status.last_error, None, "cleared after success");
    assert!(
        store.dead_letters("transient").await.unwrap().is_empty(),
        "transient errors never dead-letter"
    );
    assert_eq!(projection.rows(), clean_build(&store).await);

    // Failing until released: the checkpoint does not move meanwhile.
    let held = TestProjection::new("held");
    held.hold.store(true, Ordering::SeqCst);
    let runner = Arc::new(
        ProjectionRunner::new(store.clone(), Arc::clone(&held))
            .with_options(fast(FailurePolicy::DeadLetter { max_attempts: 1 })),
    );
    let status = runner.progress();
    let task = tokio::spawn({
        let runner = Arc::clone(&runner);
        async move { runner.catch_up().await }
    });
    eventually("several failed attempts", || held.calls() >= 4).await;
    assert_eq!(
        checkpoint(&store, "held").await,
        None,
        "no checkpoint while failing"
    );
    assert!(held.applied().is_empty());
    {
        let s = status.borrow();
        assert!(s.retries >= 3, "{s:?}");
        assert_eq!(s.last_error.as_deref(), Some("held"));
        assert_eq!(s.checkpoint, Position::START);
    }
    assert!(!task.is_finished());
    held.hold.store(false, Ordering::SeqCst);
    let done = finished(task).await;
    assert_eq!(done, last.position);
    assert_eq!(checkpoint(&store, "held").await, Some(last.position));
    assert!(store.dead_letters("held").await.unwrap().is_empty());
    assert_eq!(held.rows(), clean_build(&store).await);
}

// ---------------------------------------------------------------------------
// Dead letters

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_dead_letter_their_stream_and_are_retried_on_request() {
    let store = MemoryStore::new();
    let a1 = handled(&store, "a").await;
    let b1 = handled(&store, "b").await;
    let a2 = add(&store, "a", "Added", true).await; // poison
    let b2 = handled(&store, "b").await;
    let a3 = handled(&store, "a").await;
    add(&store, "a", "Ignored", false).await;
    let b3 = handled(&store, "b").await;

    let projection = TestProjection::new("dead-lettering");
    projection.broken.store(true, Ordering::SeqCst);
    let mut options = fast(FailurePolicy::DeadLetter { max_attempts: 3 });
    options.batch_size = 3; // the poison's followers arrive in later batches too
    let runner = Arc::new(
        ProjectionRunner::new(store.clone(), Arc::clone(&projection)).with_options(options),
    );
    let status = runner.progress();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let runner = Arc::clone(&runner);
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });

    eventually_async("the log projected", || async {
        checkpoint(&store, "dead-lettering").await == Some(b3.position)
    })
    .await;
    let dead_letters = store.dead_letters("dead-lettering").await.unwrap();
    let summary: Vec<_> = dead_letters
        .iter()
        .map(|p| (p.event.position, p.error.is_some()))
        .collect();
    assert_eq!(
        summary,
        [(a2.position, true), (a3.position, false)],
        "the poison event and its stream's follower: {dead_letters:#?}"
    );
    let error = dead_letters[0].error.as_deref().unwrap();
    assert!(error.contains("poison at a version 2"), "{error}");
    assert_eq!(dead_letters[0].attempts, 3, "tried max_attempts times");
    assert!(!dead_letters[0].retry_requested);
    assert_eq!(projection.with(|m| m.rows.get("a").cloned()), Some(vec![1]));
    assert_eq!(
        projection.with(|m| m.rows.get("b").cloned()),
        Some(vec![1, 2, 3])
    );
    assert!(!projection.has_applied(a3.position));
    assert_eq!(status.borrow().dead_letters, 2);
    assert_eq!(status.borrow().state, RunnerState::Running);

    // Live: stream a stays dead-lettered behind its poison event, b goes on.
    let a4 = handled(&store, "a").await;
    let b4 = handled(&store, "b").await;
    eventually("b4 applied live", || projection.has_applied(b4.position)).await;
    eventually_async("a4 dead-lettered live", || async {
        store
            .dead_letters("dead-lettering")
            .await
            .unwrap()
            .iter()
            .any(|p| p.event.position == a4.position && p.error.is_none())
    })
    .await;
    assert!(!projection.has_applied(a4.position));
    assert_eq!(store.dead_letters("dead-lettering").await.unwrap().len(), 3);

    // A retry while still broken keeps them dead-lettered, in order.
    assert_eq!(store.retry_dead_letters("dead-lettering").await.unwrap(), 3);
    eventually_async("the failed retry recorded", || async {
        let dead_letters = store.dead_letters("dead-lettering").await.unwrap();
        dead_letters.iter().all(|p| !p.retry_requested) && dead_letters[0].attempts > 3
    })
    .await;
    let dead_letters = store.dead_letters("dead-lettering").await.unwrap();
    assert_eq!(
        dead_letters
            .iter()
            .map(|p| p.event.position)
            .collect::<Vec<_>>(),
        [a2.position, a3.position, a4.position]
    );
    assert!(
        dead_letters[0].error.is_some()
            && dead_letters[1].error.is_none()
            && dead_letters[2].error.is_none()
    );
    assert_eq!(projection.with(|m| m.rows.get("a").cloned()), Some(vec![1]));

    // A restart remembers which streams are dead-lettered.
    shutdown.cancel();
    finished(task).await;
    let runner = Arc::new(
        ProjectionRunner::new(store.clone(), Arc::clone(&projection)).with_options(options),
    );
    let status = runner.progress();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let runner = Arc::clone(&runner);
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    let a5 = handled(&store, "a").await;
    let b5 = handled(&store, "b").await;
    eventually("b5 applied after the restart", || {
        projection.has_applied(b5.position)
    })
    .await;
    eventually_async("a5 dead-lettered after the restart", || async {
        store
            .dead_letters("dead-lettering")
            .await
            .unwrap()
            .iter()
            .any(|p| p.event.position == a5.position && p.error.is_none())
    })
    .await;
    assert!(!projection.has_applied(a5.position));
    eventually("status counts the dead-lettered", || {
        status.borrow().dead_letters == 4
    })
    .await;

    // Fixed: the operator asks again, the runner applies them in order.
    projection.broken.store(false, Ordering::SeqCst);
    assert_eq!(store.retry_dead_letters("dead-lettering").await.unwrap(), 4);
    eventually_async("dead letters drained", || async {
        store
            .dead_letters("dead-lettering")
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    eventually("status shows none dead-lettered", || {
        status.borrow().dead_letters == 0
    })
    .await;
    assert_eq!(
        projection.with(|m| m.rows.get("a").cloned()),
        Some(vec![1, 2, 3, 5, 6]),
        "applied in stream order (v4 is an Ignored event)"
    );

    // The stream is unblocked: its next event is applied, not dead-lettered.
    let a6 = handled(&store, "a").await;
    eventually("a6 applied", || projection.has_applied(a6.position)).await;
    assert!(
        store
            .dead_letters("dead-lettering")
            .await
            .unwrap()
            .is_empty()
    );

    shutdown.cancel();
    finished(task).await;
    assert_eq!(
        checkpoint(&store, "dead-lettering").await,
        Some(a6.position)
    );
    assert_eq!(projection.rows(), clean_build(&store).await);
    let _ = (a1, b1, b2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_retried_under_steady_traffic() {
    let store = MemoryStore::new();
    let poison = add(&store, "a", "Added", true).await;
    let projection = TestProjection::new("busy");
    projection.broken.store(true, Ordering::SeqCst);
    let runner = ProjectionRunner::new(store.clone(), Arc::clone(&projection))
        .with_options(fast(FailurePolicy::DeadLetter { max_attempts: 1 }));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    eventually_async("the poison dead-lettered", || async {
        store.dead_letters("busy").await.unwrap().len() == 1
    })
    .await;

    // Another stream keeps the runner busy: an event every few milliseconds,
    // more often than its idle interval.
    let traffic = tokio::spawn({
        let store = store.clone();
        let shutdown = shutdown.clone();
        async move {
            while !shutdown.is_cancelled() {
                handled(&store, "b").await;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
    });
    projection.broken.store(false, Ordering::SeqCst);
    store.retry_dead_letters("busy").await.unwrap();
    eventually_async("the retry despite the traffic", || async {
        store.dead_letters("busy").await.unwrap().is_empty()
    })
    .await;
    assert!(projection.has_applied(poison.position));
    shutdown.cancel();
    traffic.await.unwrap();
    finished(task).await;
}

#[tokio::test]
async fn stop_policy_stops_at_the_poison_event() {
    let store = MemoryStore::new();
    handled(&store, "a").await;
    let b1 = handled(&store, "b").await;
    let poison = add(&store, "a", "Added", true).await;
    handled(&store, "b").await;

    let projection = TestProjection::new("stopping");
    projection.broken.store(true, Ordering::SeqCst);
    let runner = ProjectionRunner::new(store.clone(), Arc::clone(&projection))
        .with_options(fast(FailurePolicy::Stop { max_attempts: 2 }));
    let error = runner.catch_up().await.unwrap_err();
    match &error {
        RunnerError::Stopped {
            projection: name,
            stream,
            stream_version,
            event_type,
            position,
            error,
        } => {
            assert_eq!(name, "stopping");
            assert_eq!(stream, "a");
            assert_eq!(*stream_version, 2);
            assert_eq!(event_type, "Added");
            assert_eq!(*position, poison.position);
            assert!(error.contains("poison"), "{error}");
        }
        other => panic!("expected Stopped, got {other:?}"),
    }
    let text = error.to_string();
    assert!(text.contains("\"a\"") && text.contains("Added"), "{text}");
    assert_eq!(projection.calls(), 2, "max_attempts tries");
    let saved = checkpoint(&store, "stopping").await.unwrap();
    assert_eq!(
        saved, b1.position,
        "the checkpoint stops just before the poison event"
    );
    assert!(saved < poison.position);
    assert!(
        store.dead_letters("stopping").await.unwrap().is_empty(),
        "stop dead-letters nothing"
    );

    // `run` stops the same way, from the saved checkpoint.
    let shutdown = CancellationToken::new();
    let status = runner.progress();
    let error = tokio::time::timeout(PATIENCE, runner.run(shutdown))
        .await
        .expect("run must stop at the poison event")
        .unwrap_err();
    assert!(
        matches!(&error, RunnerError::Stopped { position, .. } if *position == poison.position),
        "{error:?}"
    );
    assert_eq!(status.borrow().state, RunnerState::Stopped);
    assert_eq!(checkpoint(&store, "stopping").await, Some(b1.position));

    // Fixed, it goes on from there.
    projection.broken.store(false, Ordering::SeqCst);
    let last = store.head().await.unwrap();
    assert_eq!(runner.catch_up().await.unwrap(), last);
    assert_eq!(projection.rows(), clean_build(&store).await);
}

// ---------------------------------------------------------------------------
// Live projection and shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_are_applied_and_shutdown_finishes_the_batch() {
    let store = MemoryStore::new();
    let before = handled(&store, "s-1").await;
    let projection = TestProjection::new("live");
    let runner = Arc::new(
        ProjectionRunner::new(store.clone(), Arc::clone(&projection))
            .with_options(fast(FailurePolicy::Stop { max_attempts: 1 })),
    );
    let status = runner.progress();
    assert_eq!(status.borrow().state, RunnerState::Idle);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let runner = Arc::clone(&runner);
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    eventually("stored event applied", || {
        projection.has_applied(before.position)
    })
    .await;
    assert_eq!(status.borrow().state, RunnerState::Running);

    let mut last = before;
    for i in 0..20 {
        last = handled(&store, &format!("s-{}", i % 4)).await;
        add(&store, "other", "Ignored", false).await;
    }
    eventually("live events applied", || {
        projection.has_applied(last.position)
    })
    .await;
    assert_eq!(projection.applied(), handled_positions(&store).await);
    eventually("status caught up", || {
        status.borrow().checkpoint == last.position
    })
    .await;
    assert_eq!(status.borrow().events_applied, 21);

    // Shutdown while a batch is being applied: it is finished and saved.
    projection.delay_ms.store(200, Ordering::SeqCst);
    projection.entered.store(false, Ordering::SeqCst);
    let in_flight = handled(&store, "s-1").await;
    eventually("the batch in hand", || {
        projection.entered.load(Ordering::SeqCst)
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, task)
        .await
        .unwrap()
        .unwrap()
        .expect("graceful shutdown is Ok");
    assert!(projection.has_applied(in_flight.position));
    assert_eq!(checkpoint(&store, "live").await, Some(in_flight.position));
    assert_eq!(status.borrow().state, RunnerState::Stopped);
    assert_eq!(status.borrow().checkpoint, in_flight.position);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_paced_under_a_trickle_but_not_when_quiet_or_behind() {
    let interval = Duration::from_millis(200);
    let store = MemoryStore::new();
    // Behind: a backlog of four full batches before the runner starts.
    let mut last = handled(&store, "s-0").await;
    for i in 1..400 {
        last = handled(&store, &format!("s-{}", i % 7)).await;
    }
    let projection = TestProjection::new("paced");
    let options = RunnerOptions {
        batch_size: 100,
        min_batch_interval: interval,
        ..fast(FailurePolicy::Stop { max_attempts: 1 })
    };
    let runner =
        ProjectionRunner::new(store.clone(), Arc::clone(&projection)).with_options(options);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    let started = Instant::now();
    eventually("the backlog applied", || {
        projection.has_applied(last.position)
    })
    .await;
    let backlog = started.elapsed();
    let batches = projection.model.lock().unwrap().batches.clone();
    assert!(batches.iter().all(|&(_, n)| n == 100), "{batches:?}");
    assert!(
        backlog < interval * 2,
        "full batches wait for nothing: {backlog:?}"
    );

    // Quiet: a lone event goes at once.
    tokio::time::sleep(interval * 2).await;
    let lone = handled(&store, "s-1").await;
    let appended = Instant::now();
    eventually("the lone event applied", || {
        projection.has_applied(lone.position)
    })
    .await;
    assert!(
        appended.elapsed() < interval / 2,
        "{:?}",
        appended.elapsed()
    );

    // A trickle: one event every 10 ms for a second; batches start at least
    // an interval apart and gather what came meanwhile.
    let before = projection.model.lock().unwrap().batches.len();
    let trickle_started = Instant::now();
    for i in 0..100 {
        last = handled(&store, &format!("s-{}", i % 7)).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eventually("the trickle applied", || {
        projection.has_applied(last.position)
    })
    .await;
    let trickle: Vec<_> = projection.model.lock().unwrap().batches[before..].to_vec();
    let span = trickle_started.elapsed();
    assert_eq!(trickle.iter().map(|&(_, n)| n).sum::<usize>(), 100);
    for pair in trickle.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= interval, "batches {gap:?} apart: {trickle:?}");
    }
    let most = span.as_millis() / interval.as_millis() + 2;
    assert!(
        trickle.len() as u128 <= most,
        "{} batches in {span:?}",
        trickle.len()
    );
    assert_eq!(projection.applied(), handled_positions(&store).await);

    shutdown.cancel();
    finished(task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_interrupts_a_failing_batch_and_keeps_the_checkpoint() {
    let store = MemoryStore::new();
    let first = handled(&store, "s-1").await;
    let projection = TestProjection::new("interrupted");
    let runner = Arc::new(
        ProjectionRunner::new(store.clone(), Arc::clone(&projection))
            .with_options(fast(FailurePolicy::DeadLetter { max_attempts: 1 })),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let runner = Arc::clone(&runner);
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    eventually("first applied", || projection.has_applied(first.position)).await;
    eventually_async("first saved", || async {
        checkpoint(&store, "interrupted").await == Some(first.position)
    })
    .await;
    projection.hold.store(true, Ordering::SeqCst);
    let calls = projection.calls();
    let stuck = handled(&store, "s-1").await;
    eventually("retrying", || projection.calls() >= calls + 2).await;
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("shutdown does not wait for a failing batch")
        .unwrap()
        .unwrap();
    assert_eq!(
        checkpoint(&store, "interrupted").await,
        Some(first.position)
    );
    assert!(store.dead_letters("interrupted").await.unwrap().is_empty());

    // The next start delivers the batch again.
    projection.hold.store(false, Ordering::SeqCst);
    assert_eq!(runner.catch_up().await.unwrap(), stuck.position);
    assert_eq!(projection.applied(), [first.position, stuck.position]);
}

// ---------------------------------------------------------------------------
// Lease

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runner_holds_the_lease_and_a_standby_takes_over() {
    let store = MemoryStore::new();
    for i in 0..5 {
        handled(&store, &format!("s-{}", i % 2)).await;
    }
    let first = TestProjection::new("leased");
    let second = TestProjection::new("leased");
    let options = fast(FailurePolicy::DeadLetter { max_attempts: 1 });
    let runner_a = ProjectionRunner::new(store.clone(), Arc::clone(&first)).with_options(options);
    let runner_b = ProjectionRunner::new(store.clone(), Arc::clone(&second)).with_options(options);
    let status_a = runner_a.progress();
    let status_b = runner_b.progress();
    let shutdown = CancellationToken::new();
    let task_a = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { runner_a.run(shutdown).await }
    });
    eventually("A running", || {
        status_a.borrow().state == RunnerState::Running
    })
    .await;
    let task_b = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { runner_b.run(shutdown).await }
    });
    eventually("B on standby", || {
        status_b.borrow().state == RunnerState::Standby
    })
    .await;

    let mut last = store.head().await.unwrap();
    for i in 0..5 {
        last = handled(&store, &format!("s-{}", i % 3)).await.position;
    }
    eventually("A applied everything", || first.has_applied(last)).await;
    eventually_async("A saved", || async {
        checkpoint(&store, "leased").await == Some(last)
    })
    .await;
    assert_eq!(status_a.borrow().state, RunnerState::Running);
    assert_eq!(status_b.borrow().state, RunnerState::Standby);
    assert_eq!(second.calls(), 0, "the standby projects nothing");

    // A stops making progress, then dies (its lease is dropped with it).
    first.hold.store(true, Ordering::SeqCst);
    let calls = first.calls();
    let mut later = Vec::new();
    for i in 0..4 {
        later.push(handled(&store, &format!("s-{}", i % 2)).await.position);
    }
    eventually("A stuck on the batch", || first.calls() >= calls + 2).await;
    assert_eq!(checkpoint(&store, "leased").await, Some(last));
    task_a.abort();
    assert!(task_a.await.unwrap_err().is_cancelled());

    eventually("B takes over", || {
        status_b.borrow().state == RunnerState::Running
    })
    .await;
    let end = *later.last().unwrap();
    eventually("B applied the rest", || second.has_applied(end)).await;
    assert_eq!(second.applied(), later, "B resumes at A's checkpoint");
    let both: HashSet<Position> = first.applied().into_iter().collect();
    assert!(
        second.applied().iter().all(|p| !both.contains(p)),
        "nothing applied by both"
    );
    let mut union: Rows = first.rows();
    for (stream, versions) in second.rows() {
        union.entry(stream).or_default().extend(versions);
    }
    assert_eq!(union, clean_build(&store).await);

    shutdown.cancel();
    tokio::time::timeout(PATIENCE, task_b)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint(&store, "leased").await, Some(end));
    // The lease is free again: a new runner gets it at once.
    assert!(store.try_lease("leased").await.unwrap().is_some());
}

/// A runner whose claim another took (as after a freeze past its expiry)
/// cannot move the checkpoint: its save is fenced, it goes back to standby,
/// and it projects again once it holds the lease anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_lost_its_claim_cannot_move_the_checkpoint() {
    let store = MemoryStore::new();
    let projection = TestProjection::new("fenced");
    let runner = ProjectionRunner::new(store.clone(), Arc::clone(&projection))
        .with_options(fast(FailurePolicy::DeadLetter { max_attempts: 1 }));
    let status = runner.progress();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    let first = handled(&store, "s-1").await.position;
    eventually("applied", || projection.has_applied(first)).await;
    eventually_async("saved", || async {
        checkpoint(&store, "fenced").await == Some(first)
    })
    .await;

    // Another owner takes the claim behind the runner's back.
    let owners = store.partition_owners("fenced").await.unwrap();
    let holder = owners[0]
        .owner
        .clone()
        .expect("the runner's lease is a claim");
    store.release_claims("fenced", &holder).await.unwrap();
    let thief = store
        .claim("fenced", 1, "thief", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(thief[0].generation, owners[0].generation + 1);

    let second = handled(&store, "s-1").await.position;
    eventually("standby after the fenced save", || {
        status.borrow().state == RunnerState::Standby
    })
    .await;
    assert!(
        projection.has_applied(second),
        "the batch was applied before its save"
    );
    assert_eq!(
        checkpoint(&store, "fenced").await,
        Some(first),
        "a fenced runner moved the checkpoint"
    );

    store.release_claims("fenced", "thief").await.unwrap();
    eventually("running again", || {
        status.borrow().state == RunnerState::Running
    })
    .await;
    eventually_async("saved again", || async {
        checkpoint(&store, "fenced").await == Some(second)
    })
    .await;
    shutdown.cancel();
    finished(task).await;
}

// ---------------------------------------------------------------------------
// Read your own writes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_checkpoint_returns_once_the_runner_passes() {
    let store = MemoryStore::new();
    handled(&store, "s-1").await;
    let wanted = handled(&store, "s-2").await.position;
    let filter = EventFilter::types(["Added"]);

    let waiter = tokio::spawn({
        let store = store.clone();
        let filter = filter.clone();
        async move { wait_for_checkpoint(&store, "ryw", &filter, wanted, PATIENCE).await }
    });
    let projection = TestProjection::new("ryw");
    projection.delay_ms.store(50, Ordering::SeqCst);
    let runner = ProjectionRunner::new(store.clone(), Arc::clone(&projection))
        .with_options(fast(FailurePolicy::Stop { max_attempts: 1 }));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    let reached = waiter.await.unwrap().unwrap();
    assert!(reached >= wanted);
    assert!(projection.has_applied(wanted), "the projection has seen it");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// An event that becomes readable while the waiter reads (on PostgreSQL: its
/// transaction ends in between) is still waited for: the head the waiter
/// trusts must be older than its read.
#[tokio::test]
async fn wait_for_checkpoint_waits_for_an_event_that_becomes_readable_during_its_read() {
    // A memory store's positions depend only on what it holds: a scratch
    // store says where the second event will be.
    let scratch = MemoryStore::new();
    handled(&scratch, "s-1").await;
    let wanted = handled(&scratch, "s-2").await.position;

    let memory = MemoryStore::new();
    let first = handled(&memory, "s-1").await.position;
    memory.save_checkpoint("behind", first).await.unwrap();
    let store = Faulty::new(memory.clone());
    let first_read = AtomicBool::new(true);
    store.rewrite_read_all(move |page, _| {
        if first_read.swap(false, Ordering::SeqCst) {
            // Written just after this read took its view.
            let written = futures::executor::block_on(handled(&memory, "s-2"));
            assert_eq!(written.position, wanted);
        }
        page
    });
    let filter = EventFilter::types(["Added"]);
    let waited = wait_for_checkpoint(
        &store,
        "behind",
        &filter,
        wanted,
        Duration::from_millis(150),
    )
    .await;
    assert!(
        matches!(waited, Err(WaitError::Timeout { .. })),
        "nothing projected the event at {wanted} (the checkpoint is at {first}), yet the wait \
         ended with {waited:?}"
    );
}

#[tokio::test]
async fn wait_for_checkpoint_times_out_when_nothing_projects() {
    let store = MemoryStore::new();
    let filter = EventFilter::types(["Added"]);
    let wanted = handled(&store, "s-1").await.position;
    let start = Instant::now();
    let error = wait_for_checkpoint(
        &store,
        "nobody",
        &filter,
        wanted,
        Duration::from_millis(150),
    )
    .await
    .unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(150));
    match error {
        WaitError::Timeout {
            projection,
            checkpoint,
            wanted: w,
            waited,
        } => {
            assert_eq!(projection, "nobody");
            assert_eq!(checkpoint, Position::START);
            assert_eq!(w, wanted);
            assert!(waited >= Duration::from_millis(150));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }

    // An unhandled event behind an unapplied handled one still waits.
    let unhandled = add(&store, "s-1", "Ignored", false).await.position;
    assert!(matches!(
        wait_for_checkpoint(
            &store,
            "nobody",
            &filter,
            unhandled,
            Duration::from_millis(50)
        )
        .await,
        Err(WaitError::Timeout { .. })
    ));
}

#[tokio::test]
async fn wait_for_checkpoint_does_not_wait_for_events_the_projection_ignores() {
    let store = MemoryStore::new();
    let filter = EventFilter::types(["Added"]);
    let seen = handled(&store, "s-1").await;
    let projection = TestProjection::new("ignoring");
    let runner = ProjectionRunner::new(store.clone(), Arc::clone(&projection))
        .with_options(fast(FailurePolicy::Stop { max_attempts: 1 }));
    assert_eq!(runner.catch_up().await.unwrap(), seen.position);

    // A token from an event the projection does not handle: nothing to wait for.
    let unhandled = add(&store, "s-2", "Ignored", false).await.position;
    let start = Instant::now();
    let at = wait_for_checkpoint(&store, "ignoring", &filter, unhandled, PATIENCE)
        .await
        .unwrap();
    assert_eq!(at, seen.position);
    assert!(start.elapsed() < Duration::from_secs(1), "returned at once");

    // Still true when a handled event, not yet applied, comes after it.
    let pending = handled(&store, "s-1").await.position;
    let start = Instant::now();
    wait_for_checkpoint(&store, "ignoring", &filter, unhandled, PATIENCE)
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(1), "returned at once");
    // But the handled one itself is waited for.
    assert!(matches!(
        wait_for_checkpoint(
            &store,
            "ignoring",
            &filter,
            pending,
            Duration::from_millis(50)
        )
        .await,
        Err(WaitError::Timeout { .. })
    ));
    // Own writes of an unknown projection with no handled events: at once.
    let other = EventFilter::types(["Nothing"]);
    wait_for_checkpoint(&store, "fresh", &other, pending, Duration::from_millis(50))
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------
// Store outages

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_runner_rides_out_store_outages() {
    let memory = MemoryStore::new();
    let store = Faulty::new(memory.clone());
    let first = handled(&memory, "a").await;
    let projection = TestProjection::new("outages");
    let runner = ProjectionRunner::new(store.clone(), Arc::clone(&projection))
        .with_options(fast(FailurePolicy::DeadLetter { max_attempts: 1 }));
    let status = runner.progress();
    let shutdown = CancellationToken::new();
    store.fail(Operation::TryLease, 2);
    store.fail(Operation::LoadCheckpoint, 2);
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    eventually("first applied", || projection.has_applied(first.position)).await;

    // Every kind of store call fails a few times while events keep coming.
    let mut last = first;
    for (operation, times) in [
        (Operation::ReadAll, 3),
        (Operation::SaveClaimedCheckpoint, 3),
        (Operation::DeadLetters, 2),
    ] {
        store.fail(operation, times);
        for _ in 0..3 {
            last = handled(&memory, "a").await;
        }
        eventually(&format!("applied through a {operation:?} outage"), || {
            projection.has_applied(last.position) && store.pending_failures() == 0
                || task.is_finished()
        })
        .await;
        assert!(
            !task.is_finished(),
            "the runner gave up on a {operation:?} outage: {:?}",
            task.await
        );
    }
    // A poison event while dead-lettering fails: dead-lettered once the store is back.
    projection.broken.store(true, Ordering::SeqCst);
    store.fail(Operation::AddDeadLetters, 2);
    let poison = add(&memory, "p", "Added", true).await;
    let after = handled(&memory, "a").await;
    eventually_async("the poison dead-lettered despite the outage", || async {
        memory.dead_letters("outages").await.unwrap().len() == 1 || task.is_finished()
    })
    .await;
    assert!(
        !task.is_finished(),
        "the runner gave up on a dead-letter outage: {:?}",
        task.await
    );
    eventually("later events applied", || {
        projection.has_applied(after.position)
    })
    .await;
    assert!(!projection.has_applied(poison.position));
    assert!(status.borrow().retries > 0);

    shutdown.cancel();
    finished(task).await;
    assert_eq!(checkpoint(&memory, "outages").await, Some(after.position));
    let mut rows = projection.rows();
    rows.entry("p".into()).or_default().push(1);
    assert_eq!(rows, clean_build(&memory).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_cannot_apply_reports_a_lag_that_grows_while_idle() {
    let store = MemoryStore::new();
    let projection = TestProjection::new("frozen");
    let runner = ProjectionRunner::new(store.clone(), Arc::clone(&projection))
        .with_options(fast(FailurePolicy::DeadLetter { max_attempts: 3 }));
    let status = runner.progress();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    let first = handled(&store, "a").await;
    eventually("first applied", || projection.has_applied(first.position)).await;
    eventually("idle", || status.borrow().caught_up).await;
    assert_eq!(status.borrow().lag_seconds(), 0.0);

    // The read model stops answering; one event arrives, then nothing more.
    projection.hold.store(true, Ordering::SeqCst);
    let waiting = handled(&store, "a").await;
    eventually("failing", || status.borrow().last_error.is_some()).await;
    let failing = status.borrow().clone();
    assert!(!failing.caught_up, "{failing:?}");
    assert_eq!(failing.checkpoint, first.position);
    let recorded = store.read_stream("a", 2, 1).await.unwrap()[0].recorded_at;
    assert_eq!(failing.pending_since, Some(recorded));
    let lag = failing.lag_seconds();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        status.borrow().lag_seconds() >= lag + 0.25,
        "the lag did not grow: {lag} then {}",
        status.borrow().lag_seconds()
    );

    // Back: applied, lag gone.
    projection.hold.store(false, Ordering::SeqCst);
    eventually("applied", || projection.has_applied(waiting.position)).await;
    eventually("caught up", || status.borrow().caught_up).await;
    let healthy = status.borrow().clone();
    assert_eq!(healthy.pending_since, None);
    assert_eq!(healthy.last_error, None);
    assert_eq!(healthy.lag_seconds(), 0.0);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
