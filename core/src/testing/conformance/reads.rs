//! Reading: stream reads, the global log (order, paging, filters), the head,
//! positions, and payloads and metadata as written.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;
use uuid::Uuid;

use super::helpers::*;
use crate::envelope::{Metadata, NewEvent, RecordedEvent};
use crate::position::Position;
use crate::store::{EventFilter, EventStore, ExpectedVersion};

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
/// and repeated appends leave it.
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
        "failed or repeated appends moved the head"
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
        tags: Vec::new(),
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
