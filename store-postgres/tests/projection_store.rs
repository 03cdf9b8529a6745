//! What the projection store does on PostgreSQL beyond core's conformance
//! suite (run in `conformance.rs`): leases are per schema, outlive the
//! connections they were taken on, and pass on once their holder stops
//! renewing them, fencing it.

mod common;

use std::time::Duration;

use annals::projection::ProjectionStore;
use annals::{Position, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lease_is_per_schema_and_survives_its_connections() {
    let Some((pg, _)) = common::store().await else {
        return;
    };
    // The store's own pool, whose connections the test can tell apart.
    let application = format!("lease-{}", pg.schema());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(pg.connect_options().application_name(&application))
        .await
        .unwrap();
    let store = common::options_for(&pg).from_pool(pool).unwrap();
    let (other_pg, other) = common::store_with(|o| o).await.unwrap();
    // `other` is a second store in another schema: its leases are its own.
    let flights = store
        .try_lease("flights")
        .await
        .unwrap()
        .expect("free lease");
    assert!(
        other.try_lease("flights").await.unwrap().is_some(),
        "schemas share leases"
    );
    let mut bookings = store
        .try_lease("bookings")
        .await
        .unwrap()
        .expect("another projection");

    // Every connection of the store's pool dies: the lease is a row, not a
    // session, so it is neither lost nor free.
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&application)
    .fetch_one(other_pg.pool())
    .await
    .unwrap();
    assert!(killed > 0, "no connection of the store's pool was found");
    assert!(
        tokio::time::timeout(Duration::from_secs(6), bookings.lost())
            .await
            .is_err(),
        "a lease was lost with its connections"
    );
    assert!(store.try_lease("bookings").await.unwrap().is_none());
    bookings.release().await;
    assert!(store.try_lease("bookings").await.unwrap().is_some());
    flights.release().await;
    other_pg.cleanup().await;
    pg.cleanup().await;
}

/// A holder that stops renewing (frozen, cut off) loses the lease after its
/// time to live, not before; the next holder's claim has a new generation,
/// and the old holder's checkpoint save is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lease_passes_on_after_its_time_to_live_and_fences_the_old_holder() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    let frozen = store
        .try_lease("flights")
        .await
        .unwrap()
        .expect("free lease");
    let stale = frozen.claim().clone();
    store
        .save_claimed_checkpoint(&stale, Position::new(5, 5))
        .await
        .unwrap();
    // Nobody calls `lost()` on it: it is never renewed.
    let taken = tokio::time::Instant::now();
    let next = loop {
        if let Some(lease) = store.try_lease("flights").await.unwrap() {
            break lease;
        }
        assert!(
            taken.elapsed() < Duration::from_secs(10),
            "an unrenewed lease was never passed on"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let waited = taken.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "the lease passed on after {waited:?}, before its time to live"
    );
    assert_eq!(next.claim().generation, stale.generation + 1);
    assert!(matches!(
        store
            .save_claimed_checkpoint(&stale, Position::new(9, 9))
            .await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(
        annals::EventStore::load_checkpoint(&store, "flights")
            .await
            .unwrap(),
        Some(Position::new(5, 5))
    );
    next.release().await;
    drop(frozen);
    pg.cleanup().await;
}
