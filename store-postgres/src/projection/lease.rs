//! The single-runner lease ([`ProjectionStore::try_lease`](annals::projection::ProjectionStore::try_lease)):
//! a session-level advisory lock held on a connection of its own, outside
//! the pool. It is released when the holder releases it, when its process
//! dies, or when the connection drops, and the holder learns of a drop
//! within one heartbeat.

use std::time::Duration;

use annals::StoreError;
use annals::projection::Lease;
use async_trait::async_trait;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::error::store_error;
use crate::handle::PgEventStore;

/// How often a lease holder checks its connection.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Takes the projection's advisory lock if it is free (the key is per
/// schema and projection).
const TRY_LEASE: &str = include_str!("../sql/try_lease.sql");
const RELEASE: &str = "SELECT pg_advisory_unlock($1)";

/// Takes the projection's lease on a new connection; `None` when another
/// runner holds it.
pub(crate) async fn try_lease(
    store: &PgEventStore,
    projection: &str,
) -> Result<Option<Box<dyn Lease>>, StoreError> {
    let options = store.inner.pool.connect_options().as_ref().clone();
    let options = options.application_name(&format!("annals-lease:{projection}"));
    let mut connection = PgConnection::connect_with(&options)
        .await
        .map_err(store_error)?;
    let (key, taken): (i64, bool) = sqlx::query_as(TRY_LEASE)
        .bind(projection)
        .fetch_one(&mut connection)
        .await
        .map_err(store_error)?;
    if !taken {
        // Closing is best effort; the lock was not ours.
        let _ = connection.close().await;
        return Ok(None);
    }
    Ok(Some(Box::new(PgLease { connection, key })))
}

/// A projection's lease: an advisory lock on a dedicated connection.
struct PgLease {
    connection: PgConnection,
    key: i64,
}

#[async_trait]
impl Lease for PgLease {
    async fn lost(&mut self) {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let alive = tokio::time::timeout(HEARTBEAT * 4, self.connection.ping()).await;
            if !matches!(alive, Ok(Ok(()))) {
                tracing::warn!(key = self.key, "lease connection lost");
                return;
            }
        }
    }

    async fn release(mut self: Box<Self>) {
        let unlocked = sqlx::query(RELEASE)
            .bind(self.key)
            .execute(&mut self.connection)
            .await;
        if let Err(error) = unlocked {
            tracing::warn!(%error, "lease not released cleanly; it ends with its connection");
        }
        let _ = self.connection.close().await;
    }
}
