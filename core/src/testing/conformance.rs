//! The conformance suite every [`EventStore`] must pass.
//!
//! A store crate runs the whole suite from a test, with a factory that makes
//! a fresh, isolated store (an empty database or schema) on every call:
//!
//! ```
//! use annals::memory::MemoryStore;
//! use annals::testing::conformance;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! // In a store crate: #[tokio::test(flavor = "multi_thread")] async fn conformance() { ... }
//! conformance::run_matching(|| async { MemoryStore::new() }, |case| case.starts_with("expected_version")).await;
//! # });
//! ```
//!
//! [`run`] runs every case with a store of its own, printing each case's
//! name to stderr, and panics at the end naming every case that failed and
//! why. Each case is also a public function that takes the store, so that a
//! failing case can be run alone while debugging:
//!
//! ```
//! # use annals::memory::MemoryStore;
//! # use annals::testing::conformance;
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! conformance::idempotent_append_by_event_id(&MemoryStore::new()).await;
//! # });
//! ```
//!
//! The store the factory makes must be empty (some cases check the whole
//! log and the head) and use [`AppendLimits::default`] (the invalid-input
//! case sends input just beyond those limits). Run the suite inside a Tokio
//! runtime with time enabled; a multi-threaded runtime makes the concurrency
//! cases meaningful (`#[tokio::test(flavor = "multi_thread")]`).
//!
//! What the suite covers: every [`ExpectedVersion`], conflicts and their
//! error, atomicity of failed appends, input validation, idempotency by
//! event id and by command id, stream and global reads (order, paging,
//! filters, head, positions), payload and metadata round trips,
//! subscriptions (catch-up, live, filtered, from a position, under many
//! concurrent writers), snapshots, checkpoints, and a [`Repository`] over
//! the store (execution, retry on conflict, idempotent commands, snapshots).

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::aggregate::{Aggregate, AggregateType, Handle};
use crate::envelope::{Metadata, NewEvent, RecordedEvent};
use crate::event::{DomainEvent, EventError, EventType};
use crate::payload::Payload;
use crate::position::Position;
use crate::repository::{CommandContext, ExecuteError, Repository};
use crate::store::{
    AppendLimits, AppendOptions, Appended, EventFilter, EventStore, EventStream, ExpectedVersion,
    Snapshot, StoreError,
};

/// How long one case may run before it counts as failed.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a subscription may stay silent while events are still owed.
const IDLE: Duration = Duration::from_secs(5);

/// How long a subscription is watched to make sure nothing more arrives.
const QUIET: Duration = Duration::from_millis(300);

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        /// The names of every case, in the order [`run`] runs them.
        pub const CASES: &[&str] = &[$(stringify!($case)),*];

        /// Runs the cases whose name `select` accepts, each with a fresh store
        /// from `factory`; returns how many ran and the failures (case, message).
        async fn run_cases<S, F, Fut>(
            factory: &F,
            select: &dyn Fn(&str) -> bool,
        ) -> (usize, Vec<(&'static str, String)>)
        where
            S: EventStore + Clone,
            F: Fn() -> Fut,
            Fut: Future<Output = S>,
        {
            let mut ran = 0;
            let mut failures = Vec::new();
            $(
                let name = stringify!($case);
                if select(name) {
                    ran += 1;
                    eprintln!("conformance: {name} ...");
                    let store = factory().await;
                    let outcome = AssertUnwindSafe(tokio::time::timeout(CASE_TIMEOUT, $case(&store)))
                        .catch_unwind()
                        .await;
                    match outcome {
                        Ok(Ok(())) => eprintln!("conformance: {name} ok"),
                        Ok(Err(_)) => {
                            eprintln!("conformance: {name} FAILED (timed out)");
                            failures.push((name, format!("timed out after {CASE_TIMEOUT:?}")));
                        }
                        Err(panic) => {
                            let message = panic_message(panic);
                            eprintln!("conformance: {name} FAILED: {message}");
                            failures.push((name, message));
                        }
                    }
                }
            )*
            (ran, failures)
        }
    };
}

suite![
    append_to_new_stream,
    expected_version_any,
    expected_version_no_stream,
    expected_version_exact,
    expected_version_exact_zero,
    conflict_error_names_stream_and_versions,
    failed_append_writes_nothing,
    concurrent_appends_have_one_winner,
    invalid_input_is_refused,
    idempotent_append_by_event_id,
    duplicate_event_id_is_refused,
    idempotent_command,
    read_stream_from_version,
    read_stream_with_limit,
    read_unknown_stream,
    read_all_orders_across_streams,
    read_all_after_position_and_limit,
    read_all_filters_by_type,
    head_tracks_the_last_event,
    appended_positions_match_read_back,
    payload_and_metadata_round_trip,
    subscribe_catches_up_then_follows_live,
    subscribe_with_concurrent_writers,
    subscribe_with_filter,
    subscribe_after_position,
    snapshots_save_replace_load,
    checkpoints_save_overwrite_load,
    repository_executes_commands,
    repository_retries_conflicts,
    repository_command_idempotency,
    repository_snapshots,
];

/// Runs every case, each against a fresh store from `factory`, and panics
/// naming each case that failed.
///
/// The factory must return an empty, isolated store with the default
/// [`AppendLimits`]. Case names go to stderr as they run.
pub async fn run<S, F, Fut>(factory: F)
where
    S: EventStore + Clone,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    run_matching(factory, |_| true).await;
}

/// Runs the cases whose name (see [`CASES`]) `select` accepts, and panics
/// naming each one that failed, or when `select` accepts none.
pub async fn run_matching<S, F, Fut>(factory: F, select: impl Fn(&str) -> bool)
where
    S: EventStore + Clone,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let (ran, failures) = run_cases(&factory, &select).await;
    assert!(ran > 0, "no conformance case was selected");
    if !failures.is_empty() {
        let mut report = format!(
            "event store conformance: {} of {ran} cases failed:",
            failures.len()
        );
        for (case, message) in &failures {
            report.push_str(&format!("\n  {case}: {}", shorten(message)));
        }
        panic!("{report}");
    }
    eprintln!("conformance: all {ran} cases passed");
}

/// A failure message cut to a readable length for the final report (the
/// whole message was printed when the case failed).
fn shorten(message: &str) -> String {
    const MAX: usize = 1500;
    match message.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}... (cut; see the case's output above)", &message[..cut]),
        None => message.to_owned(),
    }
}

fn panic_message(panic: Box<dyn Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(message) => *message,
        Err(panic) => match panic.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "panicked with a non-string payload".to_owned(),
        },
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const TICK: &str = "conformance.Tick";

/// A stream name no other case (or earlier run against a shared database) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

fn event(event_type: &str, n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        payload: json!({ "n": n }).into(),
        metadata: Metadata::default(),
    }
}

fn ticks(count: u64) -> Vec<NewEvent> {
    (1..=count).map(|n| event(TICK, n)).collect()
}

fn ids(events: &[NewEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

fn recorded_ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.stream_version).collect()
}

async fn append<S: EventStore>(
    store: &S,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Appended {
    store
        .append(stream, expected, events)
        .await
        .unwrap_or_else(|e| panic!("append to {stream:?} ({expected}) failed: {e}"))
}

async fn append_with<S: EventStore>(
    store: &S,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    command_id: Uuid,
) -> Appended {
    store
        .append_with(
            stream,
            expected,
            events,
            AppendOptions {
                command_id: Some(command_id),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("append to {stream:?} with command {command_id} failed: {e}"))
}

async fn version<S: EventStore>(store: &S, stream: &str) -> u64 {
    store
        .stream_version(stream)
        .await
        .unwrap_or_else(|e| panic!("stream_version({stream:?}) failed: {e}"))
}

async fn read_stream<S: EventStore>(
    store: &S,
    stream: &str,
    from: u64,
    limit: usize,
) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, from, limit)
        .await
        .unwrap_or_else(|e| panic!("read_stream({stream:?}, {from}, {limit}) failed: {e}"))
}

async fn whole_stream<S: EventStore>(store: &S, stream: &str) -> Vec<RecordedEvent> {
    read_stream(store, stream, 1, usize::MAX).await
}

async fn read_all<S: EventStore>(
    store: &S,
    after: Position,
    limit: usize,
    filter: &EventFilter,
) -> Vec<RecordedEvent> {
    store
        .read_all(after, limit, filter)
        .await
        .unwrap_or_else(|e| panic!("read_all(after {after}, limit {limit}) failed: {e}"))
}

/// The whole log after `after`, read in pages.
async fn read_all_paged<S: EventStore>(
    store: &S,
    after: Position,
    page: usize,
    filter: &EventFilter,
) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut from = after;
    loop {
        let batch = read_all(store, from, page, filter).await;
        assert!(
            batch.len() <= page,
            "read_all returned {} events with limit {page}",
            batch.len()
        );
        match batch.last() {
            Some(last) => from = last.position,
            None => return events,
        }
        events.extend(batch);
    }
}

async fn head<S: EventStore>(store: &S) -> Position {
    store
        .head()
        .await
        .unwrap_or_else(|e| panic!("head() failed: {e}"))
}

/// Waits until `head` reaches a position an append returned. A store may
/// show committed events to readers a little later (the PostgreSQL store
/// waits for older transactions), but not never.
async fn settle<S: EventStore>(store: &S, position: Position) {
    let deadline = tokio::time::Instant::now() + IDLE;
    loop {
        let head = head(store).await;
        if head >= position {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "position {position} returned by an append never became visible: \
             the head stayed at {head} for {IDLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn join<T>(handle: JoinHandle<T>) -> T {
    match handle.await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("task did not finish: {error}"),
    }
}

fn assert_conflict(
    result: Result<Appended, StoreError>,
    stream: &str,
    expected: ExpectedVersion,
    actual: u64,
) {
    match result {
        Err(StoreError::Conflict {
            stream: s,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(s, stream, "conflict names the wrong stream");
            assert_eq!(
                e, expected,
                "conflict on {stream:?} names the wrong expectation"
            );
            assert_eq!(
                a, actual,
                "conflict on {stream:?} names the wrong actual version"
            );
        }
        Err(other) => panic!(
            "append to {stream:?} expecting {expected} (actual {actual}) failed with {other:?}, \
             not a conflict"
        ),
        Ok(done) => panic!(
            "append to {stream:?} expecting {expected} succeeded ({done:?}) although the stream \
             is at version {actual}"
        ),
    }
}

fn assert_strictly_increasing(events: &[RecordedEvent], what: &str) {
    for pair in events.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "{what}: position {} ({} v{}) is followed by {} ({} v{})",
            pair[0].position,
            pair[0].stream_id,
            pair[0].stream_version,
            pair[1].position,
            pair[1].stream_id,
            pair[1].stream_version,
        );
    }
}

/// Each stream's versions, in the order given, are 1, 2, 3, ... with no gap.
fn assert_streams_in_order(events: &[RecordedEvent], what: &str) {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for e in events {
        let previous = last.insert(&e.stream_id, e.stream_version).unwrap_or(0);
        assert_eq!(
            e.stream_version,
            previous + 1,
            "{what}: stream {:?} version {} follows version {previous}",
            e.stream_id,
            e.stream_version
        );
    }
}

fn assert_once_each(events: &[RecordedEvent], what: &str) {
    let mut seen = HashSet::new();
    for e in events {
        assert!(
            seen.insert(e.event_id),
            "{what}: event {} ({} v{}) delivered twice",
            e.event_id,
            e.stream_id,
            e.stream_version
        );
    }
}

/// The next `count` events of a subscription; fails if it falls silent for
/// [`IDLE`] while events are still owed.
async fn next_events(sub: &mut EventStream, count: usize, what: &str) -> Vec<RecordedEvent> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        match tokio::time::timeout(IDLE, sub.next()).await {
            Ok(Some(Ok(event))) => got.push(event),
            Ok(Some(Err(error))) => panic!("{what}: subscription failed: {error}"),
            Ok(None) => panic!(
                "{what}: subscription ended after {} of {count} events",
                got.len()
            ),
            Err(_) => panic!(
                "{what}: subscription delivered {} of {count} events, then nothing for {IDLE:?}",
                got.len()
            ),
        }
    }
    got
}

/// Fails if the subscription delivers anything within [`QUIET`].
async fn assert_quiet(sub: &mut EventStream, what: &str) {
    if let Ok(Some(item)) = tokio::time::timeout(QUIET, sub.next()).await {
        match item {
            Ok(e) => panic!(
                "{what}: unexpected extra event {} ({} v{} at {})",
                e.event_id, e.stream_id, e.stream_version, e.position
            ),
            Err(error) => panic!("{what}: subscription failed: {error}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Appends and expected versions
// ---------------------------------------------------------------------------

/// Appending to a new stream creates it at versions 1..n, and the events read
/// back carry the stream, versions, ids, types, payloads and positions.
pub async fn append_to_new_stream<S: EventStore + Clone>(store: &S) {
    let stream = unique("append");
    assert_eq!(
        version(store, &stream).await,
        0,
        "a new stream has version 0"
    );

    let before = chrono::Utc::now();
    let batch = ticks(3);
    let sent = batch.clone();
    let done = append(store, &stream, ExpectedVersion::NoStream, batch).await;
    let after = chrono::Utc::now();
    assert_eq!(done.first_version, 1, "first_version of a new stream");
    assert_eq!(done.stream_version, 3, "stream_version after 3 events");
    assert!(!done.replayed, "a first append is not a replay");
    assert_eq!(
        version(store, &stream).await,
        3,
        "stream_version after the append"
    );

    let read = whole_stream(store, &stream).await;
    assert_eq!(versions(&read), [1, 2, 3], "versions read back");
    assert_eq!(recorded_ids(&read), ids(&sent), "event ids read back");
    for (got, sent) in read.iter().zip(&sent) {
        assert_eq!(got.stream_id, stream, "stream id read back");
        assert_eq!(got.event_type, sent.event_type, "event type read back");
        assert_eq!(
            got.schema_version, sent.schema_version,
            "schema version read back"
        );
        assert_eq!(got.payload, sent.payload, "payload read back");
        assert_eq!(got.metadata, sent.metadata, "metadata read back");
        let slack = chrono::Duration::minutes(10);
        assert!(
            got.recorded_at > before - slack && got.recorded_at < after + slack,
            "recorded_at {} is not the time of the append ({before})",
            got.recorded_at
        );
    }
    assert_strictly_increasing(&read, "a new stream");
    assert_eq!(
        read[2].position, done.position,
        "append returns the last event's position"
    );

    let more = append(store, &stream, ExpectedVersion::Exact(3), ticks(2)).await;
    assert_eq!(
        (more.first_version, more.stream_version),
        (4, 5),
        "outcome of a second append"
    );
    assert!(
        more.position > done.position,
        "a later append has a later position"
    );
    assert_eq!(
        versions(&whole_stream(store, &stream).await),
        [1, 2, 3, 4, 5],
        "versions after a second append"
    );
}

/// `ExpectedVersion::Any` appends to new and existing streams alike.
pub async fn expected_version_any<S: EventStore + Clone>(store: &S) {
    let stream = unique("any");
    let first = append(store, &stream, ExpectedVersion::Any, ticks(2)).await;
    assert_eq!(
        (first.first_version, first.stream_version),
        (1, 2),
        "outcome of Any on a new stream"
    );
    let second = append(store, &stream, ExpectedVersion::Any, ticks(1)).await;
    assert_eq!(
        (second.first_version, second.stream_version),
        (3, 3),
        "outcome of Any on an existing stream"
    );
    assert_eq!(
        version(store, &stream).await,
        3,
        "stream_version after Any appends"
    );
}

/// `NoStream` creates a stream and conflicts once it exists.
pub async fn expected_version_no_stream<S: EventStore + Clone>(store: &S) {
    let stream = unique("no-stream");
    let done = append(store, &stream, ExpectedVersion::NoStream, ticks(1)).await;
    assert_eq!(
        done.stream_version, 1,
        "outcome of NoStream on a new stream"
    );
    let result = store
        .append(&stream, ExpectedVersion::NoStream, ticks(1))
        .await;
    assert_conflict(result, &stream, ExpectedVersion::NoStream, 1);
    assert_eq!(
        version(store, &stream).await,
        1,
        "a conflicting append moved the version"
    );
}

/// `Exact(n)` appends only when the stream is at `n`, neither behind nor ahead.
pub async fn expected_version_exact<S: EventStore + Clone>(store: &S) {
    let stream = unique("exact");
    append(store, &stream, ExpectedVersion::NoStream, ticks(2)).await;
    let done = append(store, &stream, ExpectedVersion::Exact(2), ticks(1)).await;
    assert_eq!(
        (done.first_version, done.stream_version),
        (3, 3),
        "outcome of Exact at the right version"
    );

    let stale = store
        .append(&stream, ExpectedVersion::Exact(2), ticks(1))
        .await;
    assert_conflict(stale, &stream, ExpectedVersion::Exact(2), 3);
    let ahead = store
        .append(&stream, ExpectedVersion::Exact(5), ticks(1))
        .await;
    assert_conflict(ahead, &stream, ExpectedVersion::Exact(5), 3);

    let unknown = unique("exact-unknown");
    let result = store
        .append(&unknown, ExpectedVersion::Exact(1), ticks(1))
        .await;
    assert_conflict(result, &unknown, ExpectedVersion::Exact(1), 0);
    assert_eq!(
        version(store, &unknown).await,
        0,
        "a conflicting append created the stream"
    );
    assert_eq!(
        version(store, &stream).await,
        3,
        "a conflicting append moved the version"
    );
}

/// `Exact(0)` behaves as `NoStream`.
pub async fn expected_version_exact_zero<S: EventStore + Clone>(store: &S) {
    let stream = unique("exact-zero");
    let done = append(store, &stream, ExpectedVersion::Exact(0), ticks(2)).await;
    assert_eq!(
        (done.first_version, done.stream_version),
        (1, 2),
        "outcome of Exact(0) on a new stream"
    );
    let result = store
        .append(&stream, ExpectedVersion::Exact(0), ticks(1))
        .await;
    assert_conflict(result, &stream, ExpectedVersion::Exact(0), 2);
}

/// A conflict names the stream, the expectation and the actual version, and
/// is not transient.
pub async fn conflict_error_names_stream_and_versions<S: EventStore + Clone>(store: &S) {
    let stream = unique("conflict");
    append(store, &stream, ExpectedVersion::Any, ticks(4)).await;
    let error = store
        .append(&stream, ExpectedVersion::Exact(2), ticks(1))
        .await
        .expect_err("appending at a stale version must fail");
    assert!(!error.is_transient(), "a conflict is not transient");
    let message = error.to_string();
    assert!(
        message.contains(&stream),
        "{message:?} does not name the stream"
    );
    assert_conflict(Err(error), &stream, ExpectedVersion::Exact(2), 4);
}

/// A refused append writes nothing: not to the stream, not to the log, and
/// its event ids stay free.
pub async fn failed_append_writes_nothing<S: EventStore + Clone>(store: &S) {
    let stream = unique("atomic");
    let first = append(store, &stream, ExpectedVersion::NoStream, ticks(2)).await;
    settle(store, first.position).await;
    let head_before = head(store).await;
    let stream_before = whole_stream(store, &stream).await;

    let batch = ticks(3);
    let result = store
        .append(&stream, ExpectedVersion::Exact(1), batch.clone())
        .await;
    assert_conflict(result, &stream, ExpectedVersion::Exact(1), 2);
    let result = store
        .append(&stream, ExpectedVersion::NoStream, batch.clone())
        .await;
    assert_conflict(result, &stream, ExpectedVersion::NoStream, 2);

    assert_eq!(
        version(store, &stream).await,
        2,
        "a failed append moved the version"
    );
    assert_eq!(
        whole_stream(store, &stream).await,
        stream_before,
        "a failed append wrote events"
    );
    assert_eq!(
        head(store).await,
        head_before,
        "a failed append moved the head"
    );
    let leaked = read_all(store, head_before, 100, &EventFilter::all()).await;
    assert!(
        leaked.is_empty(),
        "a failed append reached the log: {leaked:?}"
    );

    // The ids of the refused events were not recorded.
    let done = append(store, &stream, ExpectedVersion::Exact(2), batch).await;
    assert!(!done.replayed, "ids of a failed append were kept");
    assert_eq!(
        (done.first_version, done.stream_version),
        (3, 5),
        "outcome of the append after the failed ones"
    );
}

/// Of many writers that race to create the same stream, exactly one wins;
/// the others get a conflict naming version 1.
pub async fn concurrent_appends_have_one_winner<S: EventStore + Clone>(store: &S) {
    const WRITERS: usize = 10;
    let stream = unique("race");
    let barrier = Arc::new(Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (store, stream, barrier) = (store.clone(), stream.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .append(&stream, ExpectedVersion::Exact(0), ticks(2))
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match join(task).await {
            Ok(done) => {
                winners += 1;
                assert_eq!(
                    (done.first_version, done.stream_version),
                    (1, 2),
                    "the winner's outcome"
                );
            }
            result => assert_conflict(result, &stream, ExpectedVersion::Exact(0), 2),
        }
    }
    assert_eq!(winners, 1, "exactly one racing writer must win");
    assert_eq!(version(store, &stream).await, 2, "version after the race");
    assert_eq!(
        whole_stream(store, &stream).await.len(),
        2,
        "events after the race"
    );
}

/// Malformed appends are refused with `InvalidInput` before anything is
/// written: empty or oversized stream ids, empty or oversized batches, blank
/// types, schema version 0, an id twice in one batch, an oversized payload.
pub async fn invalid_input_is_refused<S: EventStore + Clone>(store: &S) {
    let limits = AppendLimits::default();
    let stream = unique("invalid");
    let head_before = head(store).await;

    let mut blank_type = event(TICK, 1);
    blank_type.event_type = "  ".into();
    let mut version_zero = event(TICK, 1);
    version_zero.schema_version = 0;
    let twice = event(TICK, 1);
    let mut huge = event(TICK, 1);
    huge.payload = json!({ "blob": "x".repeat(limits.max_payload_bytes + 1) }).into();
    let mut nul = event(TICK, 1);
    nul.payload = json!({ "note": "a\u{0}b" }).into();
    let too_many = (0..=limits.max_batch as u64)
        .map(|n| event(TICK, n))
        .collect();

    let long_stream = "s".repeat(limits.max_stream_id_len + 1);
    let cases: Vec<(&str, &str, Vec<NewEvent>)> = vec![
        ("empty stream id", "", ticks(1)),
        ("blank stream id", "   ", ticks(1)),
        ("oversized stream id", &long_stream, ticks(1)),
        ("empty batch", &stream, Vec::new()),
        ("oversized batch", &stream, too_many),
        (
            "blank event type",
            &stream,
            vec![event(TICK, 0), blank_type],
        ),
        ("schema version 0", &stream, vec![version_zero]),
        ("id twice in one batch", &stream, vec![twice.clone(), twice]),
        ("oversized payload", &stream, vec![event(TICK, 0), huge]),
        ("NUL in a payload", &stream, vec![event(TICK, 0), nul]),
    ];
    for (what, stream_id, events) in cases {
        let command_id = Uuid::new_v4();
        let result = store
            .append_with(
                stream_id,
                ExpectedVersion::Any,
                events,
                AppendOptions {
                    command_id: Some(command_id),
                },
            )
            .await;
        match result {
            Err(StoreError::InvalidInput(_)) => {}
            Err(other) => panic!("{what}: refused with {other:?}, not InvalidInput"),
            Ok(done) => panic!("{what}: accepted ({done:?})"),
        }
        assert_eq!(
            version(store, stream_id).await,
            0,
            "{what}: the stream was written"
        );
        assert_eq!(
            head(store).await,
            head_before,
            "{what}: the log was written"
        );
        let outcome = store
            .command_outcome(command_id)
            .await
            .unwrap_or_else(|e| panic!("command_outcome failed: {e}"));
        assert_eq!(outcome, None, "{what}: the command id was recorded");
    }
}

// ---------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------

/// Appending events whose ids are already stored, in order, in that stream
/// writes nothing and returns the first outcome, whatever the expectation.
pub async fn idempotent_append_by_event_id<S: EventStore + Clone>(store: &S) {
    let stream = unique("idempotent");
    let batch = ticks(2);
    let first = append(store, &stream, ExpectedVersion::NoStream, batch.clone()).await;
    settle(store, first.position).await;
    let head_after_first = head(store).await;

    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(2),
        ExpectedVersion::Any,
    ] {
        let again = store
            .append(&stream, expected, batch.clone())
            .await
            .unwrap_or_else(|e| panic!("re-appending the same events ({expected}) failed: {e}"));
        assert!(
            again.replayed,
            "re-append ({expected}) is not marked replayed"
        );
        assert_eq!(
            (again.first_version, again.stream_version, again.position),
            (first.first_version, first.stream_version, first.position),
            "re-append ({expected}) does not return the first outcome"
        );
    }
    assert_eq!(
        version(store, &stream).await,
        2,
        "a replayed append wrote events"
    );
    assert_eq!(
        head(store).await,
        head_after_first,
        "a replayed append moved the head"
    );

    // Still a replay after the stream moved on.
    let later = append(store, &stream, ExpectedVersion::Exact(2), ticks(1)).await;
    settle(store, later.position).await;
    let again = append(store, &stream, ExpectedVersion::NoStream, batch.clone()).await;
    assert!(again.replayed);
    assert_eq!(
        (again.first_version, again.stream_version, again.position),
        (1, 2, first.position)
    );

    // One event of the batch, re-sent at its own version.
    let second = vec![batch[1].clone()];
    let again = append(store, &stream, ExpectedVersion::Exact(1), second).await;
    assert!(
        again.replayed,
        "re-sending the second event alone is not a replay"
    );
    assert_eq!(
        (again.first_version, again.stream_version, again.position),
        (2, 2, first.position)
    );

    assert_eq!(
        version(store, &stream).await,
        3,
        "stream_version after replays"
    );
    assert_eq!(head(store).await, later.position, "head after replays");
    let events = whole_stream(store, &stream).await;
    assert_eq!(events.len(), 3, "events after replays");
    assert_once_each(&events, "stream after replays");
}

/// An event id stored elsewhere (another stream, or out of order, or only
/// part of the batch) is refused with `DuplicateEvent`; nothing is written.
pub async fn duplicate_event_id_is_refused<S: EventStore + Clone>(store: &S) {
    let stream = unique("dup");
    let other = unique("dup-other");
    let batch = ticks(2);
    let (a, b) = (batch[0].clone(), batch[1].clone());
    let first = append(store, &stream, ExpectedVersion::NoStream, batch).await;
    settle(store, first.position).await;
    let head_before = head(store).await;

    let expect_duplicate =
        |what: &str, result: Result<Appended, StoreError>, id: Option<(Uuid, u64)>| match result {
            Err(StoreError::DuplicateEvent {
                event_id,
                stream: at,
                stream_version,
            }) => {
                if let Some((id, v)) = id {
                    assert_eq!(event_id, id, "{what}: names the wrong event id");
                    assert_eq!(at, stream, "{what}: names the wrong stream");
                    assert_eq!(stream_version, v, "{what}: names the wrong version");
                }
            }
            Err(other) => panic!("{what}: refused with {other:?}, not DuplicateEvent"),
            Ok(done) => panic!("{what}: accepted ({done:?})"),
        };

    let result = store
        .append(&other, ExpectedVersion::Any, vec![a.clone()])
        .await;
    expect_duplicate("an id of another stream", result, Some((a.event_id, 1)));
    let result = store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![event(TICK, 9), b.clone()],
        )
        .await;
    expect_duplicate("a new id with a stored one", result, Some((b.event_id, 2)));
    let result = store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![a.clone(), event(TICK, 9)],
        )
        .await;
    expect_duplicate("a stored id with a new one", result, Some((a.event_id, 1)));
    let result = store
        .append(&stream, ExpectedVersion::Any, vec![b, a])
        .await;
    expect_duplicate("stored ids out of order", result, None);

    assert_eq!(
        version(store, &other).await,
        0,
        "a refused append created the stream"
    );
    assert_eq!(
        version(store, &stream).await,
        2,
        "a refused append moved the version"
    );
    assert_eq!(
        head(store).await,
        head_before,
        "a refused append moved the head"
    );
}

/// A command id that already ran makes the append a no-op that returns the
/// first outcome, whatever the events and expectation; `command_outcome`
/// returns it. A failed append does not record its command id.
pub async fn idempotent_command<S: EventStore + Clone>(store: &S) {
    let stream = unique("command");
    let command = Uuid::new_v4();
    assert_eq!(
        store
            .command_outcome(command)
            .await
            .expect("command_outcome"),
        None,
        "an unknown command has no outcome"
    );

    let first = append_with(store, &stream, ExpectedVersion::NoStream, ticks(2), command).await;
    assert!(!first.replayed);
    settle(store, first.position).await;
    let head_after_first = head(store).await;

    let other_events = ticks(1);
    let again = append_with(
        store,
        &stream,
        ExpectedVersion::NoStream,
        other_events.clone(),
        command,
    )
    .await;
    assert!(
        again.replayed,
        "a second run of a command is not marked replayed"
    );
    assert_eq!(
        (again.first_version, again.stream_version, again.position),
        (first.first_version, first.stream_version, first.position),
        "a second run of a command does not return the first outcome"
    );
    let elsewhere = append_with(
        store,
        &unique("command-other"),
        ExpectedVersion::Any,
        ticks(1),
        command,
    )
    .await;
    assert!(elsewhere.replayed, "a command id is global, not per stream");
    assert_eq!(
        elsewhere.position, first.position,
        "a command replayed on another stream returns the first position"
    );

    assert_eq!(
        version(store, &stream).await,
        2,
        "a replayed command wrote events"
    );
    assert_eq!(
        head(store).await,
        head_after_first,
        "a replayed command moved the head"
    );

    let outcome = store
        .command_outcome(command)
        .await
        .expect("command_outcome")
        .expect("the command ran, so it has an outcome");
    assert_eq!(
        (
            outcome.first_version,
            outcome.stream_version,
            outcome.position
        ),
        (first.first_version, first.stream_version, first.position)
    );

    // The events of the replayed command were not stored: they append normally.
    let done = append(store, &stream, ExpectedVersion::Exact(2), other_events).await;
    assert!(!done.replayed);

    // A command whose append failed did not run.
    let failed = Uuid::new_v4();
    let result = store
        .append_with(
            &stream,
            ExpectedVersion::Exact(1),
            ticks(1),
            AppendOptions {
                command_id: Some(failed),
            },
        )
        .await;
    assert_conflict(result, &stream, ExpectedVersion::Exact(1), 3);
    assert_eq!(
        store
            .command_outcome(failed)
            .await
            .expect("command_outcome"),
        None,
        "a failed command was recorded"
    );
    let retried = append_with(store, &stream, ExpectedVersion::Exact(3), ticks(1), failed).await;
    assert!(
        !retried.replayed,
        "retrying a failed command was treated as a replay"
    );
    assert_eq!(
        retried.stream_version, 4,
        "outcome of a retried failed command"
    );
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// `read_stream` starts at `from_version` (0 reads from the start).
pub async fn read_stream_from_version<S: EventStore + Clone>(store: &S) {
    let stream = unique("read-from");
    append(store, &stream, ExpectedVersion::NoStream, ticks(3)).await;
    append(store, &stream, ExpectedVersion::Exact(3), ticks(2)).await;
    for (from, expected) in [
        (0, vec![1, 2, 3, 4, 5]),
        (1, vec![1, 2, 3, 4, 5]),
        (3, vec![3, 4, 5]),
        (5, vec![5]),
        (6, vec![]),
        (100, vec![]),
    ] {
        let read = read_stream(store, &stream, from, 100).await;
        assert_eq!(versions(&read), expected, "read_stream from version {from}");
        assert!(read.iter().all(|e| e.stream_id == stream));
    }
}

/// `read_stream` returns at most `limit` events.
pub async fn read_stream_with_limit<S: EventStore + Clone>(store: &S) {
    let stream = unique("read-limit");
    append(store, &stream, ExpectedVersion::NoStream, ticks(5)).await;
    for (from, limit, expected) in [
        (1, 2, vec![1, 2]),
        (2, 2, vec![2, 3]),
        (4, 10, vec![4, 5]),
        (5, 1, vec![5]),
        (1, 0, vec![]),
    ] {
        let read = read_stream(store, &stream, from, limit).await;
        assert_eq!(
            versions(&read),
            expected,
            "read_stream from {from} limit {limit}"
        );
    }
}

/// An unknown stream reads as empty at version 0, even when a stream whose
/// name starts the same exists.
pub async fn read_unknown_stream<S: EventStore + Clone>(store: &S) {
    let stream = unique("unknown");
    assert!(whole_stream(store, &stream).await.is_empty());
    assert_eq!(
        version(store, &stream).await,
        0,
        "an unknown stream's version"
    );
    append(
        store,
        &format!("{stream}-x"),
        ExpectedVersion::Any,
        ticks(2),
    )
    .await;
    append(
        store,
        &stream[..stream.len() - 1],
        ExpectedVersion::Any,
        ticks(2),
    )
    .await;
    assert!(whole_stream(store, &stream).await.is_empty());
    assert_eq!(
        version(store, &stream).await,
        0,
        "a stream with a similar name leaked into an unknown one"
    );
}

/// The global log holds every event of every stream, in the order the
/// appends happened, with strictly increasing positions.
pub async fn read_all_orders_across_streams<S: EventStore + Clone>(store: &S) {
    let start = head(store).await;
    let streams: Vec<_> = (0..3).map(|i| unique(&format!("all-{i}"))).collect();
    let mut sent = Vec::new();
    let mut outcomes = Vec::new();
    for i in 0..12 {
        let batch = ticks(i % 3 + 1);
        sent.extend(ids(&batch));
        let done = append(store, &streams[i as usize % 3], ExpectedVersion::Any, batch).await;
        outcomes.push(done);
    }
    settle(store, outcomes[outcomes.len() - 1].position).await;
    let all = read_all_paged(store, start, 1000, &EventFilter::all()).await;
    assert_eq!(
        recorded_ids(&all),
        sent,
        "read_all is not the events in append order"
    );
    assert_strictly_increasing(&all, "read_all");
    assert_streams_in_order(&all, "read_all");
    for done in outcomes {
        assert!(
            all.iter().any(|e| e.position == done.position),
            "the position {} an append returned is not in the log",
            done.position
        );
    }
}

/// `read_all` reads strictly after a position, at most `limit` events, and
/// pages through the log without gaps or repeats.
pub async fn read_all_after_position_and_limit<S: EventStore + Clone>(store: &S) {
    let start = head(store).await;
    let stream = unique("page");
    let other = unique("page-other");
    let mut tokens = Vec::new();
    for i in 0..5 {
        let target = if i % 2 == 0 { &stream } else { &other };
        tokens.push(
            append(store, target, ExpectedVersion::Any, ticks(2))
                .await
                .position,
        );
    }
    settle(store, tokens[4]).await;
    let all = read_all(store, start, 100, &EventFilter::all()).await;
    assert_eq!(all.len(), 10, "read_all of 5 appends of 2 events");

    for k in 0..all.len() {
        let rest = read_all(store, all[k].position, 100, &EventFilter::all()).await;
        assert_eq!(
            recorded_ids(&rest),
            recorded_ids(&all[k + 1..]),
            "read_all after event {k} ({})",
            all[k].position
        );
    }
    for (i, token) in tokens.iter().enumerate() {
        let rest = read_all(store, *token, 100, &EventFilter::all()).await;
        assert_eq!(
            rest.len(),
            8 - 2 * i,
            "read_all after the token of append {i}"
        );
    }
    let first_three = read_all(store, start, 3, &EventFilter::all()).await;
    assert_eq!(
        recorded_ids(&first_three),
        recorded_ids(&all[..3]),
        "read_all with limit 3"
    );
    assert!(
        read_all(store, start, 0, &EventFilter::all())
            .await
            .is_empty(),
        "limit 0"
    );
    for page in [1, 3, 4] {
        let paged = read_all_paged(store, start, page, &EventFilter::all()).await;
        assert_eq!(recorded_ids(&paged), recorded_ids(&all), "paging by {page}");
    }
    let end = head(store).await;
    assert!(
        read_all(store, end, 10, &EventFilter::all())
            .await
            .is_empty(),
        "after the head"
    );
}

/// A type filter keeps only those types, and `limit` counts the events kept.
pub async fn read_all_filters_by_type<S: EventStore + Clone>(store: &S) {
    let start = head(store).await;
    let suffix = Uuid::new_v4().simple().to_string();
    let [a, b, c] = ["A", "B", "C"].map(|t| format!("conformance.{t}-{suffix}"));
    let streams = [unique("filter"), unique("filter")];
    let mut last = Position::START;
    for i in 0..12u64 {
        let kind = [&a, &b, &c][i as usize % 3];
        let batch = vec![event(kind, i), event(&b, i)];
        last = append(store, &streams[i as usize % 2], ExpectedVersion::Any, batch)
            .await
            .position;
    }
    settle(store, last).await;
    let all = read_all_paged(store, start, 1000, &EventFilter::all()).await;

    let a_or_c = EventFilter::types([a.clone(), c.clone()]);
    let wanted: Vec<_> = all
        .iter()
        .filter(|e| e.event_type == a || e.event_type == c)
        .map(|e| e.event_id)
        .collect();
    assert_eq!(wanted.len(), 8, "events of types A and C written");
    let got = read_all(store, start, 100, &a_or_c).await;
    assert_eq!(recorded_ids(&got), wanted, "read_all filtered by [A, C]");
    for page in [1, 3] {
        let paged = read_all_paged(store, start, page, &a_or_c).await;
        assert_eq!(recorded_ids(&paged), wanted, "filtered paging by {page}");
    }
    let two = read_all(store, start, 2, &EventFilter::types([a.clone()])).await;
    assert_eq!(two.len(), 2, "limit counts the events the filter keeps");
    assert!(two.iter().all(|e| e.event_type == a));
    let rest = read_all(
        store,
        two[1].position,
        100,
        &EventFilter::types([a.clone()]),
    )
    .await;
    assert_eq!(rest.len(), 2, "filtered read after a position");

    let none = EventFilter::types([format!("conformance.Unknown-{suffix}")]);
    assert!(
        read_all(store, start, 100, &none).await.is_empty(),
        "unknown type"
    );
    let empty = EventFilter::types(Vec::<String>::new());
    assert!(
        read_all(store, start, 100, &empty).await.is_empty(),
        "an empty type list keeps nothing"
    );
}

/// `head` is `START` on an empty store, then the last event's position; failed
/// and replayed appends leave it.
pub async fn head_tracks_the_last_event<S: EventStore + Clone>(store: &S) {
    assert_eq!(
        head(store).await,
        Position::START,
        "the head of an empty store"
    );
    let stream = unique("head");
    let batch = ticks(3);
    let first = append(store, &stream, ExpectedVersion::NoStream, batch.clone()).await;
    settle(store, first.position).await;
    assert_eq!(
        head(store).await,
        first.position,
        "head after the first append"
    );
    let second = append(store, &unique("head"), ExpectedVersion::NoStream, ticks(1)).await;
    settle(store, second.position).await;
    assert_eq!(
        head(store).await,
        second.position,
        "head after the second append"
    );

    let failed = store
        .append(&stream, ExpectedVersion::NoStream, ticks(1))
        .await;
    assert_conflict(failed, &stream, ExpectedVersion::NoStream, 3);
    append(store, &stream, ExpectedVersion::NoStream, batch).await;
    assert_eq!(
        head(store).await,
        second.position,
        "failed or replayed appends moved the head"
    );
    let all = read_all_paged(store, Position::START, 100, &EventFilter::all()).await;
    assert_eq!(
        all.last().map(|e| e.position),
        Some(second.position),
        "the last event read_all returns is at the head"
    );
}

/// The position an append returns is its last event's position as read back,
/// in the stream and in the log.
pub async fn appended_positions_match_read_back<S: EventStore + Clone>(store: &S) {
    let start = head(store).await;
    let streams = [unique("pos"), unique("pos")];
    let mut outcomes = Vec::new();
    for (i, size) in [1, 3, 2, 1, 4].into_iter().enumerate() {
        let stream = &streams[i % 2];
        outcomes.push((
            stream,
            append(store, stream, ExpectedVersion::Any, ticks(size)).await,
        ));
    }
    for pair in outcomes.windows(2) {
        assert!(
            pair[0].1.position < pair[1].1.position,
            "later appends have later positions"
        );
    }
    settle(store, outcomes[outcomes.len() - 1].1.position).await;
    let all = read_all_paged(store, start, 1000, &EventFilter::all()).await;
    let by_id: HashMap<Uuid, &RecordedEvent> = all.iter().map(|e| (e.event_id, e)).collect();
    for (stream, done) in &outcomes {
        let events = read_stream(store, stream, done.first_version, 100).await;
        let batch = &events[..(done.stream_version - done.first_version + 1) as usize];
        assert_strictly_increasing(batch, "one batch");
        assert_eq!(
            batch.last().map(|e| e.position),
            Some(done.position),
            "returned position"
        );
        for e in batch {
            let logged = by_id
                .get(&e.event_id)
                .unwrap_or_else(|| panic!("event {} of {stream:?} is not in the log", e.event_id));
            assert_eq!(
                **logged, *e,
                "the stream and the log disagree about an event"
            );
        }
    }
}

/// Payloads, metadata, types and schema versions come back exactly as written.
pub async fn payload_and_metadata_round_trip<S: EventStore + Clone>(store: &S) {
    let start = head(store).await;
    let stream = unique("round-trip");
    let payload = json!({
        "text": "Zürich → 東京 \"quoted\" \\ back\nslash",
        "empty": "",
        "int": -9_007_199_254_740_993_i64,
        "big": u64::MAX,
        "float": 1234.5,
        "fraction": 0.1,
        "yes": true,
        "nothing": null,
        "list": [1, "two", [3], {"four": 4}],
        "nested": {"deeper": {"deepest": []}, "obj": {}},
    });
    let mut extra = BTreeMap::new();
    extra.insert("tenant".to_owned(), json!("acme"));
    extra.insert("trace".to_owned(), json!({"span": 7, "tags": ["a", "b"]}));
    let metadata = Metadata {
        correlation_id: Some(Uuid::new_v4()),
        causation_id: Some(Uuid::new_v4()),
        actor: Some("agent:réservation".to_owned()),
        extra,
    };
    let rich = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "conformance.Rich.Type-v3".to_owned(),
        schema_version: 3,
        payload: payload.into(),
        metadata,
    };
    let plain = NewEvent {
        payload: json!([1, 2, 3]).into(),
        ..event(TICK, 0)
    };
    let scalar = NewEvent {
        payload: json!("just a string").into(),
        ..event(TICK, 0)
    };
    let sent = vec![rich, plain, scalar];
    let done = append(store, &stream, ExpectedVersion::NoStream, sent.clone()).await;
    settle(store, done.position).await;

    let from_stream = whole_stream(store, &stream).await;
    let from_log = read_all_paged(store, start, 100, &EventFilter::all()).await;
    assert_eq!(from_stream, from_log, "read_stream and read_all disagree");
    for (got, sent) in from_stream.iter().zip(&sent) {
        assert_eq!(got.event_id, sent.event_id, "event id read back");
        assert_eq!(got.event_type, sent.event_type, "event type");
        assert_eq!(got.schema_version, sent.schema_version, "schema version");
        assert_eq!(got.payload, sent.payload, "payload");
        assert_eq!(got.metadata, sent.metadata, "metadata");
    }
}

// ---------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------

/// A subscription first delivers the stored events, then those appended later.
pub async fn subscribe_catches_up_then_follows_live<S: EventStore + Clone>(store: &S) {
    let stream = unique("sub");
    let start = head(store).await;
    let mut sent = Vec::new();
    for size in [3, 2] {
        let batch = ticks(size);
        sent.extend(ids(&batch));
        append(store, &stream, ExpectedVersion::Any, batch).await;
    }
    let mut sub = store.subscribe(start, EventFilter::all());
    let caught_up = next_events(&mut sub, 5, "catch-up").await;
    assert_eq!(recorded_ids(&caught_up), sent, "catch-up");

    let other = unique("sub-other");
    for (target, size) in [(&stream, 2), (&other, 1), (&stream, 2)] {
        let batch = ticks(size);
        sent.extend(ids(&batch));
        append(store, target, ExpectedVersion::Any, batch).await;
    }
    let live = next_events(&mut sub, 5, "live").await;
    let all: Vec<_> = caught_up.into_iter().chain(live).collect();
    assert_eq!(recorded_ids(&all), sent, "catch-up then live");
    assert_strictly_increasing(&all, "subscription");
    assert_streams_in_order(&all, "subscription");
    assert_quiet(&mut sub, "after the last append").await;
}

/// Under many concurrent writers (own and shared streams), a subscription
/// started before them and one started after them both see every event
/// exactly once, in the log's order, each stream in version order.
pub async fn subscribe_with_concurrent_writers<S: EventStore + Clone>(store: &S) {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 50;
    let start = head(store).await;
    let shared = unique("shared");
    append(store, &shared, ExpectedVersion::Any, ticks(10)).await;
    append(store, &unique("before"), ExpectedVersion::Any, ticks(10)).await;
    let total = 20 + WRITERS * PER_WRITER;

    let early = {
        let mut sub = store.subscribe(start, EventFilter::all());
        tokio::spawn(
            async move { next_events(&mut sub, total, "subscriber before the writers").await },
        )
    };
    let barrier = Arc::new(Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, shared, barrier) = (store.clone(), shared.clone(), barrier.clone());
            tokio::spawn(async move {
                let own = unique(&format!("writer-{w}"));
                barrier.wait().await;
                let mut written = 0;
                let mut i = 0;
                while written < PER_WRITER {
                    let size = (1 + i % 2).min(PER_WRITER - written);
                    let target = if i % 3 == 0 { &own } else { &shared };
                    append(&store, target, ExpectedVersion::Any, ticks(size as u64)).await;
                    written += size;
                    i += 1;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for writer in writers {
        join(writer).await;
    }
    let seen_early = join(early).await;
    let mut late_sub = store.subscribe(start, EventFilter::all());
    let seen_late = next_events(&mut late_sub, total, "subscriber after the writers").await;

    let log = read_all_paged(store, start, 97, &EventFilter::all()).await;
    assert_eq!(log.len(), total, "read_all after the writers");
    assert_once_each(&log, "read_all");
    assert_strictly_increasing(&log, "read_all");
    assert_streams_in_order(&log, "read_all");
    for (seen, what) in [
        (&seen_early, "early subscriber"),
        (&seen_late, "late subscriber"),
    ] {
        assert_once_each(seen, what);
        assert_strictly_increasing(seen, what);
        assert_streams_in_order(seen, what);
        assert_eq!(
            recorded_ids(seen),
            recorded_ids(&log),
            "{what} and read_all disagree"
        );
    }
    assert_quiet(&mut late_sub, "late subscriber").await;
}

/// A filtered subscription delivers only the chosen types, stored and live.
pub async fn subscribe_with_filter<S: EventStore + Clone>(store: &S) {
    let start = head(store).await;
    let suffix = Uuid::new_v4().simple().to_string();
    let (wanted, unwanted) = (
        format!("conformance.Wanted-{suffix}"),
        format!("conformance.Other-{suffix}"),
    );
    let stream = unique("sub-filter");
    let mut expected = Vec::new();
    let mut write = async |n: u64| {
        let batch = vec![event(&unwanted, n), event(&wanted, n), event(&unwanted, n)];
        expected.push(batch[1].event_id);
        append(store, &stream, ExpectedVersion::Any, batch).await;
    };
    write(1).await;
    write(2).await;
    let mut sub = store.subscribe(start, EventFilter::types([wanted.clone()]));
    let mut got = next_events(&mut sub, 2, "filtered catch-up").await;
    write(3).await;
    write(4).await;
    got.extend(next_events(&mut sub, 2, "filtered live").await);
    assert!(
        got.iter().all(|e| e.event_type == wanted),
        "a filtered subscription let other types through"
    );
    assert_eq!(
        recorded_ids(&got),
        expected,
        "filtered subscription delivered the wrong events"
    );
    assert_strictly_increasing(&got, "filtered subscription");
    assert_quiet(&mut sub, "filtered subscription").await;
}

/// A subscription after a position starts strictly after it; from the head it
/// sees only new events.
pub async fn subscribe_after_position<S: EventStore + Clone>(store: &S) {
    let start = head(store).await;
    let stream = unique("sub-after");
    append(store, &stream, ExpectedVersion::Any, ticks(3)).await;
    let second = append(store, &stream, ExpectedVersion::Any, ticks(3)).await;
    settle(store, second.position).await;
    let all = read_all(store, start, 100, &EventFilter::all()).await;
    assert_eq!(all.len(), 6, "read_all of 2 appends of 3 events");

    let mut from_third = store.subscribe(all[2].position, EventFilter::all());
    let got = next_events(&mut from_third, 3, "after the third event").await;
    assert_eq!(
        recorded_ids(&got),
        recorded_ids(&all[3..]),
        "subscription after the third event"
    );

    let mut from_head = store.subscribe(head(store).await, EventFilter::all());
    assert_quiet(&mut from_head, "subscription from the head").await;
    let batch = ticks(2);
    let new_ids = ids(&batch);
    append(store, &stream, ExpectedVersion::Exact(6), batch).await;
    let live = next_events(&mut from_head, 2, "subscription from the head").await;
    assert_eq!(
        recorded_ids(&live),
        new_ids,
        "live events of a subscription from the head"
    );
    let more = next_events(&mut from_third, 2, "after the third event, live").await;
    assert_eq!(
        recorded_ids(&more),
        new_ids,
        "live events of a subscription after the third event"
    );
}

// ---------------------------------------------------------------------------
// Snapshots and checkpoints
// ---------------------------------------------------------------------------

/// Snapshots are per stream; saving replaces; an unknown stream has none.
pub async fn snapshots_save_replace_load<S: EventStore + Clone>(store: &S) {
    let stream = unique("snap");
    let other = unique("snap-other");
    let load = |s: String| async move {
        store
            .load_snapshot(&s)
            .await
            .unwrap_or_else(|e| panic!("load_snapshot({s:?}) failed: {e}"))
    };
    let save = |snapshot: Snapshot| async move {
        store
            .save_snapshot(snapshot)
            .await
            .unwrap_or_else(|e| panic!("save_snapshot failed: {e}"))
    };
    assert_eq!(
        load(stream.clone()).await,
        None,
        "an unknown stream has no snapshot"
    );

    let first = Snapshot {
        stream_id: stream.clone(),
        stream_version: 3,
        schema_version: 1,
        state: json!({"seats": ["1A", "1B"], "open": true}),
    };
    save(first.clone()).await;
    assert_eq!(
        load(stream.clone()).await,
        Some(first.clone()),
        "the snapshot saved"
    );

    let replaced = Snapshot {
        stream_id: stream.clone(),
        stream_version: 7,
        schema_version: 2,
        state: json!({"seats": [], "open": false, "n": 7}),
    };
    save(replaced.clone()).await;
    assert_eq!(
        load(stream.clone()).await,
        Some(replaced.clone()),
        "saving replaces"
    );

    let theirs = Snapshot {
        stream_id: other.clone(),
        stream_version: 1,
        schema_version: 1,
        state: json!(null),
    };
    save(theirs.clone()).await;
    assert_eq!(
        load(other).await,
        Some(theirs),
        "the other stream's snapshot"
    );
    assert_eq!(
        load(stream).await,
        Some(replaced),
        "snapshots of other streams interfere"
    );
}

/// Checkpoints are per name; saving overwrites (even backwards); an unknown
/// name has none.
pub async fn checkpoints_save_overwrite_load<S: EventStore + Clone>(store: &S) {
    let name = unique("projection");
    let other = unique("projection");
    let load = |n: String| async move {
        store
            .load_checkpoint(&n)
            .await
            .unwrap_or_else(|e| panic!("load_checkpoint({n:?}) failed: {e}"))
    };
    let save = |n: String, p: Position| async move {
        store
            .save_checkpoint(&n, p)
            .await
            .unwrap_or_else(|e| panic!("save_checkpoint({n:?}, {p}) failed: {e}"))
    };
    assert_eq!(load(name.clone()).await, None, "an unknown checkpoint");

    let first = append(store, &unique("cp"), ExpectedVersion::Any, ticks(1))
        .await
        .position;
    let second = append(store, &unique("cp"), ExpectedVersion::Any, ticks(2))
        .await
        .position;
    save(name.clone(), first).await;
    assert_eq!(
        load(name.clone()).await,
        Some(first),
        "the checkpoint saved"
    );
    save(name.clone(), second).await;
    assert_eq!(load(name.clone()).await, Some(second), "saving overwrites");
    save(other.clone(), first).await;
    assert_eq!(
        load(name.clone()).await,
        Some(second),
        "checkpoints of other names interfere"
    );
    save(name.clone(), Position::START).await;
    assert_eq!(
        load(name).await,
        Some(Position::START),
        "saving overwrites, even backwards"
    );
    assert_eq!(load(other).await, Some(first), "the other checkpoint");
}

// ---------------------------------------------------------------------------
// A repository over the store
// ---------------------------------------------------------------------------

const INCREMENTED: &str = "conformance.Incremented";

/// The events of the test counter.
#[derive(Debug, Clone, PartialEq)]
enum CounterEvent {
    Incremented { by: u64 },
}

impl DomainEvent for CounterEvent {
    const TYPES: &'static [EventType] = &[EventType {
        name: INCREMENTED,
        version: 1,
    }];

    fn event_type(&self) -> &'static str {
        INCREMENTED
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn encode(&self) -> Result<Payload, EventError> {
        let CounterEvent::Incremented { by } = self;
        Ok(json!({ "by": by }).into())
    }

    fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &Payload,
    ) -> Result<Self, EventError> {
        if event_type != INCREMENTED {
            return Err(EventError::UnknownType {
                event_type: event_type.to_owned(),
                schema_version,
            });
        }
        if schema_version != 1 {
            return Err(EventError::UnsupportedVersion {
                event_type: event_type.to_owned(),
                schema_version,
                current: 1,
            });
        }
        #[derive(serde::Deserialize)]
        struct Fields {
            by: u64,
        }
        let Fields { by } = payload.decode().map_err(|source| EventError::Decode {
            event_type: event_type.to_owned(),
            schema_version,
            source,
        })?;
        Ok(CounterEvent::Incremented { by })
    }
}

/// A counter aggregate, written by hand.
#[derive(Debug, Default, Clone, PartialEq)]
struct Counter {
    total: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot increment by zero")]
struct ZeroIncrement;

struct Increment(u64);

impl AggregateType for Counter {
    const NAME: &'static str = "conformance_counter";

    fn snapshot(&self) -> Option<Value> {
        Some(json!({ "total": self.total }))
    }

    fn restore(state: &Value) -> Option<Self> {
        Some(Counter {
            total: state.get("total")?.as_u64()?,
        })
    }
}

impl Aggregate for Counter {
    type Event = CounterEvent;
    type Error = ZeroIncrement;

    fn apply(&mut self, event: &CounterEvent) {
        let CounterEvent::Incremented { by } = event;
        self.total += by;
    }
}

impl Handle<Increment> for Counter {
    fn handle(&self, command: &Increment) -> Result<Vec<CounterEvent>, ZeroIncrement> {
        if command.0 == 0 {
            return Err(ZeroIncrement);
        }
        Ok(vec![CounterEvent::Incremented { by: command.0 }])
    }
}

/// `Repository::execute` loads, decides, appends and reports the outcome; a
/// rejected command writes nothing.
pub async fn repository_executes_commands<S: EventStore + Clone>(store: &S) {
    let counters = Repository::<Counter, _>::new(store.clone());
    let id = Uuid::new_v4();
    let stream = Counter::stream_id(&id);

    let done = counters
        .execute(id, Increment(2))
        .await
        .expect("first increment");
    assert_eq!(
        done.events,
        [CounterEvent::Incremented { by: 2 }],
        "events of the first command"
    );
    assert_eq!(
        done.stream_version, 1,
        "stream_version after the first command"
    );
    assert!(!done.replayed);
    settle(store, done.position).await;
    assert_eq!(
        done.position,
        head(store).await,
        "the position token is the append's"
    );

    let done = counters
        .execute(id, Increment(3))
        .await
        .expect("second increment");
    assert_eq!(
        done.stream_version, 2,
        "stream_version after the second command"
    );
    let loaded = counters.load(id).await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.version),
        (5, 2),
        "state and version after two commands"
    );

    let stored = whole_stream(store, &stream).await;
    assert_eq!(
        versions(&stored),
        [1, 2],
        "versions stored by the repository"
    );
    assert_eq!(
        stored[0].event_type, INCREMENTED,
        "event type stored by the repository"
    );
    assert_eq!(
        stored[0].payload,
        json!({ "by": 2 }),
        "payload stored by the repository"
    );

    match counters.execute(id, Increment(0)).await {
        Err(ExecuteError::Rejected(ZeroIncrement)) => {}
        other => panic!("a rejected command returned {other:?}"),
    }
    assert_eq!(
        version(store, &stream).await,
        2,
        "a rejected command wrote events"
    );
}

/// Concurrent commands on one aggregate all succeed through retries, each
/// at its own version.
pub async fn repository_retries_conflicts<S: EventStore + Clone>(store: &S) {
    const COMMANDS: usize = 10;
    let counters = Repository::<Counter, _>::new(store.clone()).max_attempts(50);
    let id = Uuid::new_v4();
    let barrier = Arc::new(Barrier::new(COMMANDS));
    let tasks: Vec<_> = (0..COMMANDS)
        .map(|_| {
            let (counters, barrier) = (counters.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                counters.execute(id, Increment(1)).await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        let done = join(task)
            .await
            .unwrap_or_else(|e| panic!("a concurrent increment failed: {e}"));
        versions.push(done.stream_version);
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=COMMANDS as u64).collect::<Vec<_>>(),
        "each command its own version"
    );
    let loaded = counters.load(id).await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.version),
        (COMMANDS as u64, COMMANDS as u64),
        "state and version after the concurrent commands"
    );
}

/// A command id runs once through the repository, also when sent
/// concurrently: later runs return the first outcome and its events.
pub async fn repository_command_idempotency<S: EventStore + Clone>(store: &S) {
    let counters = Repository::<Counter, _>::new(store.clone()).max_attempts(50);
    let id = Uuid::new_v4();
    let command_id = Uuid::new_v4();
    let context = CommandContext {
        command_id: Some(command_id),
        metadata: Metadata::default().actor("conformance"),
    };

    let first = counters
        .execute_with(id, Increment(4), context.clone())
        .await
        .expect("first run");
    assert!(!first.replayed);
    let again = counters
        .execute_with(id, Increment(4), context.clone())
        .await
        .expect("second run");
    assert!(
        again.replayed,
        "a second run of a command is not marked replayed"
    );
    assert_eq!(again.events, first.events, "events of the replayed command");
    assert_eq!(
        (again.stream_version, again.position),
        (first.stream_version, first.position),
        "outcome of the replayed command"
    );
    assert_eq!(counters.load(id).await.expect("load").state.total, 4);

    let stored = whole_stream(store, &Counter::stream_id(&id)).await;
    assert_eq!(stored.len(), 1, "a replayed command wrote events");

    // Once the stream has moved on, a replay still answers the first outcome,
    // whether the command would now write (the append finds the id) or
    // would not (the id is looked up).
    counters
        .execute(id, Increment(1))
        .await
        .expect("another command on the stream");
    let moved = counters
        .execute_with(id, Increment(4), context.clone())
        .await
        .expect("replay after another command");
    let refused = counters
        .execute_with(id, Increment(0), context.clone())
        .await
        .expect("replay of a command that would now be refused");
    for replay in [&moved, &refused] {
        assert!(replay.replayed, "not marked replayed: {replay:?}");
        assert_eq!(
            (replay.stream_version, replay.position),
            (first.stream_version, first.position),
            "outcome of a replay after the log moved on"
        );
    }
    assert_eq!(whole_stream(store, &Counter::stream_id(&id)).await.len(), 2);
    assert_eq!(
        stored[0].metadata.causation_id,
        Some(command_id),
        "causation defaults to the command"
    );
    assert_eq!(stored[0].metadata.actor.as_deref(), Some("conformance"));
    let outcome = store
        .command_outcome(command_id)
        .await
        .expect("command_outcome");
    assert_eq!(
        outcome.map(|o| o.position),
        Some(first.position),
        "command_outcome of a command run through the repository"
    );

    // The same command sent by several clients at once runs once.
    const CLIENTS: usize = 6;
    let racing = Uuid::new_v4();
    let context = CommandContext {
        command_id: Some(Uuid::new_v4()),
        metadata: Metadata::default(),
    };
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (counters, barrier, context) = (counters.clone(), barrier.clone(), context.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                counters.execute_with(racing, Increment(1), context).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        let done = join(task)
            .await
            .unwrap_or_else(|e| panic!("a concurrent run of one command failed: {e}"));
        outcomes.push(done);
    }
    assert_eq!(
        outcomes.iter().filter(|o| !o.replayed).count(),
        1,
        "the command ran more than once"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| o.stream_version == 1 && o.position == outcomes[0].position)
    );
    assert_eq!(
        version(store, &Counter::stream_id(&racing)).await,
        1,
        "a command sent concurrently ran more than once"
    );
}

/// With snapshots on, the repository saves them through the store and loads
/// from them; a snapshot of another schema is ignored.
pub async fn repository_snapshots<S: EventStore + Clone>(store: &S) {
    let counters = Repository::<Counter, _>::new(store.clone()).snapshot_every(3);
    let id = Uuid::new_v4();
    let stream = Counter::stream_id(&id);
    for _ in 0..7 {
        counters.execute(id, Increment(1)).await.expect("increment");
    }
    let snapshot = store
        .load_snapshot(&stream)
        .await
        .expect("load_snapshot")
        .expect("a snapshot after 7 events with snapshot_every(3)");
    assert_eq!(snapshot.stream_version, 6, "version of the latest snapshot");
    assert_eq!(
        snapshot.schema_version,
        Counter::SNAPSHOT_VERSION,
        "schema of the snapshot"
    );
    assert_eq!(
        snapshot.state,
        json!({ "total": 6 }),
        "state in the snapshot"
    );
    let loaded = counters.load(id).await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.version),
        (7, 7),
        "state and version loaded from the snapshot"
    );

    store
        .save_snapshot(Snapshot {
            stream_id: stream,
            stream_version: 7,
            schema_version: Counter::SNAPSHOT_VERSION + 1,
            state: json!({ "total": 1000 }),
        })
        .await
        .expect("save_snapshot");
    let loaded = counters.load(id).await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.version),
        (7, 7),
        "a snapshot of another schema was used"
    );
}
