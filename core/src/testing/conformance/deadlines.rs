//! The [`ProjectionStore`] contract, second part: process managers'
//! deadlines (scheduled, listed, claimed, held, completed, cancelled, failed,
//! dead-lettered and revived).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::Barrier;
use uuid::Uuid;

use super::helpers::*;
use super::projection_store::{add_dead_letters, letter, logged, retry_dead_letters};
use crate::projection::{Deadline, ProjectionStore};

/// A hold no case outlives: what it claims stays claimed.
const LONG_HOLD: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Now, to the millisecond: PostgreSQL keeps microseconds, so a time with
/// nanoseconds would not come back equal.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

/// Some slack for firing times the store computes from its own clock.
fn millisecond() -> chrono::Duration {
    chrono::Duration::milliseconds(1)
}

fn deadline(process: &str, instance: Uuid, name: &str, due_at: DateTime<Utc>) -> Deadline {
    Deadline::new(process, Uuid::now_v7(), instance, name, due_at)
}

/// A deadline of its own instance named `timeout`.
fn timeout_at(process: &str, due_at: DateTime<Utc>) -> Deadline {
    deadline(process, Uuid::new_v4(), "timeout", due_at)
}

/// `d` as listed after `attempts` claims.
fn claimed(d: &Deadline, attempts: u32) -> Deadline {
    Deadline {
        attempts,
        ..d.clone()
    }
}

/// `d` as listed after `attempts` claims, the last of which failed.
fn failed(d: &Deadline, attempts: u32, error: &str, dead_lettered: bool) -> Deadline {
    Deadline {
        attempts,
        error: Some(error.to_owned()),
        dead_lettered,
        ..d.clone()
    }
}

fn deadline_ids(deadlines: &[Deadline]) -> Vec<Uuid> {
    deadlines.iter().map(|d| d.id).collect()
}

async fn schedule<S: ProjectionStore>(store: &S, deadlines: &[&Deadline]) {
    for d in deadlines {
        store
            .schedule_deadline((*d).clone())
            .await
            .unwrap_or_else(|e| panic!("schedule_deadline({d:?}) failed: {e}"));
    }
}

/// Every deadline of the process, as `deadlines` lists them.
async fn listed<S: ProjectionStore>(store: &S, process: &str) -> Vec<Deadline> {
    listed_at_most(store, process, 1000).await
}

async fn listed_at_most<S: ProjectionStore>(
    store: &S,
    process: &str,
    limit: usize,
) -> Vec<Deadline> {
    store
        .deadlines(process, limit)
        .await
        .unwrap_or_else(|e| panic!("deadlines({process:?}, {limit}) failed: {e}"))
}

async fn next_deadline<S: ProjectionStore>(store: &S, process: &str) -> Option<DateTime<Utc>> {
    store
        .next_deadline(process)
        .await
        .unwrap_or_else(|e| panic!("next_deadline({process:?}) failed: {e}"))
}

async fn claim<S: ProjectionStore>(
    store: &S,
    process: &str,
    due_by: DateTime<Utc>,
    limit: usize,
    hold: Duration,
) -> Vec<Deadline> {
    let claimed = store
        .claim_deadlines(process, due_by, limit, hold)
        .await
        .unwrap_or_else(|e| {
            panic!("claim_deadlines({process:?}, {due_by}, {limit}, {hold:?}) failed: {e}")
        });
    assert!(
        claimed.len() <= limit,
        "claim_deadlines returned {} deadlines with limit {limit}",
        claimed.len()
    );
    claimed
}

async fn complete<S: ProjectionStore>(store: &S, process: &str, id: Uuid) {
    store
        .complete_deadline(process, id)
        .await
        .unwrap_or_else(|e| panic!("complete_deadline({process:?}, {id}) failed: {e}"));
}

async fn fail<S: ProjectionStore>(
    store: &S,
    process: &str,
    id: Uuid,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) {
    store
        .fail_deadline(process, id, error, retry_at)
        .await
        .unwrap_or_else(|e| panic!("fail_deadline({process:?}, {id}, {retry_at:?}) failed: {e}"));
}

async fn cancel<S: ProjectionStore>(store: &S, process: &str, instance: Uuid, name: &str) {
    store
        .cancel_deadlines(process, instance, name)
        .await
        .unwrap_or_else(|e| {
            panic!("cancel_deadlines({process:?}, {instance}, {name:?}) failed: {e}")
        });
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

/// Scheduling a deadline again under its id changes nothing: not its time or
/// name, not its attempts, not a claim's hold.
pub async fn scheduling_a_deadline_is_idempotent<S: ProjectionStore + Clone>(store: &S) {
    let process = unique("process");
    let t = now();
    let d = timeout_at(&process, t - minutes(1));
    schedule(store, &[&d, &d]).await;
    assert_eq!(
        listed(store, &process).await,
        std::slice::from_ref(&d),
        "a deadline scheduled twice"
    );

    let changed = Deadline {
        name: "reminder".to_owned(),
        due_at: t + minutes(60),
        ..d.clone()
    };
    schedule(store, &[&changed]).await;
    assert_eq!(
        listed(store, &process).await,
        std::slice::from_ref(&d),
        "scheduling again under the same id changed the deadline"
    );

    assert_eq!(
        claim(store, &process, t, 10, LONG_HOLD).await,
        [claimed(&d, 1)],
        "claiming the due deadline"
    );
    schedule(store, &[&d]).await;
    assert_eq!(
        listed(store, &process).await,
        [claimed(&d, 1)],
        "scheduling a claimed deadline again reset its attempts"
    );
    assert!(
        claim(store, &process, t, 10, LONG_HOLD).await.is_empty(),
        "scheduling a claimed deadline again ended the claim's hold"
    );
}

/// `deadlines` lists the process's deadlines earliest due first, dead
/// letters included, at most `limit`.
pub async fn deadlines_are_listed_earliest_first<S: ProjectionStore + Clone>(store: &S) {
    let (process, other) = (unique("process"), unique("other-process"));
    let t = now();
    let [in_3m, ago_2m, in_1h, ago_10m, at_t] = [
        minutes(3),
        minutes(-2),
        minutes(60),
        minutes(-10),
        minutes(0),
    ]
    .map(|offset| timeout_at(&process, t + offset));
    let theirs = timeout_at(&other, t - minutes(60));
    schedule(store, &[&in_3m, &ago_2m, &theirs, &in_1h, &ago_10m, &at_t]).await;
    assert!(
        listed(store, &unique("process")).await.is_empty(),
        "an unknown process has deadlines"
    );

    assert_eq!(
        claim(store, &process, t, 1, LONG_HOLD).await,
        [claimed(&ago_10m, 1)],
        "claiming the earliest deadline"
    );
    fail(store, &process, ago_10m.id, "gave up", None).await;
    let expected = [
        failed(&ago_10m, 1, "gave up", true),
        ago_2m,
        at_t,
        in_3m,
        in_1h,
    ];
    assert_eq!(
        listed(store, &process).await,
        expected,
        "deadlines, earliest due first, with the dead letter"
    );
    assert_eq!(
        listed_at_most(store, &process, 2).await,
        expected[..2],
        "deadlines with limit 2"
    );
    assert!(
        listed_at_most(store, &process, 0).await.is_empty(),
        "deadlines with limit 0"
    );
    assert_eq!(
        listed(store, &other).await,
        [theirs],
        "another process's deadlines"
    );
}

/// `next_deadline` is the earliest time a live deadline is to fire: its due
/// time, the end of a claim's hold, a retry time; dead letters and other
/// processes aside; `None` when nothing is pending.
pub async fn next_deadline_is_the_earliest_live_firing_time<S: ProjectionStore + Clone>(store: &S) {
    let (process, other) = (unique("process"), unique("other-process"));
    assert_eq!(
        next_deadline(store, &process).await,
        None,
        "the next deadline of a process with none"
    );
    let t = now();
    let [early, middle, late] =
        [minutes(-5), minutes(10), minutes(20)].map(|offset| timeout_at(&process, t + offset));
    let theirs = timeout_at(&other, t - minutes(60));
    schedule(store, &[&late, &theirs, &early, &middle]).await;
    assert_eq!(
        next_deadline(store, &process).await,
        Some(early.due_at),
        "the next deadline is the earliest due"
    );

    // Claimed and held for an hour: the next one due comes first.
    assert_eq!(
        claim(store, &process, t, 1, LONG_HOLD).await,
        [claimed(&early, 1)]
    );
    assert_eq!(
        next_deadline(store, &process).await,
        Some(middle.due_at),
        "a claimed deadline still counts for its due time"
    );

    // Failed, to be retried before the others.
    let retry_at = t + minutes(5);
    fail(store, &process, early.id, "boom", Some(retry_at)).await;
    assert_eq!(
        next_deadline(store, &process).await,
        Some(retry_at),
        "a failed deadline's retry time is not the next firing time"
    );

    // Claimed again and dead-lettered: no longer pending.
    assert_eq!(
        claim(store, &process, retry_at, 10, LONG_HOLD).await,
        [failed(&early, 2, "boom", false)]
    );
    fail(store, &process, early.id, "gave up", None).await;
    assert_eq!(
        next_deadline(store, &process).await,
        Some(middle.due_at),
        "a dead letter counts as pending"
    );
    complete(store, &process, middle.id).await;
    assert_eq!(
        next_deadline(store, &process).await,
        Some(late.due_at),
        "a completed deadline counts as pending"
    );
    complete(store, &process, late.id).await;
    assert_eq!(
        next_deadline(store, &process).await,
        None,
        "only a dead letter is left, yet a deadline is pending"
    );
    assert_eq!(
        next_deadline(store, &other).await,
        Some(theirs.due_at),
        "another process's next deadline"
    );
}

/// `claim_deadlines` takes the process's deadlines due by `due_by` (at or
/// before it), earliest first, at most `limit`, and counts an attempt; other
/// processes' deadlines are left alone.
pub async fn claim_takes_due_deadlines_earliest_first<S: ProjectionStore + Clone>(store: &S) {
    let (process, other) = (unique("process"), unique("other-process"));
    let t = now();
    let [d1, d2, d3, d4, future] = [
        minutes(-3),
        minutes(-2),
        minutes(-1),
        minutes(0),
        minutes(10),
    ]
    .map(|offset| timeout_at(&process, t + offset));
    let theirs = timeout_at(&other, t - minutes(5));
    schedule(store, &[&d3, &future, &d1, &theirs, &d4, &d2]).await;

    assert!(
        claim(store, &process, t, 0, LONG_HOLD).await.is_empty(),
        "a claim with limit 0"
    );
    assert!(
        listed(store, &process)
            .await
            .iter()
            .all(|d| d.attempts == 0),
        "a claim with limit 0 counted attempts"
    );
    assert!(
        claim(store, &process, t - minutes(4), 10, LONG_HOLD)
            .await
            .is_empty(),
        "a claim took deadlines due after its due_by"
    );

    assert_eq!(
        claim(store, &process, t, 2, LONG_HOLD).await,
        [claimed(&d1, 1), claimed(&d2, 1)],
        "a claim with limit 2 takes the two earliest"
    );
    assert_eq!(
        claim(store, &process, t, 10, LONG_HOLD).await,
        [claimed(&d3, 1), claimed(&d4, 1)],
        "a second claim takes the rest of the due deadlines (one due exactly at due_by)"
    );
    assert!(
        claim(store, &process, t, 10, LONG_HOLD).await.is_empty(),
        "a claim found deadlines after every due one was claimed"
    );
    assert_eq!(
        listed(store, &other).await,
        std::slice::from_ref(&theirs),
        "claims of one process touched another's deadlines"
    );
    assert_eq!(
        claim(store, &other, t, 10, LONG_HOLD).await,
        [claimed(&theirs, 1)],
        "another process claims its own deadline"
    );
    assert_eq!(
        claim(store, &process, t + minutes(10), 10, LONG_HOLD).await,
        [claimed(&future, 1)],
        "a later claim takes the deadline then due, and none of those held"
    );
    assert_eq!(
        listed(store, &process).await,
        [d1, d2, d3, d4, future].map(|d| claimed(&d, 1)),
        "deadlines after one claim each"
    );
}

/// A claimed deadline is hidden from claims until its hold passes, which
/// moves its firing time to the end of the hold; then it is claimed again,
/// a second attempt.
pub async fn claimed_deadline_is_held_then_claimable_again<S: ProjectionStore + Clone>(store: &S) {
    // Long enough that the claims right after this one come before its end.
    const HOLD: Duration = Duration::from_secs(5);
    let hold = chrono::Duration::from_std(HOLD).expect("a short hold");
    let process = unique("process");
    let d = timeout_at(&process, now() - minutes(1));
    schedule(store, &[&d]).await;

    let before = Utc::now();
    assert_eq!(
        claim(store, &process, before, 10, HOLD).await,
        [claimed(&d, 1)],
        "the first claim"
    );
    let after = Utc::now();
    assert!(
        claim(store, &process, Utc::now(), 10, HOLD)
            .await
            .is_empty(),
        "a claimed deadline was claimed again during its hold"
    );
    let next = next_deadline(store, &process)
        .await
        .expect("a claimed deadline is still pending");
    assert!(
        next >= before + hold - millisecond() && next <= after + hold + millisecond(),
        "the firing time of a deadline claimed between {before} and {after} for {HOLD:?} \
         is {next}, not the end of the hold"
    );
    assert!(
        claim(store, &process, before + hold - millisecond(), 10, HOLD)
            .await
            .is_empty(),
        "a claimed deadline was claimed again before the end of its hold"
    );
    let past_the_hold = after + hold + millisecond();
    assert_eq!(
        claim(store, &process, past_the_hold, 10, LONG_HOLD).await,
        [claimed(&d, 2)],
        "a deadline whose hold passed is claimed again, a second attempt"
    );
    assert!(
        claim(store, &process, past_the_hold, 10, LONG_HOLD)
            .await
            .is_empty(),
        "a claim again ignored a hold"
    );
}

/// Claimers racing for the deadlines of one process never get the same
/// deadline: each is claimed exactly once.
pub async fn concurrent_claims_never_share_a_deadline<S: ProjectionStore + Clone>(store: &S) {
    const DEADLINES: i64 = 50;
    const CLAIMERS: usize = 4;
    const LIMIT: usize = 5;
    let process = unique("process");
    let t = now();
    let all: Vec<Deadline> = (0..DEADLINES)
        .map(|i| timeout_at(&process, t - chrono::Duration::seconds(i)))
        .collect();
    schedule(store, &all.iter().collect::<Vec<_>>()).await;

    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let claimers: Vec<_> = (0..CLAIMERS)
        .map(|_| {
            let (store, process, barrier) = (store.clone(), process.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut mine = Vec::new();
                // Every claim but the last takes one deadline at least.
                for _ in 0..=DEADLINES {
                    let got = claim(&store, &process, t, LIMIT, LONG_HOLD).await;
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got);
                    tokio::task::yield_now().await;
                }
                panic!("claims kept returning deadlines after {DEADLINES} were claimed");
            })
        })
        .collect();
    let mut times_claimed: HashMap<Uuid, usize> = HashMap::new();
    for claimer in claimers {
        for d in join(claimer).await {
            assert_eq!(d.attempts, 1, "deadline {} claimed with {d:?}", d.id);
            *times_claimed.entry(d.id).or_default() += 1;
        }
    }
    let shared: Vec<_> = times_claimed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        shared.is_empty(),
        "deadlines claimed more than once (id, times): {shared:?}"
    );
    let missed: Vec<_> = deadline_ids(&all)
        .into_iter()
        .filter(|id| !times_claimed.contains_key(id))
        .collect();
    assert!(
        missed.is_empty(),
        "due deadlines no claimer got: {missed:?}"
    );
    assert!(
        listed(store, &process)
            .await
            .iter()
            .all(|d| d.attempts == 1),
        "a deadline claimed once counts other than one attempt"
    );
}

/// `complete_deadline` removes the process's deadline, claimed or not; it
/// never fires again.
pub async fn completed_deadline_is_removed<S: ProjectionStore + Clone>(store: &S) {
    let (process, other) = (unique("process"), unique("other-process"));
    let t = now();
    let [a, b, later] =
        [minutes(-2), minutes(-1), minutes(60)].map(|offset| timeout_at(&process, t + offset));
    schedule(store, &[&a, &b, &later]).await;
    assert_eq!(
        claim(store, &process, t, 10, LONG_HOLD).await,
        [claimed(&a, 1), claimed(&b, 1)]
    );

    complete(store, &process, a.id).await;
    assert_eq!(
        listed(store, &process).await,
        [claimed(&b, 1), later.clone()],
        "a completed deadline is still listed"
    );
    complete(store, &process, later.id).await;
    assert_eq!(
        listed(store, &process).await,
        [claimed(&b, 1)],
        "a deadline completed before it was claimed is still listed"
    );

    complete(store, &process, Uuid::new_v4()).await;
    complete(store, &other, b.id).await;
    assert_eq!(
        listed(store, &process).await,
        [claimed(&b, 1)],
        "completing an unknown id, or the id under another process, removed a deadline"
    );

    complete(store, &process, b.id).await;
    assert!(listed(store, &process).await.is_empty());
    assert_eq!(next_deadline(store, &process).await, None);
    assert!(
        claim(store, &process, t + minutes(24 * 60), 10, LONG_HOLD)
            .await
            .is_empty(),
        "a completed deadline was claimed after its hold"
    );
}

/// `cancel_deadlines` removes the instance's deadlines of that name that
/// were never claimed; claimed ones (also those waiting for a retry), other
/// names, instances and processes stay.
pub async fn cancel_removes_only_unclaimed_deadlines_of_that_instance_and_name<
    S: ProjectionStore + Clone,
>(
    store: &S,
) {
    let (process, other) = (unique("process"), unique("other-process"));
    let (instance, another) = (Uuid::new_v4(), Uuid::new_v4());
    let t = now();
    let firing = deadline(&process, instance, "timeout", t - minutes(1));
    let pending = deadline(&process, instance, "timeout", t + minutes(10));
    let pending_too = deadline(&process, instance, "timeout", t + minutes(20));
    let reminder = deadline(&process, instance, "reminder", t + minutes(11));
    let theirs = deadline(&process, another, "timeout", t + minutes(12));
    let other_process = deadline(&other, instance, "timeout", t + minutes(10));
    schedule(
        store,
        &[
            &firing,
            &pending,
            &pending_too,
            &reminder,
            &theirs,
            &other_process,
        ],
    )
    .await;
    assert_eq!(
        claim(store, &process, t, 10, LONG_HOLD).await,
        [claimed(&firing, 1)]
    );

    cancel(store, &process, instance, "timeout").await;
    let expected = [claimed(&firing, 1), reminder.clone(), theirs.clone()];
    assert_eq!(
        listed(store, &process).await,
        expected,
        "cancelling the instance's timeouts: the claimed one, the reminder and another \
         instance's timeout stay, the unclaimed timeouts go"
    );
    assert_eq!(
        listed(store, &other).await,
        [other_process],
        "cancelling removed another process's deadline"
    );

    cancel(store, &process, Uuid::new_v4(), "timeout").await;
    cancel(store, &process, another, "reminder").await;
    assert_eq!(
        listed(store, &process).await,
        expected,
        "cancelling what no instance has removed deadlines"
    );

    // Failed, waiting for its retry: it started firing, so it stays.
    fail(store, &process, firing.id, "boom", Some(t + minutes(5))).await;
    cancel(store, &process, instance, "timeout").await;
    assert_eq!(
        listed(store, &process).await[0],
        failed(&firing, 1, "boom", false),
        "cancelling removed a deadline that had started firing"
    );
}

/// A failed deadline given a retry time keeps its error and fires again at
/// that time, not before.
pub async fn failed_deadline_fires_again_at_its_retry_time<S: ProjectionStore + Clone>(store: &S) {
    let process = unique("process");
    let t = now();
    let d = timeout_at(&process, t - minutes(1));
    schedule(store, &[&d]).await;
    assert_eq!(
        claim(store, &process, t, 10, LONG_HOLD).await,
        [claimed(&d, 1)]
    );

    let retry_at = t + minutes(10);
    fail(store, &process, d.id, "boom", Some(retry_at)).await;
    assert_eq!(
        listed(store, &process).await,
        [failed(&d, 1, "boom", false)],
        "a deadline failed with a retry time"
    );
    assert_eq!(
        next_deadline(store, &process).await,
        Some(retry_at),
        "a failed deadline's next firing time"
    );
    assert!(
        claim(store, &process, retry_at - millisecond(), 10, LONG_HOLD)
            .await
            .is_empty(),
        "a failed deadline was claimed before its retry time"
    );
    assert_eq!(
        claim(store, &process, retry_at, 10, LONG_HOLD).await,
        [failed(&d, 2, "boom", false)],
        "a failed deadline is claimed again at its retry time, with its error"
    );

    // Retry times that reverse two deadlines' firing order do not reverse
    // the order a claim returns them in: an instance's deadlines fire in the
    // order they were due.
    let instance = Uuid::new_v4();
    let first = deadline(&process, instance, "reminder", t - minutes(2));
    let second = deadline(&process, instance, "timeout", t - minutes(1));
    schedule(store, &[&second, &first]).await;
    assert_eq!(
        claim(store, &process, t, 10, LONG_HOLD).await,
        [claimed(&first, 1), claimed(&second, 1)]
    );
    fail(store, &process, first.id, "boom", Some(t + minutes(2))).await;
    fail(store, &process, second.id, "boom", Some(t + minutes(1))).await;
    assert_eq!(
        claim(store, &process, t + minutes(2), 10, LONG_HOLD).await,
        [
            failed(&first, 2, "boom", false),
            failed(&second, 2, "boom", false)
        ],
        "a claim does not return deadlines earliest due first"
    );
}

/// A failed deadline given no retry time is a dead letter: listed with its
/// error, but neither pending nor claimed.
pub async fn failed_deadline_without_retry_is_dead_lettered<S: ProjectionStore + Clone>(store: &S) {
    let process = unique("process");
    let t = now();
    let d = timeout_at(&process, t - minutes(2));
    schedule(store, &[&d]).await;
    assert_eq!(
        claim(store, &process, t, 10, LONG_HOLD).await,
        [claimed(&d, 1)]
    );
    fail(store, &process, d.id, "gave up", None).await;
    assert_eq!(
        listed(store, &process).await,
        [failed(&d, 1, "gave up", true)],
        "a deadline failed with no retry time is not listed as a dead letter"
    );
    assert_eq!(
        next_deadline(store, &process).await,
        None,
        "a dead letter is pending"
    );

    let live = timeout_at(&process, t + minutes(10));
    schedule(store, &[&live]).await;
    assert_eq!(
        next_deadline(store, &process).await,
        Some(live.due_at),
        "the next deadline beside a dead letter"
    );
    // Before the end of the hold of what it claims.
    let later = t + minutes(30);
    assert_eq!(
        claim(store, &process, later, 10, LONG_HOLD).await,
        [claimed(&live, 1)],
        "a claim beside a dead letter"
    );
    assert!(
        claim(store, &process, later, 10, LONG_HOLD)
            .await
            .is_empty(),
        "a claim took a dead letter"
    );
    assert_eq!(
        listed(store, &process).await,
        [failed(&d, 1, "gave up", true), claimed(&live, 1)],
        "a dead letter after claims"
    );
}

/// `retry_dead_letters` revives the dead-lettered deadlines of the process of
/// that name, due to fire now, and counts them with the projection's dead
/// letters; deadlines waiting for a retry time and other processes' dead
/// letters are left.
pub async fn request_retry_revives_dead_lettered_deadlines<S: ProjectionStore + Clone>(store: &S) {
    let (process, other) = (unique("process"), unique("other-process"));
    let t = now();
    let [dead, dead_too, waiting] =
        [minutes(-3), minutes(-2), minutes(-1)].map(|offset| timeout_at(&process, t + offset));
    let theirs = timeout_at(&other, t - minutes(1));
    schedule(store, &[&dead, &dead_too, &waiting, &theirs]).await;
    let events = logged(store, 1).await;
    add_dead_letters(store, &process, vec![letter(&events[0], Some("boom"), 1)]).await;

    assert_eq!(claim(store, &process, t, 10, LONG_HOLD).await.len(), 3);
    assert_eq!(claim(store, &other, t, 10, LONG_HOLD).await.len(), 1);
    fail(store, &process, dead.id, "gave up", None).await;
    fail(store, &process, dead_too.id, "gave up too", None).await;
    let retry_at = t + minutes(60);
    fail(store, &process, waiting.id, "later", Some(retry_at)).await;
    fail(store, &other, theirs.id, "theirs", None).await;

    let before = Utc::now();
    assert_eq!(
        retry_dead_letters(store, &process).await,
        3,
        "retry_dead_letters counts one dead letter and two dead-lettered deadlines"
    );
    let after = Utc::now();
    let revived = [
        failed(&dead, 1, "gave up", false),
        failed(&dead_too, 1, "gave up too", false),
    ];
    assert_eq!(
        listed(store, &process).await,
        [
            revived[0].clone(),
            revived[1].clone(),
            failed(&waiting, 1, "later", false)
        ],
        "deadlines after a retry request"
    );
    let next = next_deadline(store, &process)
        .await
        .expect("revived deadlines are pending");
    assert!(
        next >= before - millisecond() && next <= after + millisecond(),
        "revived deadlines fire at {next}, not at the retry request (between {before} and {after})"
    );
    let revived_claims = claim(store, &process, Utc::now(), 10, LONG_HOLD).await;
    assert_eq!(
        revived_claims,
        [
            failed(&dead, 2, "gave up", false),
            failed(&dead_too, 2, "gave up too", false)
        ],
        "revived deadlines are claimed now, and only they"
    );

    assert_eq!(
        listed(store, &other).await,
        [failed(&theirs, 1, "theirs", true)],
        "a retry request revived another process's dead letter"
    );
    assert_eq!(
        retry_dead_letters(store, &process).await,
        1,
        "a second request counts the dead letter alone: no deadline is dead-lettered"
    );
}
