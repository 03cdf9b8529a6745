//! What the cases share: event builders, store calls that panic with the
//! call in the message, waits, and assertions about the log.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::envelope::{NewEvent, RecordedEvent};
use crate::position::Position;
use crate::store::{
    AppendOptions, Appended, EventFilter, EventStore, EventStream, ExpectedVersion, StoreError,
};

/// How long a subscription may stay silent while events are still owed.
pub(super) const IDLE: Duration = Duration::from_secs(5);

/// How long a subscription is watched to make sure nothing more arrives.
pub(super) const QUIET: Duration = Duration::from_millis(300);

pub(super) const TICK: &str = "conformance.Tick";

/// A stream name no other case (or earlier run against a shared database) uses.
pub(super) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

pub(super) fn event(event_type: &str, n: u64) -> NewEvent {
    crate::testing::new_event(event_type, json!({ "n": n }))
}

pub(super) fn ticks(count: u64) -> Vec<NewEvent> {
    (1..=count).map(|n| event(TICK, n)).collect()
}

pub(super) fn ids(events: &[NewEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

pub(super) fn recorded_ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

pub(super) fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.stream_version).collect()
}

pub(super) async fn append<S: EventStore>(
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

pub(super) async fn append_with<S: EventStore>(
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

pub(super) async fn version<S: EventStore>(store: &S, stream: &str) -> u64 {
    store
        .stream_version(stream)
        .await
        .unwrap_or_else(|e| panic!("stream_version({stream:?}) failed: {e}"))
}

pub(super) async fn read_stream<S: EventStore>(
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

pub(super) async fn whole_stream<S: EventStore>(store: &S, stream: &str) -> Vec<RecordedEvent> {
    read_stream(store, stream, 1, usize::MAX).await
}

pub(super) async fn read_all<S: EventStore>(
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
pub(super) async fn read_all_paged<S: EventStore>(
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

pub(super) async fn head<S: EventStore>(store: &S) -> Position {
    store
        .head()
        .await
        .unwrap_or_else(|e| panic!("head() failed: {e}"))
}

/// Waits until `head` reaches a position an append returned. A store may
/// show committed events to readers a little later (the PostgreSQL store
/// waits for older transactions), but not never.
pub(super) async fn settle<S: EventStore>(store: &S, position: Position) {
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

pub(super) async fn join<T>(handle: JoinHandle<T>) -> T {
    match handle.await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("task did not finish: {error}"),
    }
}

pub(super) fn assert_conflict(
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

pub(super) fn assert_strictly_increasing(events: &[RecordedEvent], what: &str) {
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
pub(super) fn assert_streams_in_order(events: &[RecordedEvent], what: &str) {
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

pub(super) fn assert_once_each(events: &[RecordedEvent], what: &str) {
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
pub(super) async fn next_events(
    sub: &mut EventStream,
    count: usize,
    what: &str,
) -> Vec<RecordedEvent> {
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
pub(super) async fn assert_quiet(sub: &mut EventStream, what: &str) {
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
