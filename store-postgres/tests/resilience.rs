//! Lost connections: the store and its subscriptions recover, and no append
//! is ever half-written.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals::{EventFilter, EventStore, ExpectedVersion, Position, StoreError};
use annals_postgres::PgStoreOptions;
use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

/// Waits for the subscription's next event while nudging: every 300 ms an
/// event the subscription filters out is appended elsewhere. Each nudge
/// notifies, so a subscription whose wake-up came while an unrelated
/// transaction on the server held the log's horizon back is woken again;
/// with polling effectively off, only a working listener delivers.
async fn next_nudged(
    store: &annals_postgres::PgEventStore,
    live: &mut annals::EventStream,
) -> annals::RecordedEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout(Duration::from_millis(300), live.next()).await {
            Ok(event) => {
                return event.expect("subscription open").expect("event");
            }
            Err(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no event arrived: the listener does not wake the subscription"
                );
                store
                    .append(
                        "nudge",
                        ExpectedVersion::Any,
                        vec![common::event("Nudge", 0)],
                    )
                    .await
                    .expect("nudge");
            }
        }
    }
}

/// Terminates every backend with this application name; returns how many.
async fn terminate(admin: &PgPool, application_name: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(application_name)
    .fetch_one(admin)
    .await
    .expect("terminate backends")
}

/// With polling effectively off, a subscription still receives an event
/// appended after its listener's connection was terminated: the listener
/// reconnects, listens again and wakes the subscription.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_subscription_survives_a_dropped_listener_connection() {
    let Some((pg, store)) = common::store_with(|o| o.poll_interval(Duration::from_secs(300))).await
    else {
        return;
    };
    let listener_name = format!("annals-listener-{}", pg.schema());
    let mut live = store.subscribe(Position::START, EventFilter::types(["Ticked"]));

    let first = store
        .append("s", ExpectedVersion::NoStream, common::events(1))
        .await
        .unwrap();
    assert_eq!(
        next_nudged(&store, &mut live).await.position,
        first.position
    );

    // Wait until the listener's connection shows, then kill it.
    let mut killed = 0;
    for _ in 0..100 {
        killed = terminate(pg.pool(), &listener_name).await;
        if killed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(killed, 1, "one listener connection");

    let second = store
        .append("s", ExpectedVersion::Exact(1), common::events(1))
        .await
        .unwrap();
    assert_eq!(
        next_nudged(&store, &mut live).await.position,
        second.position
    );

    // And once more, now that the listener runs on its new connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = store
        .append("s", ExpectedVersion::Exact(2), common::events(1))
        .await
        .unwrap();
    assert_eq!(
        next_nudged(&store, &mut live).await.position,
        third.position
    );
    drop(live);
    store.close().await;
    pg.cleanup().await;
}

/// Every connection of the store is terminated while appends run; each
/// append either succeeds or fails with a transient error, the store works
/// again right after, and the stream has no hole, no duplicate and every
/// acknowledged event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_recovers_when_its_connections_are_terminated() {
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let app = format!("annals-{}", pg.schema());
    let store = common::options_for(&pg)
        .application_name(&app)
        .max_connections(4)
        .connect(pg.url())
        .await
        .expect("connect");
    store.migrate().await.unwrap();
    store
        .append("s", ExpectedVersion::NoStream, common::events(1))
        .await
        .unwrap();

    // Idle connections killed: the next calls work (a lost connection is
    // retried once on a fresh one).
    assert!(terminate(pg.pool(), &app).await >= 1);
    store
        .append("s", ExpectedVersion::Exact(1), common::events(1))
        .await
        .expect("append after the connections were terminated");
    assert_eq!(store.stream_version("s").await.unwrap(), 2);
    assert_eq!(store.read_stream("s", 1, 10).await.unwrap().len(), 2);

    // Connections killed while appends are in flight.
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (admin, app, stop) = (pg.pool().clone(), app.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut kills = 0;
            while !stop.load(Ordering::SeqCst) {
                kills += terminate(&admin, &app).await;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            kills
        })
    };
    let mut acknowledged = Vec::new();
    let mut failures = 0;
    for _ in 0..150 {
        let batch = common::events(3);
        let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
        match store.append("s", ExpectedVersion::Any, batch).await {
            Ok(_) => acknowledged.extend(ids),
            Err(error @ StoreError::Unavailable(_)) => {
                assert!(error.is_transient());
                failures += 1;
            }
            Err(other) => panic!("not a transient error: {other:?}"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let kills = killer.await.unwrap();
    eprintln!(
        "{kills} connections terminated, {failures} of 150 appends failed, {} events acknowledged",
        acknowledged.len()
    );
    assert!(kills > 0);

    // Works again, at once.
    let done = store
        .append("s", ExpectedVersion::Any, common::events(1))
        .await
        .expect("append after the storm");
    let events = store.read_stream("s", 1, 100_000).await.unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
    assert_eq!(
        versions,
        (1..=done.stream_version).collect::<Vec<_>>(),
        "holes or duplicates"
    );
    // Whole batches only: every batch of 3 is all there or not at all
    // (besides the three single events).
    assert_eq!(
        (events.len() - 3) % 3,
        0,
        "a half-written batch: {}",
        events.len()
    );
    let stored: HashSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(stored.len(), events.len());
    for id in &acknowledged {
        assert!(stored.contains(id), "acknowledged event {id} is missing");
    }
    store.close().await;
    pg.cleanup().await;
}

/// A server that cannot be reached gives a clear, transient error.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_unreachable_server_is_unavailable() {
    // Port 1 on localhost: nothing listens there.
    let store = PgStoreOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy("postgres://annals:annals@127.0.0.1:1/annals")
        .expect("a lazy store");
    let result = store
        .append("s", ExpectedVersion::Any, common::events(1))
        .await;
    match result {
        Err(error @ StoreError::Unavailable(_)) => {
            assert!(error.is_transient());
            eprintln!("{error}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        store.head().await,
        Err(StoreError::Unavailable(_))
    ));
}
