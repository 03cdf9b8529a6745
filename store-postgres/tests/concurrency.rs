//! Concurrency: the gap-free global log under many writers and long
//! transactions, what a naive reader would miss, and optimistic concurrency.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use annals::{
    AppendOptions, EventFilter, EventStore, ExpectedVersion, Position, RecordedEvent, StoreError,
};
use annals_postgres::PgEventStore;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Barrier, Mutex};
use uuid::Uuid;

const WRITERS: usize = 16;
const TOTAL_EVENTS: i64 = 20_000;
const STREAMS: usize = 200;

/// Which events were committed, per stream in version order (as the
/// writers learnt from their appends).
#[derive(Default)]
struct Committed {
    ids: HashSet<Uuid>,
    rolled_back: HashSet<Uuid>,
}

/// One writer: appends random batches to random streams until the budget is
/// spent. Most appends are pooled (`Any`, or `Exact` after reading the
/// version, retried on conflict); some run inside a transaction that takes
/// its transaction id first and stays open for a few hundred milliseconds,
/// and one in ten of those rolls back.
async fn writer(
    store: PgEventStore,
    seed: u64,
    budget: Arc<AtomicI64>,
    committed: Arc<Mutex<Committed>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        let size = rng.random_range(1..=12_i64);
        let left = budget.fetch_sub(size, Ordering::SeqCst);
        if left <= 0 {
            return;
        }
        let size = size.min(left);
        let stream = format!("stress-{}", rng.random_range(0..STREAMS));
        let batch = common::events(size as usize);
        let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
        let mode = rng.random_range(0..100);
        if mode < 4 {
            // A long transaction: its id is taken before others commit to
            // the same stream, and it keeps every reader waiting meanwhile.
            let hold_before = Duration::from_millis(rng.random_range(50..300));
            let hold_after = Duration::from_millis(rng.random_range(50..300));
            let roll_back = rng.random_bool(0.1);
            let mut tx = store.pool().begin().await.expect("begin");
            sqlx::query("SELECT pg_current_xact_id()")
                .execute(&mut *tx)
                .await
                .expect("take a transaction id");
            tokio::time::sleep(hold_before).await;
            store
                .append_in_transaction(
                    &mut tx,
                    &stream,
                    ExpectedVersion::Any,
                    batch,
                    AppendOptions::default(),
                )
                .await
                .expect("append in transaction");
            tokio::time::sleep(hold_after).await;
            if roll_back {
                tx.rollback().await.expect("rollback");
                committed.lock().await.rolled_back.extend(ids);
                // Make up for them, so the total stays exact.
                let again = common::events(size as usize);
                let ids: Vec<Uuid> = again.iter().map(|e| e.event_id).collect();
                store
                    .append(&stream, ExpectedVersion::Any, again)
                    .await
                    .expect("append");
                committed.lock().await.ids.extend(ids);
            } else {
                tx.commit().await.expect("commit");
                committed.lock().await.ids.extend(ids);
            }
        } else if mode < 20 {
            // Optimistic: read the version, append exactly after it.
            loop {
                let current = store.stream_version(&stream).await.expect("version");
                match store
                    .append(&stream, ExpectedVersion::Exact(current), batch.clone())
                    .await
                {
                    Ok(done) => {
                        assert!(!done.repeated);
                        assert_eq!(done.first_version, current + 1);
                        break;
                    }
                    Err(StoreError::Conflict { actual, .. }) => {
                        assert!(actual > current, "a conflict must report a newer version");
                    }
                    Err(other) => panic!("exact append failed: {other}"),
                }
            }
            committed.lock().await.ids.extend(ids);
        } else {
            store
                .append(&stream, ExpectedVersion::Any, batch)
                .await
                .expect("append");
            committed.lock().await.ids.extend(ids);
        }
    }
}

/// A live subscriber: collects events until told how many to expect and
/// it has them all (or the deadline passes).
async fn subscriber(
    store: PgEventStore,
    expected: Arc<AtomicI64>,
    started: Arc<Barrier>,
) -> Vec<RecordedEvent> {
    let mut events = store.subscribe(Position::START, EventFilter::all());
    started.wait().await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let want = expected.load(Ordering::SeqCst);
        if want >= 0 && seen.len() as i64 >= want {
            // Linger a moment: nothing more may arrive.
            if let Ok(Some(extra)) =
                tokio::time::timeout(Duration::from_millis(500), events.next()).await
            {
                seen.push(extra.expect("subscription error"));
                continue;
            }
            return seen;
        }
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) => seen.push(event.expect("subscription error")),
            Ok(None) => panic!("the subscription ended"),
            Err(_) => return seen,
        }
    }
}

fn check_subscriber(name: &str, seen: &[RecordedEvent], committed: &Committed) {
    let mut ids = HashSet::new();
    for event in seen {
        assert!(
            ids.insert(event.event_id),
            "{name}: event {} delivered twice",
            event.event_id
        );
        assert!(
            !committed.rolled_back.contains(&event.event_id),
            "{name}: delivered a rolled-back event"
        );
    }
    let missing = committed.ids.difference(&ids).count();
    let unknown = ids.difference(&committed.ids).count();
    assert_eq!(
        (missing, unknown),
        (0, 0),
        "{name}: {missing} committed events never delivered, {unknown} unknown events delivered"
    );
    for pair in seen.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "{name}: positions not increasing: {} then {}",
            pair[0].position,
            pair[1].position
        );
    }
    let mut next_version: HashMap<&str, u64> = HashMap::new();
    for event in seen {
        let next = next_version.entry(&event.stream_id).or_insert(1);
        assert_eq!(
            event.stream_version, *next,
            "{name}: stream {} delivered version {} where {} was due",
            event.stream_id, event.stream_version, next
        );
        *next += 1;
    }
}

/// 16 writers append 20,000 events over 200 streams in random batches, some
/// inside transactions held open (and some rolled back), while two live
/// subscribers follow the log: each sees every committed event exactly once,
/// in increasing positions, each stream in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stress_many_writers_two_live_subscribers_see_every_event_once() {
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let pool = pg.pool_with(WRITERS as u32 + 8).await;
    let store = common::options_for(&pg).from_pool(pool).expect("options");
    store.migrate().await.expect("migrate");

    let expected = Arc::new(AtomicI64::new(-1));
    let started = Arc::new(Barrier::new(3));
    let subscribers: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(subscriber(
                store.clone(),
                Arc::clone(&expected),
                Arc::clone(&started),
            ))
        })
        .collect();
    started.wait().await;

    let budget = Arc::new(AtomicI64::new(TOTAL_EVENTS));
    let committed = Arc::new(Mutex::new(Committed::default()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            tokio::spawn(writer(
                store.clone(),
                0x5eed + i as u64,
                Arc::clone(&budget),
                Arc::clone(&committed),
            ))
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer panicked");
    }
    let committed = std::mem::take(&mut *committed.lock().await);
    assert_eq!(committed.ids.len() as i64, TOTAL_EVENTS);
    eprintln!(
        "{} events committed, {} rolled back",
        committed.ids.len(),
        committed.rolled_back.len()
    );
    expected.store(committed.ids.len() as i64, Ordering::SeqCst);

    for (i, handle) in subscribers.into_iter().enumerate() {
        let seen = handle.await.expect("subscriber panicked");
        check_subscriber(&format!("subscriber {i}"), &seen, &committed);
    }

    // The log itself agrees: read_all pages through exactly the same events.
    let mut after = Position::START;
    let mut read = Vec::new();
    loop {
        let page = store
            .read_all(after, 1000, &EventFilter::all())
            .await
            .expect("read_all");
        let Some(last) = page.last() else { break };
        after = last.position;
        read.extend(page);
    }
    check_subscriber("read_all", &read, &committed);
    assert_eq!(store.head().await.expect("head"), after);
    store.close().await;
    pg.cleanup().await;
}

/// A reader that orders by `global_position` alone and keeps the last one
/// as its checkpoint skips an event for good when transactions commit out of
/// position order; `read_all` waits for the older transaction instead.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_naive_reader_skips_an_event_that_read_all_delivers() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    let naive_read = |after: i64| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_as::<_, (i64, Uuid)>(
                "SELECT global_position, event_id FROM annals_events \
                 WHERE global_position > $1 ORDER BY global_position",
            )
            .bind(after)
            .fetch_all(&pool)
            .await
            .expect("naive read")
        }
    };

    // Transaction A inserts first, so its event takes the lower position...
    let a_event = common::event("Ticked", 1);
    let mut a = store.pool().begin().await.expect("begin A");
    store
        .append_in_transaction(
            &mut a,
            "stream-a",
            ExpectedVersion::NoStream,
            vec![a_event.clone()],
            AppendOptions::default(),
        )
        .await
        .expect("append in A");
    // ...but B commits first, with the higher position.
    let b_event = common::event("Ticked", 2);
    store
        .append("stream-b", ExpectedVersion::NoStream, vec![b_event.clone()])
        .await
        .expect("append B");

    // The naive reader sees B and moves its checkpoint past A's position.
    let first = naive_read(0).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1, b_event.event_id);
    let naive_checkpoint = first[0].0;

    // The gap-safe reader returns nothing while A may still commit.
    let safe = store
        .read_all(Position::START, 100, &EventFilter::all())
        .await
        .expect("read_all");
    assert!(
        safe.is_empty(),
        "read_all returned {} events while an older transaction is open",
        safe.len()
    );
    assert_eq!(store.head().await.expect("head"), Position::START);

    a.commit().await.expect("commit A");

    // The naive reader never sees A: its position is behind the checkpoint.
    assert!(naive_read(naive_checkpoint).await.is_empty());
    let a_position: i64 =
        sqlx::query_scalar("SELECT global_position FROM annals_events WHERE event_id = $1")
            .bind(a_event.event_id)
            .fetch_one(store.pool())
            .await
            .expect("A's row");
    assert!(a_position < naive_checkpoint, "A took the lower position");

    // read_all now returns both, A first (its transaction is older).
    let mut safe = Vec::new();
    for _ in 0..100 {
        safe = store
            .read_all(Position::START, 100, &EventFilter::all())
            .await
            .expect("read_all");
        if safe.len() == 2 {
            break;
        }
        // Another test's transaction elsewhere on the server may hold the
        // bound back for a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: Vec<Uuid> = safe.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, vec![a_event.event_id, b_event.event_id]);
    assert!(safe[0].position < safe[1].position);
    pg.cleanup().await;
}

/// A transaction that took its id before another append to the same stream
/// committed still lands after it in the global log: the log order agrees
/// with the stream's version order.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_log_order_follows_stream_order_when_transaction_ids_do_not() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    let mut early = store.pool().begin().await.expect("begin");
    let early_xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut *early)
        .await
        .expect("xid");
    let first = store
        .append("shared", ExpectedVersion::NoStream, common::events(1))
        .await
        .expect("first append");
    assert!(first.position.transaction() > early_xid.parse::<u64>().unwrap());
    let second = store
        .append_in_transaction(
            &mut early,
            "shared",
            ExpectedVersion::Exact(1),
            common::events(1),
            AppendOptions::default(),
        )
        .await
        .expect("second append");
    early.commit().await.expect("commit");
    assert!(
        second.position > first.position,
        "{} is not after {}",
        second.position,
        first.position
    );

    let read = loop {
        let read = store
            .read_all(Position::START, 10, &EventFilter::all())
            .await
            .expect("read_all");
        if read.len() == 2 {
            break read;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let versions: Vec<u64> = read.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![1, 2]);
    assert_eq!(read[1].position, second.position);
    pg.cleanup().await;
}

/// 32 tasks append to one stream at once, all expecting the current
/// version: in every round exactly one wins, the others get a conflict
/// naming the new version, and the stream has no hole and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_conflicting_appends_have_exactly_one_winner_per_round() {
    const TASKS: usize = 32;
    const ROUNDS: u64 = 10;
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let pool = pg.pool_with(TASKS as u32 + 2).await;
    let store = common::options_for(&pg).from_pool(pool).expect("options");
    store.migrate().await.expect("migrate");

    for round in 0..ROUNDS {
        let current = store.stream_version("contended").await.expect("version");
        assert_eq!(current, round);
        let barrier = Arc::new(Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let store = store.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .append(
                            "contended",
                            ExpectedVersion::Exact(current),
                            common::events(1),
                        )
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.expect("task panicked") {
                Ok(done) => {
                    winners += 1;
                    assert_eq!(
                        (done.first_version, done.stream_version),
                        (round + 1, round + 1)
                    );
                }
                Err(StoreError::Conflict {
                    stream,
                    expected,
                    actual,
                }) => {
                    assert_eq!(stream, "contended");
                    assert_eq!(expected, ExpectedVersion::Exact(current));
                    assert_eq!(actual, round + 1, "the conflict names the real version");
                }
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(winners, 1, "round {round}: {winners} winners");
    }
    let events = store
        .read_stream("contended", 1, 1000)
        .await
        .expect("read_stream");
    let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, (1..=ROUNDS).collect::<Vec<_>>());
    store.close().await;
    pg.cleanup().await;
}
