//! Idempotency: appends that repeat stored event ids, duplicate ids, and
//! command ids.

use uuid::Uuid;

use super::helpers::*;
use crate::store::{AppendOptions, Appended, EventStore, ExpectedVersion, StoreError};

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
            again.repeated,
            "re-append ({expected}) is not marked repeated"
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
        "a repeated append wrote events"
    );
    assert_eq!(
        head(store).await,
        head_after_first,
        "a repeated append moved the head"
    );

    // Still a replay after the stream moved on.
    let later = append(store, &stream, ExpectedVersion::Exact(2), ticks(1)).await;
    settle(store, later.position).await;
    let again = append(store, &stream, ExpectedVersion::NoStream, batch.clone()).await;
    assert!(again.repeated);
    assert_eq!(
        (again.first_version, again.stream_version, again.position),
        (1, 2, first.position)
    );

    // One event of the batch, re-sent at its own version.
    let second = vec![batch[1].clone()];
    let again = append(store, &stream, ExpectedVersion::Exact(1), second).await;
    assert!(
        again.repeated,
        "re-sending the second event alone is not a repeat"
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
    assert!(!first.repeated);
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
        again.repeated,
        "a second run of a command is not marked repeated"
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
    assert!(elsewhere.repeated, "a command id is global, not per stream");
    assert_eq!(
        elsewhere.position, first.position,
        "a repeated command on another stream returns the first position"
    );

    assert_eq!(
        version(store, &stream).await,
        2,
        "a repeated command wrote events"
    );
    assert_eq!(
        head(store).await,
        head_after_first,
        "a repeated command moved the head"
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

    // The events of the repeated command were not stored: they append normally.
    let done = append(store, &stream, ExpectedVersion::Exact(2), other_events).await;
    assert!(!done.repeated);

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
        !retried.repeated,
        "retrying a failed command was treated as a replay"
    );
    assert_eq!(
        retried.stream_version, 4,
        "outcome of a retried failed command"
    );
}
