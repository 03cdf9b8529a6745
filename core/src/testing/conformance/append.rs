//! Appends and expected versions: every [`ExpectedVersion`], conflicts and
//! their error, atomicity of refused appends, and input validation.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::Barrier;
use uuid::Uuid;

use super::helpers::*;
use crate::envelope::NewEvent;
use crate::store::{
    AppendLimits, AppendOptions, EventFilter, EventStore, ExpectedVersion, StoreError,
};

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
    assert!(!done.repeated, "a first append is not a repeat");
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
    assert!(!done.repeated, "ids of a failed append were kept");
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
