//! Behaviour specific to the PostgreSQL store: input validation before SQL,
//! migrations, appends inside the caller's transaction, lag reporting.

mod common;

use std::time::Duration;

use annals::{
    AppendLimits, AppendOptions, EventFilter, EventStore, ExpectedVersion, Position, StoreError,
};
use annals_postgres::{PgEventStore, PgStoreOptions};
use serde_json::json;

async fn count_rows(store: &PgEventStore, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(store.pool())
        .await
        .expect("count")
}

/// Malformed appends are refused with `InvalidInput` before any SQL runs
/// (the same input against a closed pool still answers `InvalidInput`, not
/// `Unavailable`), with a payload limit set in the options; nothing is
/// written.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_malformed_input_is_refused_before_sql() {
    let limits = AppendLimits {
        max_payload_bytes: 1024,
        ..AppendLimits::default()
    };
    let Some((pg, store)) = common::store_with(|o| o.limits(limits)).await else {
        return;
    };
    assert_eq!(store.limits().max_payload_bytes, 1024);

    let mut oversized = common::event("Ticked", 1);
    oversized.payload = json!({ "blob": "x".repeat(2000) }).into();
    let cases = [
        ("empty stream id", "", common::events(1)),
        ("blank stream id", "  ", common::events(1)),
        ("empty batch", "s", Vec::new()),
        (
            "oversized payload",
            "s",
            vec![common::event("Ticked", 0), oversized],
        ),
    ];
    for (what, stream, events) in &cases {
        let result = store
            .append(stream, ExpectedVersion::Any, events.clone())
            .await;
        assert!(
            matches!(result, Err(StoreError::InvalidInput(_))),
            "{what}: {result:?}"
        );
    }
    // A payload just under the configured limit goes through.
    let mut fits = common::event("Ticked", 1);
    fits.payload = json!({ "blob": "x".repeat(900) }).into();
    store
        .append("fits", ExpectedVersion::NoStream, vec![fits])
        .await
        .expect("a payload within the limit");
    assert_eq!(count_rows(&store, "annals_events").await, 1);
    assert_eq!(count_rows(&store, "annals_streams").await, 1);
    assert_eq!(store.stream_version("s").await.unwrap(), 0);

    // No SQL: with the pool closed, validation still answers first.
    let closed = PgStoreOptions::new()
        .limits(limits)
        .from_pool(pg.pool_with(1).await)
        .expect("options");
    closed.close().await;
    for (what, stream, events) in cases {
        let result = closed.append(stream, ExpectedVersion::Any, events).await;
        assert!(
            matches!(result, Err(StoreError::InvalidInput(_))),
            "{what} on a closed pool: {result:?}"
        );
    }
    let result = closed
        .append("s", ExpectedVersion::Any, common::events(1))
        .await;
    assert!(
        matches!(&result, Err(e) if e.is_transient()),
        "valid input on a closed pool: {result:?}"
    );
    pg.cleanup().await;
}

/// Migrating again, or from two stores at once, changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_migrate_twice_is_harmless() {
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let a = PgEventStore::from_pool(pg.pool().clone());
    let b = PgEventStore::from_pool(pg.pool().clone());
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.expect("first migrate");
    rb.expect("concurrent migrate");
    a.append("s", ExpectedVersion::NoStream, common::events(2))
        .await
        .expect("append");
    a.migrate().await.expect("migrate again");
    let applied = count_rows(&a, "annals_migrations").await;
    assert_eq!(applied as usize, annals_postgres::migrations().count());
    assert_eq!(a.stream_version("s").await.unwrap(), 2);
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() \
         AND tablename LIKE 'annals\\_%'",
    )
    .fetch_one(a.pool())
    .await
    .unwrap();
    assert!(tables >= 6, "{tables} annals tables");
    pg.cleanup().await;
}

/// An append inside the caller's transaction commits with the caller's
/// writes and notifies at commit; rolled back, it leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_append_in_transaction_is_atomic_with_the_callers_writes() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    sqlx::query("CREATE TABLE outbox (id bigint GENERATED ALWAYS AS IDENTITY, body text)")
        .execute(store.pool())
        .await
        .unwrap();

    // Rolled back: neither the event nor the outbox row, and the stream
    // version does not move.
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO outbox (body) VALUES ('lost')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let lost = store
        .append_in_transaction(
            &mut tx,
            "orders-1",
            ExpectedVersion::NoStream,
            common::events(2),
            AppendOptions::default(),
        )
        .await
        .expect("append in transaction");
    assert_eq!(lost.stream_version, 2);
    tx.rollback().await.unwrap();
    assert_eq!(store.stream_version("orders-1").await.unwrap(), 0);
    assert_eq!(count_rows(&store, "outbox").await, 0);
    assert_eq!(count_rows(&store, "annals_events").await, 0);

    // Committed: both, and a live subscriber hears of it.
    let mut live = store.subscribe(Position::START, EventFilter::all());
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO outbox (body) VALUES ('kept')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let kept = store
        .append_in_transaction(
            &mut tx,
            "orders-1",
            ExpectedVersion::NoStream,
            common::events(2),
            AppendOptions::default(),
        )
        .await
        .expect("append in transaction");
    // A conflict inside the transaction does not abort it.
    let conflict = store
        .append_in_transaction(
            &mut tx,
            "orders-1",
            ExpectedVersion::NoStream,
            common::events(1),
            AppendOptions::default(),
        )
        .await;
    assert!(
        matches!(conflict, Err(StoreError::Conflict { actual: 2, .. })),
        "{conflict:?}"
    );
    tx.commit().await.unwrap();
    assert_eq!(count_rows(&store, "outbox").await, 1);
    assert_eq!(store.stream_version("orders-1").await.unwrap(), 2);
    use futures::StreamExt;
    for version in 1..=2 {
        let event = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("the subscriber heard of the commit")
            .expect("stream open")
            .expect("event");
        assert_eq!(event.stream_version, version);
    }
    assert_eq!(store.head().await.unwrap(), kept.position);
    pg.cleanup().await;
}

/// An open transaction that has written holds readers back; `log_lag`
/// says how many committed events wait and which transaction is oldest.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_log_lag_exposes_a_long_transaction() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    let mut long = store.pool().begin().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *long)
        .await
        .unwrap();
    store
        .append_in_transaction(
            &mut long,
            "slow",
            ExpectedVersion::Any,
            common::events(1),
            AppendOptions::default(),
        )
        .await
        .unwrap();
    let quick = store
        .append("quick", ExpectedVersion::Any, common::events(3))
        .await
        .unwrap();

    let lag = store.log_lag().await.expect("log_lag");
    assert_eq!(lag.held_back_events, 3, "{lag:?}");
    assert!(lag.held_back_since.is_some());
    assert!(lag.horizon < quick.position.transaction());
    let oldest = lag.oldest_transaction.expect("an open transaction");
    // Another test's transaction may be older than ours; ours is open too.
    if oldest.pid == pid {
        assert_eq!(oldest.state.as_deref(), Some("idle in transaction"));
    }
    assert!(
        store
            .read_all(Position::START, 10, &EventFilter::all())
            .await
            .unwrap()
            .is_empty()
    );

    long.commit().await.unwrap();
    let mut lag = store.log_lag().await.unwrap();
    for _ in 0..100 {
        if lag.held_back_events == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        lag = store.log_lag().await.unwrap();
    }
    assert_eq!(lag.held_back_events, 0, "{lag:?}");
    assert_eq!(
        store
            .read_all(Position::START, 10, &EventFilter::all())
            .await
            .unwrap()
            .len(),
        4
    );
    pg.cleanup().await;
}

/// Batches go in as one statement: a 500-event append is one call and
/// reads back in order with consecutive versions and increasing positions.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_large_batch_appends_in_order() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    let batch = common::events(500);
    let ids: Vec<_> = batch.iter().map(|e| e.event_id).collect();
    let done = store
        .append("big", ExpectedVersion::NoStream, batch)
        .await
        .unwrap();
    assert_eq!((done.first_version, done.stream_version), (1, 500));
    let read = store.read_stream("big", 1, 1000).await.unwrap();
    assert_eq!(read.iter().map(|e| e.event_id).collect::<Vec<_>>(), ids);
    assert!(read.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(read.last().unwrap().position, done.position);
    pg.cleanup().await;
}

/// An application that runs its own sqlx migrations in annals' schema keeps
/// working: the two sets of versions never meet, even when both start at 1.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_migrations_coexist_with_the_applications_own() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("annals-app-migrations-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("0001_orders.sql"),
        "CREATE TABLE app_orders (id bigint PRIMARY KEY);",
    )
    .unwrap();
    std::fs::write(
        dir.join("0002_customers.sql"),
        "CREATE TABLE app_customers (id bigint PRIMARY KEY);",
    )
    .unwrap();
    let app = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();

    // Either order, again and again.
    store.migrate().await.expect("annals first");
    app.run(store.pool())
        .await
        .expect("the application after annals");
    store.migrate().await.expect("annals again");
    app.run(store.pool()).await.expect("the application again");

    assert_eq!(count_rows(&store, "_sqlx_migrations").await, 2);
    assert_eq!(
        count_rows(&store, "annals_migrations").await as usize,
        annals_postgres::migrations().count()
    );
    assert_eq!(count_rows(&store, "app_orders").await, 0);
    store
        .append("s", ExpectedVersion::NoStream, common::events(1))
        .await
        .expect("the store works");
    std::fs::remove_dir_all(&dir).ok();
    pg.cleanup().await;
}

/// A schema migrated by an earlier annals (versions in `_sqlx_migrations`)
/// is taken over as it is: nothing is applied twice.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_migrations_take_over_versions_recorded_by_sqlx() {
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let store = PgEventStore::from_pool(pg.pool().clone());
    // What annals 0.1 did: sqlx's migrator over the same files.
    let old = sqlx::migrate::Migrator::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations"),
    )
    .await
    .unwrap();
    old.run(store.pool()).await.unwrap();
    store
        .migrate()
        .await
        .expect("taken over, not applied again");
    assert_eq!(
        count_rows(&store, "annals_migrations").await as usize,
        annals_postgres::migrations().count()
    );
    pg.cleanup().await;
}
