//! Conditional appends under contention: many tasks on a pool of many
//! connections claim usernames and reserve seats on a few overlapping tags
//! for a bounded time, with plain appends mixed in; then a checker over the
//! final log proves that no successful conditional append passed a matching
//! event (between the position its decision read up to and its own), and
//! that each username was claimed exactly once. The same load on disjoint
//! tags meets no conflict at all.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::{
    AppendCondition, AppendOptions, EventFilter, EventStore, ExpectedVersion, NewEvent, Position,
    Query, QueryItem, RecordedEvent, StoreError,
};
use annals_postgres::PgEventStore;
use annals_testkit::PgTest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

const TASKS: usize = 64;
const CONNECTIONS: u32 = 32;
const NAMES: usize = 8;
const FLIGHTS: usize = 3;
const SEATS: usize = 4;

fn event(event_type: &str, tags: Vec<String>) -> NewEvent {
    let mut event = common::event(event_type, 0);
    event.tags = tags;
    event
}

/// Claims of a username: any `UsernameClaimed` event tagged with it.
fn claims(name: &str) -> Query {
    Query::new().or(QueryItem::types(["UsernameClaimed"]).and_tagged([format!("user:{name}")]))
}

/// What decides a seat: its reservations, releases and blocks.
fn seat(seat: &str) -> Query {
    Query::new().or(
        QueryItem::types(["SeatReserved", "SeatReleased", "SeatBlocked"])
            .and_tagged([format!("seat:{seat}")]),
    )
}

/// A successful conditional append: what it asked, and where it landed.
struct Success {
    query: Query,
    after: Option<Position>,
    position: Position,
}

#[derive(Default)]
struct Tally {
    attempts: u64,
    conflicts: u64,
    plain: u64,
    successes: Vec<Success>,
}

/// A store on a pool of `CONNECTIONS` in a fresh schema.
async fn store(group_commit: bool) -> Option<(PgTest, PgEventStore)> {
    let pg = annals_testkit::postgres().await?;
    let store = common::options_for(&pg)
        .group_commit(group_commit)
        .from_pool(pg.pool_with(CONNECTIONS).await)
        .expect("store options");
    store.migrate().await.expect("migrate");
    Some((pg, store))
}

/// The state of a seat as read: its last event (if any) decides whether it
/// is taken, and its position is what the decision read up to.
async fn read_seat(store: &PgEventStore, query: &Query) -> (bool, Option<Position>) {
    let mut after = Position::START;
    let mut last: Option<RecordedEvent> = None;
    loop {
        let page = store
            .read_query(query, after, 100)
            .await
            .expect("read_query");
        let full = page.len() == 100;
        if let Some(event) = page.last() {
            after = event.position;
        }
        last = page.into_iter().last().or(last);
        if !full {
            break;
        }
    }
    let taken = last
        .as_ref()
        .is_some_and(|e| e.event_type != "SeatReleased");
    (taken, last.map(|e| e.position))
}

/// Tries a conditional append; counts it.
async fn attempt(
    store: &PgEventStore,
    tally: &mut Tally,
    stream: &str,
    new: NewEvent,
    query: Query,
    after: Option<Position>,
) -> Option<Position> {
    tally.attempts += 1;
    let condition = AppendCondition {
        fail_if_events_match: query.clone(),
        after,
    };
    match store
        .append_if(stream, vec![new], condition, AppendOptions::default())
        .await
    {
        Ok(done) => {
            assert!(!done.repeated);
            tally.successes.push(Success {
                query,
                after,
                position: done.position,
            });
            Some(done.position)
        }
        Err(StoreError::ConditionFailed { position }) => {
            if let Some(after) = after {
                assert!(position > after, "a conflict names an event after {after}");
            }
            tally.conflicts += 1;
            None
        }
        Err(other) => panic!("conditional append to {stream} failed: {other}"),
    }
}

/// One task of the overlapping load, until `deadline`. `waiting`: half the
/// seat decisions also ask about a type nobody writes (an item without a
/// tag, so those appends wait for older transactions instead of locking
/// their tags), racing the others.
async fn overlapping(store: PgEventStore, seed: u64, deadline: Instant, waiting: bool) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        let roll = rng.random_range(0..100);
        if roll < 30 {
            // Claim one of a few usernames, having seen no claim of it.
            let name = format!("name{}", rng.random_range(0..NAMES));
            let new = event("UsernameClaimed", vec![format!("user:{name}")]);
            let stream = format!("account-{}", uuid::Uuid::now_v7());
            attempt(&store, &mut tally, &stream, new, claims(&name), None).await;
        } else if roll < 75 {
            // Reserve a free seat, or release a taken one, after reading it.
            let f = rng.random_range(0..FLIGHTS);
            let id = format!("{f}-{}", rng.random_range(0..SEATS));
            let mut query = seat(&id);
            if waiting && rng.random_bool(0.5) {
                query = query.or(QueryItem::types(["SeatAudited"]));
            }
            let (taken, after) = read_seat(&store, &query).await;
            let kind = if taken {
                "SeatReleased"
            } else {
                "SeatReserved"
            };
            let new = event(kind, vec![format!("seat:{id}"), format!("flight:{f}")]);
            attempt(
                &store,
                &mut tally,
                &format!("flight-{f}"),
                new,
                query,
                after,
            )
            .await;
        } else {
            // Plain appends: blocks that seat decisions must see, on the
            // flights' streams; and events that share a username's tag but
            // not the claims' type.
            let new = if rng.random_bool(0.5) {
                let f = rng.random_range(0..FLIGHTS);
                let id = format!("{f}-{}", rng.random_range(0..SEATS));
                let stream = format!("flight-{f}");
                let new = event(
                    "SeatBlocked",
                    vec![format!("seat:{id}"), format!("flight:{f}")],
                );
                (stream, new)
            } else {
                let name = format!("name{}", rng.random_range(0..NAMES));
                let new = event("ProfileViewed", vec![format!("user:{name}")]);
                (format!("profile-{name}"), new)
            };
            store
                .append(&new.0, ExpectedVersion::Any, vec![new.1])
                .await
                .expect("plain append");
            tally.plain += 1;
        }
    }
    tally
}

/// One task of the disjoint load: its own usernames and seats, the same
/// streams as the others.
async fn disjoint(store: PgEventStore, task: usize, deadline: Instant) -> Tally {
    let mut rng = StdRng::seed_from_u64(task as u64);
    let mut tally = Tally::default();
    let mut claimed = 0;
    // What the task knows of its seats: taken, and its last event.
    let mut seats: HashMap<String, (bool, Option<Position>)> = HashMap::new();
    while Instant::now() < deadline {
        let roll = rng.random_range(0..100);
        if roll < 30 {
            claimed += 1;
            let name = format!("t{task}-name{claimed}");
            let new = event("UsernameClaimed", vec![format!("user:{name}")]);
            let stream = format!("account-{}", uuid::Uuid::now_v7());
            attempt(&store, &mut tally, &stream, new, claims(&name), None).await;
        } else if roll < 75 {
            let f = rng.random_range(0..FLIGHTS);
            let id = format!("t{task}-{f}-{}", rng.random_range(0..2));
            let query = seat(&id);
            let (taken, after) = *seats.entry(id.clone()).or_default();
            let kind = if taken {
                "SeatReleased"
            } else {
                "SeatReserved"
            };
            let new = event(kind, vec![format!("seat:{id}"), format!("flight:{f}")]);
            if let Some(position) = attempt(
                &store,
                &mut tally,
                &format!("flight-{f}"),
                new,
                query,
                after,
            )
            .await
            {
                seats.insert(id, (!taken, Some(position)));
            }
        } else {
            let f = rng.random_range(0..FLIGHTS);
            let new = event(
                "Noted",
                vec![format!("noise:t{task}"), format!("flight:{f}")],
            );
            store
                .append(&format!("flight-{f}"), ExpectedVersion::Any, vec![new])
                .await
                .expect("plain append");
            tally.plain += 1;
        }
    }
    tally
}

/// Runs `TASKS` tasks of a load for `duration`; their tallies merged.
async fn run<F, Fut>(store: &PgEventStore, duration: Duration, task: F) -> Tally
where
    F: Fn(PgEventStore, usize, Instant) -> Fut,
    Fut: std::future::Future<Output = Tally> + Send + 'static,
{
    let deadline = Instant::now() + duration;
    let merged = Arc::new(Mutex::new(Tally::default()));
    let tasks: Vec<_> = (0..TASKS)
        .map(|n| {
            let work = task(store.clone(), n, deadline);
            let merged = merged.clone();
            tokio::spawn(async move {
                let tally = work.await;
                let mut merged = merged.lock().await;
                merged.attempts += tally.attempts;
                merged.conflicts += tally.conflicts;
                merged.plain += tally.plain;
                merged.successes.extend(tally.successes);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    Arc::try_unwrap(merged)
        .ok()
        .expect("every task ended")
        .into_inner()
}

/// The whole log, once everything appended is readable.
async fn whole_log(store: &PgEventStore, last: Position) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.head().await.expect("head") < last {
        assert!(Instant::now() < deadline, "the log never reached {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut log = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store
            .read_all(after, 5_000, &EventFilter::all())
            .await
            .expect("read_all");
        let Some(event) = page.last() else { break };
        after = event.position;
        log.extend(page);
    }
    log
}

/// For each successful conditional append, the events matching its query
/// strictly between its `after` and its own position: there must be none.
fn violations(log: &[RecordedEvent], successes: &[Success]) -> usize {
    // Log indexes by tag, in log order.
    let mut by_tag: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, event) in log.iter().enumerate() {
        for tag in &event.tags {
            by_tag.entry(tag.as_str()).or_default().push(i);
        }
    }
    let mut violations = 0;
    for success in successes {
        let lower = success.after.unwrap_or(Position::START);
        for item in success.query.items() {
            let candidates = item.tags().first().map_or(&[][..], |tag| {
                by_tag.get(tag.as_str()).map_or(&[][..], Vec::as_slice)
            });
            let start = candidates.partition_point(|&i| log[i].position <= lower);
            for &i in &candidates[start..] {
                let event = &log[i];
                if event.position >= success.position {
                    break;
                }
                if item.matches(&event.event_type, &event.tags) {
                    eprintln!(
                        "violation: {} at {} lies between {lower} and {} ({:?})",
                        event.event_type, event.position, success.position, success.query
                    );
                    violations += 1;
                }
            }
        }
    }
    violations
}

/// Every stream's versions follow each other in the log: 1, 2, 3...
fn assert_streams_in_order(log: &[RecordedEvent]) {
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for event in log {
        let last = versions.entry(event.stream_id.as_str()).or_default();
        assert_eq!(
            event.stream_version,
            *last + 1,
            "{} in log order",
            event.stream_id
        );
        *last = event.stream_version;
    }
}

async fn overlapping_load(group_commit: bool, waiting: bool, duration: Duration) {
    let Some((pg, store)) = store(group_commit).await else {
        return;
    };
    let started = Instant::now();
    let tally = run(&store, duration, |store, n, deadline| {
        overlapping(store, n as u64, deadline, waiting)
    })
    .await;
    let elapsed = started.elapsed();
    let last = tally
        .successes
        .iter()
        .map(|s| s.position)
        .max()
        .expect("some conditional append succeeded");
    let log = whole_log(&store, last).await;
    for success in &tally.successes {
        assert!(
            log.iter().any(|e| e.position == success.position),
            "{} is in the log",
            success.position
        );
    }
    let violations = violations(&log, &tally.successes);
    assert_streams_in_order(&log);
    let mut claims_per_name: HashMap<&str, usize> = HashMap::new();
    for event in log.iter().filter(|e| e.event_type == "UsernameClaimed") {
        *claims_per_name.entry(event.tags[0].as_str()).or_default() += 1;
    }
    eprintln!(
        "overlapping load, group commit {group_commit}, waiting {waiting}: {} conditional attempts in {elapsed:.1?} \
         ({:.0}/s), {} succeeded, {} conflicts, {} plain appends, {} events, {violations} violations",
        tally.attempts,
        tally.attempts as f64 / elapsed.as_secs_f64(),
        tally.successes.len(),
        tally.conflicts,
        tally.plain,
        log.len(),
    );
    assert_eq!(violations, 0);
    assert_eq!(claims_per_name.len(), NAMES, "{claims_per_name:?}");
    assert!(
        claims_per_name.values().all(|&n| n == 1),
        "each username claimed once: {claims_per_name:?}"
    );
    assert!(tally.conflicts > 0, "the load contended");
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_conditional_appends_race_without_violations() {
    overlapping_load(true, false, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_conditional_appends_that_lock_and_that_wait_race_without_violations() {
    overlapping_load(true, true, Duration::from_secs(6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_conditional_appends_race_without_violations_alone() {
    overlapping_load(false, false, Duration::from_secs(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_conditional_appends_on_disjoint_tags_never_conflict() {
    let Some((pg, store)) = store(true).await else {
        return;
    };
    let started = Instant::now();
    let tally = run(&store, Duration::from_secs(5), disjoint).await;
    let elapsed = started.elapsed();
    eprintln!(
        "disjoint load: {} conditional attempts in {elapsed:.1?} ({:.0}/s), {} succeeded, \
         {} conflicts, {} plain appends",
        tally.attempts,
        tally.attempts as f64 / elapsed.as_secs_f64(),
        tally.successes.len(),
        tally.conflicts,
        tally.plain,
    );
    assert_eq!(tally.conflicts, 0, "no false conflicts");
    assert!(tally.attempts > 0);
    let last = tally
        .successes
        .iter()
        .map(|s| s.position)
        .max()
        .expect("successes");
    let log = whole_log(&store, last).await;
    assert_eq!(violations(&log, &tally.successes), 0);
    assert_streams_in_order(&log);
    pg.cleanup().await;
}
