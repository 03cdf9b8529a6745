//! What the projection store does on PostgreSQL beyond core's conformance
//! suite (run in `conformance.rs`): leases are per schema, and are lost with
//! their connection.

mod common;

use std::time::Duration;

use annals::projection::ProjectionStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lease_is_per_schema_and_passes_on_when_its_holder_dies() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
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

    // A holder whose connection dies loses the lease, and the lock is free again.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'annals-lease:bookings'",
    )
    .execute(pg.pool())
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), bookings.lost())
        .await
        .expect("the holder learns it lost the lease");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if store.try_lease("bookings").await.unwrap().is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a dead holder kept the lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flights.release().await;
    other_pg.cleanup().await;
    pg.cleanup().await;
}
