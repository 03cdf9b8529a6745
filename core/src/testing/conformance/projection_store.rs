//! The [`ProjectionStore`] contract, first part: dead letters and the
//! single-runner lease (deadlines are in `deadlines.rs`).

use std::time::Duration;

use uuid::Uuid;

use super::helpers::*;
use crate::envelope::RecordedEvent;
use crate::projection::{Lease, ParkedEvent, ProjectionStore};
use crate::store::{EventFilter, ExpectedVersion};

/// How long a held lease is watched to make sure it is not lost.
const LEASE_WATCH: Duration = Duration::from_millis(1200);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `count` events appended over two streams, as read back from the log.
pub(super) async fn logged<S: ProjectionStore>(store: &S, count: u64) -> Vec<RecordedEvent> {
    let start = head(store).await;
    let streams = [unique("parked"), unique("parked")];
    let mut last = start;
    for n in 0..count {
        let stream = &streams[(n % 2) as usize];
        last = append(store, stream, ExpectedVersion::Any, ticks(1))
            .await
            .position;
    }
    settle(store, last).await;
    let events = read_all_paged(store, start, 100, &EventFilter::all()).await;
    assert_eq!(events.len(), count as usize, "events appended to be parked");
    events
}

/// `event` parked with this error and attempts, not marked for a retry.
pub(super) fn parked(event: &RecordedEvent, error: Option<&str>, attempts: u32) -> ParkedEvent {
    ParkedEvent {
        event: event.clone(),
        error: error.map(str::to_owned),
        attempts,
        retry_requested: false,
    }
}

pub(super) async fn park<S: ProjectionStore>(
    store: &S,
    projection: &str,
    events: Vec<ParkedEvent>,
) {
    store
        .park(projection, events)
        .await
        .unwrap_or_else(|e| panic!("park({projection:?}) failed: {e}"));
}

async fn parked_in<S: ProjectionStore>(store: &S, projection: &str) -> Vec<ParkedEvent> {
    store
        .parked(projection)
        .await
        .unwrap_or_else(|e| panic!("parked({projection:?}) failed: {e}"))
}

async fn parked_ids<S: ProjectionStore>(store: &S, projection: &str) -> Vec<Uuid> {
    parked_in(store, projection)
        .await
        .iter()
        .map(|p| p.event.event_id)
        .collect()
}

async fn unpark<S: ProjectionStore>(store: &S, projection: &str, ids: &[Uuid]) {
    store
        .unpark(projection, ids)
        .await
        .unwrap_or_else(|e| panic!("unpark({projection:?}, {ids:?}) failed: {e}"));
}

pub(super) async fn request_retry<S: ProjectionStore>(store: &S, name: &str) -> u64 {
    store
        .request_retry(name)
        .await
        .unwrap_or_else(|e| panic!("request_retry({name:?}) failed: {e}"))
}

async fn try_lease<S: ProjectionStore>(store: &S, name: &str) -> Option<Box<dyn Lease>> {
    store
        .try_lease(name)
        .await
        .unwrap_or_else(|e| panic!("try_lease({name:?}) failed: {e}"))
}

// ---------------------------------------------------------------------------
// Dead letters
// ---------------------------------------------------------------------------

/// Parked events are listed in log order, whatever order they were parked
/// in, with their error, attempts and retry mark as parked.
pub async fn dead_letters_are_listed_in_log_order<S: ProjectionStore + Clone>(store: &S) {
    let events = logged(store, 5).await;
    let projection = unique("projection");
    assert!(
        parked_in(store, &projection).await.is_empty(),
        "a projection that parked nothing has dead letters"
    );
    park(
        store,
        &projection,
        vec![
            parked(&events[3], Some("boom"), 2),
            parked(&events[1], None, 0),
        ],
    )
    .await;
    park(
        store,
        &projection,
        vec![
            parked(&events[4], None, 0),
            parked(&events[0], Some("first"), 1),
        ],
    )
    .await;
    assert_eq!(
        parked_in(store, &projection).await,
        [
            parked(&events[0], Some("first"), 1),
            parked(&events[1], None, 0),
            parked(&events[3], Some("boom"), 2),
            parked(&events[4], None, 0),
        ],
        "dead letters are not listed in log order as parked"
    );
}

/// Parking an event again replaces its error, attempts and retry mark; it is
/// never listed twice.
pub async fn parking_again_updates_without_duplicating<S: ProjectionStore + Clone>(store: &S) {
    let events = logged(store, 3).await;
    let projection = unique("projection");
    park(
        store,
        &projection,
        vec![
            parked(&events[0], Some("boom"), 1),
            parked(&events[1], None, 0),
            parked(&events[2], Some("bang"), 1),
        ],
    )
    .await;
    park(
        store,
        &projection,
        vec![
            parked(&events[1], Some("fails on its own now"), 1),
            parked(&events[0], Some("boom again"), 2),
        ],
    )
    .await;
    assert_eq!(
        parked_in(store, &projection).await,
        [
            parked(&events[0], Some("boom again"), 2),
            parked(&events[1], Some("fails on its own now"), 1),
            parked(&events[2], Some("bang"), 1),
        ],
        "parking again does not replace error and attempts, or duplicates"
    );

    // A runner parks a retried event again without the mark, and with no
    // error when it only waits behind another.
    request_retry(store, &projection).await;
    park(store, &projection, vec![parked(&events[2], None, 2)]).await;
    let marked = |p: ParkedEvent| ParkedEvent {
        retry_requested: true,
        ..p
    };
    assert_eq!(
        parked_in(store, &projection).await,
        [
            marked(parked(&events[0], Some("boom again"), 2)),
            marked(parked(&events[1], Some("fails on its own now"), 1)),
            parked(&events[2], None, 2),
        ],
        "parking again after a retry request"
    );
}

/// Each projection has dead letters of its own, even of the same event.
pub async fn dead_letters_are_kept_per_projection<S: ProjectionStore + Clone>(store: &S) {
    let events = logged(store, 3).await;
    let (a, b) = (unique("projection-a"), unique("projection-b"));
    park(
        store,
        &a,
        vec![
            parked(&events[0], Some("in a"), 1),
            parked(&events[1], None, 0),
        ],
    )
    .await;
    park(
        store,
        &b,
        vec![
            parked(&events[2], None, 0),
            parked(&events[1], Some("in b"), 5),
        ],
    )
    .await;
    assert_eq!(
        parked_in(store, &a).await,
        [
            parked(&events[0], Some("in a"), 1),
            parked(&events[1], None, 0)
        ],
        "the first projection's dead letters"
    );
    assert_eq!(
        parked_in(store, &b).await,
        [
            parked(&events[1], Some("in b"), 5),
            parked(&events[2], None, 0)
        ],
        "the second projection's dead letters"
    );
    assert!(
        parked_in(store, &unique("projection")).await.is_empty(),
        "another projection's dead letters are listed for one that parked nothing"
    );
}

/// `request_retry` marks every dead letter of that projection alone and
/// returns how many it has.
pub async fn request_retry_marks_every_dead_letter<S: ProjectionStore + Clone>(store: &S) {
    let events = logged(store, 3).await;
    let (a, b) = (unique("projection-a"), unique("projection-b"));
    park(
        store,
        &a,
        vec![
            parked(&events[0], None, 0),
            parked(&events[1], Some("boom"), 3),
        ],
    )
    .await;
    park(store, &b, vec![parked(&events[2], Some("elsewhere"), 1)]).await;

    assert_eq!(
        request_retry(store, &a).await,
        2,
        "request_retry counts the projection's dead letters"
    );
    let marked: Vec<_> = [
        parked(&events[0], None, 0),
        parked(&events[1], Some("boom"), 3),
    ]
    .into_iter()
    .map(|p| ParkedEvent {
        retry_requested: true,
        ..p
    })
    .collect();
    assert_eq!(
        parked_in(store, &a).await,
        marked,
        "request_retry does not mark every dead letter, and only that"
    );
    assert_eq!(
        parked_in(store, &b).await,
        [parked(&events[2], Some("elsewhere"), 1)],
        "request_retry marked another projection's dead letters"
    );
    assert_eq!(
        request_retry(store, &a).await,
        2,
        "a second request counts the dead letters already marked"
    );
    assert_eq!(
        request_retry(store, &unique("projection")).await,
        0,
        "request_retry of a projection with no dead letters"
    );
}

/// `unpark` removes the given events of that projection, and nothing else.
pub async fn unpark_removes_only_the_given_events<S: ProjectionStore + Clone>(store: &S) {
    let events = logged(store, 4).await;
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let (a, b) = (unique("projection-a"), unique("projection-b"));
    park(
        store,
        &a,
        events.iter().map(|e| parked(e, Some("boom"), 1)).collect(),
    )
    .await;
    park(
        store,
        &b,
        vec![parked(&events[1], None, 0), parked(&events[2], None, 0)],
    )
    .await;

    unpark(store, &a, &[ids[3], ids[1]]).await;
    assert_eq!(
        parked_ids(store, &a).await,
        [ids[0], ids[2]],
        "unpark removed the wrong dead letters"
    );
    assert_eq!(
        parked_ids(store, &b).await,
        [ids[1], ids[2]],
        "unpark removed another projection's dead letters"
    );

    unpark(store, &a, &[]).await;
    unpark(store, &a, &[Uuid::new_v4()]).await;
    unpark(store, &unique("projection"), &[ids[0]]).await;
    assert_eq!(
        parked_ids(store, &a).await,
        [ids[0], ids[2]],
        "unparking nothing, an unknown event or another projection's removed dead letters"
    );

    unpark(store, &a, &[ids[0], ids[2]]).await;
    assert!(
        parked_in(store, &a).await.is_empty(),
        "unparking every dead letter left some"
    );
    assert_eq!(parked_ids(store, &b).await, [ids[1], ids[2]]);
}

// ---------------------------------------------------------------------------
// The single-runner lease
// ---------------------------------------------------------------------------

/// A projection's lease has one holder at a time; leases of different names
/// are independent.
pub async fn lease_admits_one_holder_per_name<S: ProjectionStore + Clone>(store: &S) {
    let (flights, bookings) = (unique("flights"), unique("bookings"));
    let first = try_lease(store, &flights)
        .await
        .expect("a lease no one holds is free");
    for attempt in 1..=2 {
        assert!(
            try_lease(store, &flights).await.is_none(),
            "a held lease was taken again (attempt {attempt})"
        );
    }
    let other = try_lease(store, &bookings)
        .await
        .expect("holding one projection's lease blocks another's");
    assert!(
        try_lease(store, &bookings).await.is_none(),
        "the second projection's lease was taken twice"
    );
    assert!(
        try_lease(store, &flights).await.is_none(),
        "taking another projection's lease freed the first"
    );
    other.release().await;
    first.release().await;
}

/// A released lease can be taken again, by one holder; releasing one lease
/// frees no other.
pub async fn released_lease_is_free_again<S: ProjectionStore + Clone>(store: &S) {
    let (flights, bookings) = (unique("flights"), unique("bookings"));
    let first = try_lease(store, &flights)
        .await
        .expect("a lease no one holds is free");
    let other = try_lease(store, &bookings)
        .await
        .expect("another projection's lease is free");
    first.release().await;
    let second = try_lease(store, &flights)
        .await
        .expect("a released lease is free again");
    assert!(
        try_lease(store, &flights).await.is_none(),
        "a lease taken again after its release has two holders"
    );
    assert!(
        try_lease(store, &bookings).await.is_none(),
        "releasing one projection's lease freed another's"
    );
    second.release().await;
    other.release().await;
    for round in 1..=3 {
        let lease = try_lease(store, &flights)
            .await
            .unwrap_or_else(|| panic!("round {round}: a released lease is not free"));
        lease.release().await;
    }
}

/// A lease whose holder lives is not lost, and stays held.
pub async fn held_lease_is_not_lost<S: ProjectionStore + Clone>(store: &S) {
    let name = unique("flights");
    let mut lease = try_lease(store, &name)
        .await
        .expect("a lease no one holds is free");
    assert!(
        tokio::time::timeout(LEASE_WATCH, lease.lost())
            .await
            .is_err(),
        "a lease held by a live holder was reported lost within {LEASE_WATCH:?}"
    );
    assert!(
        try_lease(store, &name).await.is_none(),
        "a lease watched for loss was taken by another"
    );
    lease.release().await;
}
