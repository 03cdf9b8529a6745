//! Claims through a connection pooler in transaction mode: PgBouncer at
//! `PGBOUNCER_URL` (started by `scripts/test`), which hands a server
//! connection to a client for one transaction only. Heartbeats, takeovers,
//! fenced checkpoint saves and the lease all go through it; what they wrote
//! is read back over a direct connection (`DATABASE_URL`).
//!
//! The schema `annals_pooled` (PgBouncer's `connect_query` sets it on its
//! server connections) is migrated over the direct connection: migrations
//! hold a session's advisory lock, which a pooler in transaction mode
//! cannot keep.

use std::time::Duration;

use annals::projection::ProjectionStore;
use annals::{EventStore, Position, StoreError};
use annals_postgres::{PgEventStore, PgStoreOptions};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use uuid::Uuid;

const SCHEMA: &str = "annals_pooled";

/// The store through PgBouncer, and the same schema over a direct
/// connection; `None` (or a panic under `ANNALS_REQUIRE_SERVICES`) without
/// the servers.
async fn stores() -> Option<(PgEventStore, PgEventStore)> {
    let (Ok(pooled_url), Ok(direct_url)) = (
        std::env::var("PGBOUNCER_URL"),
        std::env::var(annals_testkit::DATABASE_URL_ENV),
    ) else {
        assert!(
            !annals_testkit::services_required(),
            "PGBOUNCER_URL and DATABASE_URL are required (ANNALS_REQUIRE_SERVICES is set): \
             scripts/test starts a PgBouncer"
        );
        eprintln!("skipped: PGBOUNCER_URL or DATABASE_URL is not set");
        return None;
    };
    let direct: PgConnectOptions = direct_url.parse().expect("DATABASE_URL");
    let mut admin = PgConnection::connect_with(&direct)
        .await
        .expect("a direct connection");
    // Both tests may create it at once: one of them finds it there.
    let created = sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        .execute(&mut admin)
        .await;
    if let Err(error) = created {
        let raced = error
            .as_database_error()
            .is_some_and(|e| e.is_unique_violation());
        assert!(raced, "the pooled tests' schema: {error}");
    }
    let _ = admin.close().await;
    let direct = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(direct.options([("search_path", SCHEMA)]))
        .await
        .expect("a direct pool");
    let direct = PgStoreOptions::new().from_pool(direct).expect("options");
    direct
        .migrate()
        .await
        .expect("migrate over the direct connection");

    let pooled: PgConnectOptions = pooled_url.parse().expect("PGBOUNCER_URL");
    let pooled = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(pooled)
        .await
        .unwrap_or_else(|e| panic!("cannot connect through PgBouncer: {e}"));
    let pooled = PgStoreOptions::new().from_pool(pooled).expect("options");
    Some((pooled, direct))
}

fn unique(name: &str) -> String {
    format!("{name}-{}", Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claims_work_through_pgbouncer_in_transaction_mode() {
    let Some((pooled, direct)) = stores().await else {
        return;
    };
    let name = unique("pooled");
    let long = Duration::from_secs(60);
    let short = Duration::from_millis(400);
    // Three owners share eight partitions, each heartbeat on whatever
    // server connection PgBouncer hands out.
    assert_eq!(pooled.claim(&name, 8, "a", short).await.unwrap().len(), 8);
    assert!(pooled.claim(&name, 8, "b", long).await.unwrap().is_empty());
    assert!(pooled.claim(&name, 8, "c", long).await.unwrap().is_empty());
    // a stops beating: b and c share its partitions once its claims expire.
    tokio::time::sleep(short + Duration::from_millis(300)).await;
    let b = pooled.claim(&name, 8, "b", long).await.unwrap();
    let c = pooled.claim(&name, 8, "c", long).await.unwrap();
    assert_eq!((b.len(), c.len()), (4, 4), "{b:?} {c:?}");
    assert!(b.iter().chain(&c).all(|claim| claim.generation == 2));
    let owners = direct.partition_owners(&name).await.unwrap();
    assert!(owners.iter().all(|p| p.owner.as_deref() != Some("a")));

    // The fence, through the pooler: b saves; a former owner's save of the
    // same partition writes nothing.
    let mine = b[0].clone();
    pooled
        .save_claimed_checkpoint(&mine, Position::new(7, 7))
        .await
        .unwrap();
    let mut stale = mine.clone();
    stale.owner = "a".into();
    stale.generation = 1;
    let refused = pooled
        .save_claimed_checkpoint(&stale, Position::new(9, 9))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
    assert_eq!(
        direct
            .load_checkpoint(&mine.checkpoint_name())
            .await
            .unwrap(),
        Some(Position::new(7, 7))
    );
    pooled.release_claims(&name, "b").await.unwrap();
    pooled.release_claims(&name, "c").await.unwrap();
    assert!(
        direct
            .partition_owners(&name)
            .await
            .unwrap()
            .iter()
            .all(|p| p.owner.is_none())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lease_works_through_pgbouncer_in_transaction_mode() {
    let Some((pooled, direct)) = stores().await else {
        return;
    };
    let name = unique("leased");
    let mut lease = pooled
        .try_lease(&name)
        .await
        .unwrap()
        .expect("a free lease");
    assert!(pooled.try_lease(&name).await.unwrap().is_none());
    // Renewed through the pooler past its time to live.
    assert!(
        tokio::time::timeout(Duration::from_secs(6), lease.lost())
            .await
            .is_err(),
        "a lease renewed through PgBouncer was lost"
    );
    assert!(direct.try_lease(&name).await.unwrap().is_none());
    pooled
        .save_claimed_checkpoint(lease.claim(), Position::new(3, 3))
        .await
        .unwrap();
    assert_eq!(
        direct.load_checkpoint(&name).await.unwrap(),
        Some(Position::new(3, 3))
    );
    lease.release().await;
    assert!(direct.try_lease(&name).await.unwrap().is_some());
}
