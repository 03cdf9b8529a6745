//! Writers racing under conditions: for one claim, for disjoint claims,
//! for places up to a capacity.

use std::sync::Arc;

use tokio::sync::Barrier;

use super::super::helpers::*;
use super::{ALL, NOTED, noted, read_query, tagged, try_append_if};
use crate::position::Position;
use crate::query::{Query, QueryItem};
use crate::store::{EventFilter, EventStore, StoreError};

/// How many writers race in the concurrency cases.
const RACERS: usize = 16;

/// Of writers racing to claim one tag (`after = None`: no event may match
/// yet), exactly one appends; the others get `ConditionFailed` naming the
/// winner's event, and write nothing.
pub async fn dcb_concurrent_claims_have_one_winner<S: EventStore + Clone>(store: &S) {
    let username = format!("username:{}", unique("x"));
    let query = tagged(&[&username]);
    let barrier = Arc::new(Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS as u64)
        .map(|n| {
            let (store, barrier) = (store.clone(), barrier.clone());
            let (query, username, stream) = (query.clone(), username.clone(), unique("dcb-claim"));
            tokio::spawn(async move {
                barrier.wait().await;
                let events = vec![noted(n, &[&username])];
                let result = try_append_if(&store, &stream, events, &query, None).await;
                (stream, result)
            })
        })
        .collect();
    let (mut winners, mut losers) = (Vec::new(), Vec::new());
    for task in tasks {
        match join(task).await {
            (stream, Ok(done)) => winners.push((stream, done)),
            (stream, Err(StoreError::ConditionFailed { position })) => {
                losers.push((stream, position))
            }
            (stream, Err(other)) => panic!("a claim on {stream:?} failed with {other:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one racing claim must win: {winners:?}"
    );
    let (winner, won) = &winners[0];
    settle(store, won.position).await;
    for (stream, position) in &losers {
        assert_eq!(
            *position, won.position,
            "a lost claim names another event than the winner's"
        );
        assert_eq!(
            version(store, stream).await,
            0,
            "a lost claim wrote its stream"
        );
    }
    let claims = read_query(store, &query, Position::START, ALL).await;
    assert_eq!(claims.len(), 1, "claims in the log: {claims:?}");
    assert_eq!(
        &claims[0].stream_id, winner,
        "the claim in the log is not the winner's"
    );
}

/// Writers racing with conditions on different tags never conflict, even
/// appending to one stream (at whatever its version): every one appends.
pub async fn dcb_concurrent_disjoint_claims_all_succeed<S: EventStore + Clone>(store: &S) {
    let stream = unique("dcb-disjoint");
    let barrier = Arc::new(Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS as u64)
        .map(|n| {
            let (store, barrier, stream) = (store.clone(), barrier.clone(), stream.clone());
            let username = format!("username:{}", unique("x"));
            tokio::spawn(async move {
                barrier.wait().await;
                let (query, events) = (tagged(&[&username]), vec![noted(n, &[&username])]);
                try_append_if(&store, &stream, events, &query, None).await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        let done = join(task)
            .await
            .unwrap_or_else(|e| panic!("a claim of its own tag failed: {e}"));
        versions.push(done.stream_version);
    }
    versions.sort_unstable();
    let expected: Vec<u64> = (1..=RACERS as u64).collect();
    assert_eq!(
        versions, expected,
        "the versions the racing appends returned"
    );
    assert_eq!(
        whole_stream(store, &stream).await.len(),
        RACERS,
        "events in the stream"
    );
}

/// Writers racing to reserve one of a few places, each deciding from the
/// reservations it read (`read_query`) and appending on the condition that
/// none was recorded since (`after` = the last it read), retrying on
/// `ConditionFailed`: exactly the capacity is reserved, never more.
pub async fn dcb_concurrent_reservations_respect_capacity<S: EventStore + Clone>(store: &S) {
    const CAPACITY: usize = 5;
    let resource = unique("resource");
    let query = Query::new().or(QueryItem::types([NOTED]).and_tagged([&resource]));
    let barrier = Arc::new(Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS as u64)
        .map(|n| {
            let (store, barrier) = (store.clone(), barrier.clone());
            let (query, resource, stream) =
                (query.clone(), resource.clone(), unique("dcb-reserve"));
            tokio::spawn(async move {
                barrier.wait().await;
                for _ in 0..1000 {
                    let taken = read_query(&store, &query, Position::START, ALL).await;
                    if taken.len() >= CAPACITY {
                        return None;
                    }
                    let after = taken.last().map(|e| e.position);
                    let events = vec![noted(n, &[&resource])];
                    match try_append_if(&store, &stream, events, &query, after).await {
                        Ok(done) => return Some(done),
                        Err(StoreError::ConditionFailed { position }) => assert!(
                            after.is_none_or(|after| position > after),
                            "ConditionFailed names {position}, not after {after:?}"
                        ),
                        Err(other) => panic!("a reservation failed with {other:?}"),
                    }
                }
                panic!("a reservation conflicted 1000 times");
            })
        })
        .collect();
    let mut reserved = Vec::new();
    for task in tasks {
        reserved.extend(join(task).await);
    }
    assert_eq!(reserved.len(), CAPACITY, "reservations that succeeded");
    let last = reserved
        .iter()
        .map(|done| done.position)
        .max()
        .expect("some reserved");
    settle(store, last).await;
    let log = read_all(store, Position::START, ALL, &EventFilter::all()).await;
    let in_log = log.iter().filter(|e| e.tags.contains(&resource)).count();
    assert_eq!(in_log, CAPACITY, "reservations in the log");
}
