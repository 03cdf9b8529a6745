//! The [`ProjectionStore`] contract, first part: dead letters and the
//! single-runner lease (deadlines are in `deadlines.rs`).

use std::time::Duration;

use uuid::Uuid;

use super::helpers::*;
use crate::envelope::RecordedEvent;
use crate::projection::{DeadLetter, Lease, ProjectionStore};
use crate::store::{EventFilter, ExpectedVersion};

/// How long a held lease is watched to make sure it is not lost: past the
/// PostgreSQL lease's time to live (5 s), so that its renewals are watched.
const LEASE_WATCH: Duration = Duration::from_millis(6000);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `count` events appended over two streams, as read back from the log.
pub(super) async fn logged<S: ProjectionStore>(store: &S, count: u64) -> Vec<RecordedEvent> {
    let start = head(store).await;
    let streams = [unique("dead-lettered"), unique("dead-lettered")];
    let mut last = start;
    for n in 0..count {
        let stream = &streams[(n % 2) as usize];
        last = append(store, stream, ExpectedVersion::Any, ticks(1))
            .await
            .position;
    }
    settle(store, last).await;
    let events = read_all_paged(store, start, 100, &EventFilter::all()).await;
    assert_eq!(
        events.len(),
        count as usize,
        "events appended to be dead-lettered"
    );
    events
}

/// `event` dead-lettered with this error and attempts, not marked for a retry.
pub(super) fn letter(event: &RecordedEvent, error: Option<&str>, attempts: u32) -> DeadLetter {
    DeadLetter {
        event: event.clone(),
        error: error.map(str::to_owned),
        attempts,
        retry_requested: false,
    }
}

pub(super) async fn add_dead_letters<S: ProjectionStore>(
    store: &S,
    projection: &str,
    events: Vec<DeadLetter>,
) {
    store
        .add_dead_letters(projection, events)
        .await
        .unwrap_or_else(|e| panic!("add_dead_letters({projection:?}) failed: {e}"));
}

async fn dead_letters_of<S: ProjectionStore>(store: &S, projection: &str) -> Vec<DeadLetter> {
    store
        .dead_letters(projection)
        .await
        .unwrap_or_else(|e| panic!("dead_letters({projection:?}) failed: {e}"))
}

async fn dead_letter_ids<S: ProjectionStore>(store: &S, projection: &str) -> Vec<Uuid> {
    dead_letters_of(store, projection)
        .await
        .iter()
        .map(|p| p.event.event_id)
        .collect()
}

async fn remove_dead_letters<S: ProjectionStore>(store: &S, projection: &str, ids: &[Uuid]) {
    store
        .remove_dead_letters(projection, ids)
        .await
        .unwrap_or_else(|e| panic!("remove_dead_letters({projection:?}, {ids:?}) failed: {e}"));
}

pub(super) async fn retry_dead_letters<S: ProjectionStore>(store: &S, name: &str) -> u64 {
    store
        .retry_dead_letters(name)
        .await
        .unwrap_or_else(|e| panic!("retry_dead_letters({name:?}) failed: {e}"))
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

/// Dead letters are listed in log order, whatever order they were dead-lettered
/// in, with their error, attempts and retry mark as dead-lettered.
pub async fn dead_letters_are_listed_in_log_order<S: ProjectionStore + Clone>(store: &S) {
    let events = logged(store, 5).await;
    let projection = unique("projection");
    assert!(
        dead_letters_of(store, &projection).await.is_empty(),
        "a projection that dead-lettered nothing has dead letters"
    );
    add_dead_letters(
        store,
        &projection,
        vec![
            letter(&events[3], Some("boom"), 2),
            letter(&events[1], None, 0),
        ],
    )
    .await;
    add_dead_letters(
        store,
        &projection,
        vec![
            letter(&events[4], None, 0),
            letter(&events[0], Some("first"), 1),
        ],
    )
    .await;
    assert_eq!(
        dead_letters_of(store, &projection).await,
        [
            letter(&events[0], Some("first"), 1),
            letter(&events[1], None, 0),
            letter(&events[3], Some("boom"), 2),
            letter(&events[4], None, 0),
        ],
        "dead letters are not listed in log order as dead-lettered"
    );
}

/// Dead-lettering an event again replaces its error, attempts and retry mark; it is
/// never listed twice.
pub async fn dead_lettering_again_updates_without_duplicating<S: ProjectionStore + Clone>(
    store: &S,
) {
    let events = logged(store, 3).await;
    let projection = unique("projection");
    add_dead_letters(
        store,
        &projection,
        vec![
            letter(&events[0], Some("boom"), 1),
            letter(&events[1], None, 0),
            letter(&events[2], Some("bang"), 1),
        ],
    )
    .await;
    add_dead_letters(
        store,
        &projection,
        vec![
            letter(&events[1], Some("fails on its own now"), 1),
            letter(&events[0], Some("boom again"), 2),
        ],
    )
    .await;
    assert_eq!(
        dead_letters_of(store, &projection).await,
        [
            letter(&events[0], Some("boom again"), 2),
            letter(&events[1], Some("fails on its own now"), 1),
            letter(&events[2], Some("bang"), 1),
        ],
        "dead-lettering again does not replace error and attempts, or duplicates"
    );

    // A runner dead-letters a retried event again without the mark, and with no
    // error when it only waits behind another.
    retry_dead_letters(store, &projection).await;
    add_dead_letters(store, &projection, vec![letter(&events[2], None, 2)]).await;
    let marked = |p: DeadLetter| DeadLetter {
        retry_requested: true,
        ..p
    };
    assert_eq!(
        dead_letters_of(store, &projection).await,
        [
            marked(letter(&events[0], Some("boom again"), 2)),
            marked(letter(&events[1], Some("fails on its own now"), 1)),
            letter(&events[2], None, 2),
        ],
        "dead-lettering again after a retry request"
    );
}

/// Each projection has dead letters of its own, even of the same event.
pub async fn dead_letters_are_kept_per_projection<S: ProjectionStore + Clone>(store: &S) {
    let events = logged(store, 3).await;
    let (a, b) = (unique("projection-a"), unique("projection-b"));
    add_dead_letters(
        store,
        &a,
        vec![
            letter(&events[0], Some("in a"), 1),
            letter(&events[1], None, 0),
        ],
    )
    .await;
    add_dead_letters(
        store,
        &b,
        vec![
            letter(&events[2], None, 0),
            letter(&events[1], Some("in b"), 5),
        ],
    )
    .await;
    assert_eq!(
        dead_letters_of(store, &a).await,
        [
            letter(&events[0], Some("in a"), 1),
            letter(&events[1], None, 0)
        ],
        "the first projection's dead letters"
    );
    assert_eq!(
        dead_letters_of(store, &b).await,
        [
            letter(&events[1], Some("in b"), 5),
            letter(&events[2], None, 0)
        ],
        "the second projection's dead letters"
    );
    assert!(
        dead_letters_of(store, &unique("projection"))
            .await
            .is_empty(),
        "another projection's dead letters are listed for one that dead-lettered nothing"
    );
}

/// `retry_dead_letters` marks every dead letter of that projection alone and
/// returns how many it has.
pub async fn request_retry_marks_every_dead_letter<S: ProjectionStore + Clone>(store: &S) {
    let events = logged(store, 3).await;
    let (a, b) = (unique("projection-a"), unique("projection-b"));
    add_dead_letters(
        store,
        &a,
        vec![
            letter(&events[0], None, 0),
            letter(&events[1], Some("boom"), 3),
        ],
    )
    .await;
    add_dead_letters(store, &b, vec![letter(&events[2], Some("elsewhere"), 1)]).await;

    assert_eq!(
        retry_dead_letters(store, &a).await,
        2,
        "retry_dead_letters counts the projection's dead letters"
    );
    let marked: Vec<_> = [
        letter(&events[0], None, 0),
        letter(&events[1], Some("boom"), 3),
    ]
    .into_iter()
    .map(|p| DeadLetter {
        retry_requested: true,
        ..p
    })
    .collect();
    assert_eq!(
        dead_letters_of(store, &a).await,
        marked,
        "retry_dead_letters does not mark every dead letter, and only that"
    );
    assert_eq!(
        dead_letters_of(store, &b).await,
        [letter(&events[2], Some("elsewhere"), 1)],
        "retry_dead_letters marked another projection's dead letters"
    );
    assert_eq!(
        retry_dead_letters(store, &a).await,
        2,
        "a second request counts the dead letters already marked"
    );
    assert_eq!(
        retry_dead_letters(store, &unique("projection")).await,
        0,
        "retry_dead_letters of a projection with no dead letters"
    );
}

/// `remove_dead_letters` removes the given events of that projection, and nothing else.
pub async fn removing_dead_letters_removes_only_the_given_events<S: ProjectionStore + Clone>(
    store: &S,
) {
    let events = logged(store, 4).await;
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let (a, b) = (unique("projection-a"), unique("projection-b"));
    add_dead_letters(
        store,
        &a,
        events.iter().map(|e| letter(e, Some("boom"), 1)).collect(),
    )
    .await;
    add_dead_letters(
        store,
        &b,
        vec![letter(&events[1], None, 0), letter(&events[2], None, 0)],
    )
    .await;

    remove_dead_letters(store, &a, &[ids[3], ids[1]]).await;
    assert_eq!(
        dead_letter_ids(store, &a).await,
        [ids[0], ids[2]],
        "remove_dead_letters removed the wrong dead letters"
    );
    assert_eq!(
        dead_letter_ids(store, &b).await,
        [ids[1], ids[2]],
        "remove_dead_letters removed another projection's dead letters"
    );

    remove_dead_letters(store, &a, &[]).await;
    remove_dead_letters(store, &a, &[Uuid::new_v4()]).await;
    remove_dead_letters(store, &unique("projection"), &[ids[0]]).await;
    assert_eq!(
        dead_letter_ids(store, &a).await,
        [ids[0], ids[2]],
        "removing dead letters nothing, an unknown event or another projection's removed dead letters"
    );

    remove_dead_letters(store, &a, &[ids[0], ids[2]]).await;
    assert!(
        dead_letters_of(store, &a).await.is_empty(),
        "removing dead letters every dead letter left some"
    );
    assert_eq!(dead_letter_ids(store, &b).await, [ids[1], ids[2]]);
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
