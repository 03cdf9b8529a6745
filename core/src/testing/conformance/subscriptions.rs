//! Subscriptions: catch-up then live, filters, starting after a position,
//! and many concurrent writers.

use std::sync::Arc;

use tokio::sync::Barrier;
use uuid::Uuid;

use super::helpers::*;
use crate::store::{EventFilter, EventStore, ExpectedVersion};

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
