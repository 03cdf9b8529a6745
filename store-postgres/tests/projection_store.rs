//! Dead letters, the single-runner lease and deadlines on PostgreSQL.

mod common;

use std::time::Duration;

use annals::projection::{ParkedEvent, ProjectionStore};
use annals::{EventFilter, EventStore, ExpectedVersion, Position};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_parks_lists_retries_and_unparks_in_log_order() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    store
        .append("s-a", ExpectedVersion::NoStream, common::events(3))
        .await
        .unwrap();
    store
        .append("s-b", ExpectedVersion::NoStream, common::events(1))
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    let all = store
        .read_all(Position::START, 100, &EventFilter::all())
        .await
        .unwrap();
    assert_eq!(all.last().map(|e| e.position), Some(head));
    let parked = |i: usize, error: Option<&str>| ParkedEvent {
        event: all[i].clone(),
        error: error.map(str::to_owned),
        attempts: u32::from(error.is_some()) * 3,
        retry_requested: false,
    };
    // Parked out of order; listed in log order.
    store
        .park("p", vec![parked(2, None), parked(1, Some("boom"))])
        .await
        .unwrap();
    store
        .park("other", vec![parked(3, Some("elsewhere"))])
        .await
        .unwrap();
    // Parking again updates, never duplicates.
    store
        .park("p", vec![parked(1, Some("boom again"))])
        .await
        .unwrap();
    let listed = store.parked("p").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].event, all[1]);
    assert_eq!(listed[0].error.as_deref(), Some("boom again"));
    assert_eq!(listed[0].attempts, 3);
    assert_eq!(listed[1].event, all[2]);
    assert_eq!(listed[1].error, None);

    assert_eq!(store.request_retry("p").await.unwrap(), 2);
    assert!(
        store
            .parked("p")
            .await
            .unwrap()
            .iter()
            .all(|p| p.retry_requested)
    );
    store.unpark("p", &[all[1].event_id]).await.unwrap();
    let left = store.parked("p").await.unwrap();
    assert_eq!(
        left.iter().map(|p| p.event.event_id).collect::<Vec<_>>(),
        [all[2].event_id]
    );
    assert_eq!(store.parked("other").await.unwrap().len(), 1);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lease_admits_one_holder_and_passes_on_release_or_death() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    let (other_pg, other) = common::store_with(|o| o).await.unwrap();
    // `other` is a second store in another schema: its leases are its own.
    let mut first = store
        .try_lease("flights")
        .await
        .unwrap()
        .expect("free lease");
    assert!(
        store.try_lease("flights").await.unwrap().is_none(),
        "two holders"
    );
    assert!(
        other.try_lease("flights").await.unwrap().is_some(),
        "schemas share leases"
    );
    let mut bookings = store
        .try_lease("bookings")
        .await
        .unwrap()
        .expect("another projection");

    // A live holder's lease is not lost.
    let lost = tokio::time::timeout(Duration::from_millis(1200), first.lost()).await;
    assert!(lost.is_err(), "a healthy lease reported lost");

    first.release().await;
    let second = store
        .try_lease("flights")
        .await
        .unwrap()
        .expect("released lease is free");

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
    drop(second);
    other_pg.cleanup().await;
    pg.cleanup().await;
}
