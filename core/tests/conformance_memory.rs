//! The conformance suite against the in-memory store, and proof that the
//! suite catches broken stores.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use annals::memory::MemoryStore;
use annals::subscription::{SubscriptionOptions, catch_up_then_live};
use annals::testing::conformance;
use annals::{
    AppendOptions, Appended, EventFilter, EventStore, EventStream, ExpectedVersion, NewEvent,
    Position, RecordedEvent, Snapshot, StoreError,
};
use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::watch;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_suite() {
    conformance::run(|| async { MemoryStore::new() }).await;
}

#[tokio::test(flavor = "current_thread")]
async fn memory_store_passes_on_a_single_thread() {
    conformance::run(|| async { MemoryStore::new() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_run_alone() {
    let store = MemoryStore::new();
    conformance::expected_version_exact(&store).await;
    conformance::idempotent_command(&store).await;
    conformance::repository_retries_conflicts(&store).await;
    assert!(conformance::CASES.contains(&"subscribe_with_concurrent_writers"));
}

#[tokio::test]
#[should_panic(expected = "no conformance case was selected")]
async fn selecting_nothing_fails() {
    conformance::run_matching(|| async { MemoryStore::new() }, |_| false).await;
}

/// What a broken store breaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Appends as if every expectation were `Any`.
    IgnoresExpectedVersion,
    /// `read_all` (and so `subscribe`) loses every fifth event.
    DropsEvents,
    /// `read_all` (and so `subscribe`) returns the first event of every page twice.
    DuplicatesEvents,
}

/// A `MemoryStore` with one deliberate bug.
#[derive(Clone)]
struct Broken {
    inner: MemoryStore,
    fault: Fault,
    /// Never fires: subscriptions poll, through the broken `read_all`.
    wake: watch::Receiver<u64>,
    _wake: std::sync::Arc<watch::Sender<u64>>,
}

impl Broken {
    fn new(fault: Fault) -> Self {
        let (tx, rx) = watch::channel(0);
        Self {
            inner: MemoryStore::new(),
            fault,
            wake: rx,
            _wake: std::sync::Arc::new(tx),
        }
    }
}

#[async_trait]
impl EventStore for Broken {
    async fn append_with(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<Appended, StoreError> {
        let expected = match self.fault {
            Fault::IgnoresExpectedVersion => ExpectedVersion::Any,
            _ => expected,
        };
        self.inner
            .append_with(stream, expected, events, options)
            .await
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<Appended>, StoreError> {
        self.inner.command_outcome(command_id).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        self.inner.stream_version(stream).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self.inner.read_all(after, limit, filter).await?;
        match self.fault {
            Fault::IgnoresExpectedVersion => {}
            Fault::DropsEvents => events.retain(|e| e.position.sequence() % 5 != 0),
            Fault::DuplicatesEvents => {
                if let Some(first) = events.first().cloned() {
                    events.insert(0, first);
                    events.truncate(limit.max(1));
                }
            }
        }
        Ok(events)
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.inner.head().await
    }

    fn subscribe(&self, after: Position, filter: EventFilter) -> EventStream {
        if self.fault == Fault::IgnoresExpectedVersion {
            return self.inner.subscribe(after, filter);
        }
        let options = SubscriptionOptions {
            poll_interval: Duration::from_millis(20),
            ..SubscriptionOptions::default()
        };
        catch_up_then_live(self.clone(), after, filter, self.wake.clone(), options)
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(stream).await
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        self.inner.save_checkpoint(name, position).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        self.inner.load_checkpoint(name).await
    }
}

/// Runs the whole suite against a broken store; returns the failure report.
async fn suite_failure(fault: Fault) -> String {
    let outcome = AssertUnwindSafe(conformance::run(move || async move { Broken::new(fault) }))
        .catch_unwind()
        .await;
    match outcome {
        Ok(()) => panic!("the conformance suite passed a broken store"),
        Err(panic) => match panic.downcast::<String>() {
            Ok(report) => *report,
            Err(_) => panic!("the suite failed without a report"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_fails_a_store_that_ignores_expected_versions() {
    let report = suite_failure(Fault::IgnoresExpectedVersion).await;
    for case in [
        "expected_version_no_stream",
        "expected_version_exact",
        "expected_version_exact_zero",
        "conflict_error_names_stream_and_versions",
        "failed_append_writes_nothing",
        "concurrent_appends_have_one_winner",
        "idempotent_command",
    ] {
        assert!(report.contains(case), "{case} did not fail:\n{report}");
    }
    assert!(!report.contains("snapshots_save_replace_load"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_fails_a_store_whose_log_drops_events() {
    let report = suite_failure(Fault::DropsEvents).await;
    for case in [
        "read_all_orders_across_streams",
        "read_all_after_position_and_limit",
        "subscribe_with_concurrent_writers",
    ] {
        assert!(report.contains(case), "{case} did not fail:\n{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_fails_a_store_whose_log_repeats_events() {
    let report = suite_failure(Fault::DuplicatesEvents).await;
    for case in [
        "read_all_orders_across_streams",
        "subscribe_catches_up_then_follows_live",
        "subscribe_with_concurrent_writers",
    ] {
        assert!(report.contains(case), "{case} did not fail:\n{report}");
    }
}
