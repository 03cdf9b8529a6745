//! The single-runner lease ([`ProjectionStore::try_lease`](annals::projection::ProjectionStore::try_lease)):
//! the claim on the one partition of a projection ([`claim`](super::claim)),
//! renewed every third of its time to live through the store's pool. It is
//! lost when a renewal finds another owner (the holder froze or lost the
//! database past the time to live, and a standby claimed it), or when no
//! renewal succeeded for a whole time to live; the holder's checkpoint
//! saves are fenced by the claim's generation either way.

use std::time::Duration;

use annals::StoreError;
use annals::projection::{Claim, Lease, owner_id};
use async_trait::async_trait;
use tokio::time::Instant;

use super::claim;
use crate::handle::PgEventStore;

/// How long a lease outlives its last renewal: a standby takes over at
/// most this long (plus its retry interval) after the holder died.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(5);

/// Takes the projection's lease; `None` when another runner holds it.
pub(crate) async fn try_lease(
    store: &PgEventStore,
    projection: &str,
) -> Result<Option<Box<dyn Lease>>, StoreError> {
    let owner = owner_id("lease");
    let Some(claim) = claim::claim(store, projection, 1, &owner, LEASE_TTL)
        .await?
        .pop()
    else {
        // Not counted among the live owners any longer.
        claim::release_claims(store, projection, &owner).await?;
        return Ok(None);
    };
    Ok(Some(Box::new(PgLease {
        store: store.clone(),
        claim,
        renewed: Instant::now(),
    })))
}

/// A projection's lease: its one partition's claim.
struct PgLease {
    store: PgEventStore,
    claim: Claim,
    renewed: Instant,
}

#[async_trait]
impl Lease for PgLease {
    fn claim(&self) -> &Claim {
        &self.claim
    }

    async fn lost(&mut self) {
        let every = LEASE_TTL / 3;
        loop {
            tokio::time::sleep(every).await;
            let renewal = tokio::time::timeout(
                every,
                claim::claim(
                    &self.store,
                    &self.claim.projection,
                    1,
                    &self.claim.owner,
                    LEASE_TTL,
                ),
            )
            .await;
            match renewal {
                Ok(Ok(claims)) => {
                    if !claims.iter().any(|c| c.generation == self.claim.generation) {
                        tracing::warn!(
                            projection = %self.claim.projection,
                            generation = self.claim.generation,
                            "lease taken by another runner"
                        );
                        return;
                    }
                    self.renewed = Instant::now();
                }
                failed if self.renewed.elapsed() >= LEASE_TTL => {
                    let error = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => "renewal timed out".to_owned(),
                    };
                    tracing::warn!(projection = %self.claim.projection, %error, "lease not renewed in time");
                    return;
                }
                _ => {}
            }
        }
    }

    async fn release(self: Box<Self>) {
        let released =
            claim::release_claims(&self.store, &self.claim.projection, &self.claim.owner).await;
        if let Err(error) = released {
            tracing::warn!(%error, "lease not released cleanly; it expires on its own");
        }
    }
}
