//! The payment provider as the booking context sees it: a port
//! ([`PaymentService`]) and its adapters: the simulated provider
//! ([`SimulatedPayments`], its charges kept in memory or in PostgreSQL) and
//! the resilient client around any provider ([`ResilientPayments`]).

mod resilient;
mod simulated;

use async_trait::async_trait;
use uuid::Uuid;

use crate::values::Money;

pub use resilient::ResilientPayments;
pub use simulated::{Charge, SimulatedPayments};

/// What the payment provider can say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The card was declined: final.
    #[error("declined: {0}")]
    Declined(String),
    /// Nothing was charged for the booking, so there is nothing to refund: final.
    #[error("no charge for booking {0}")]
    NotCharged(Uuid),
    /// The provider failed or did not answer in time: may be retried.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
}

impl PaymentError {
    /// Whether trying again later may give another answer.
    pub fn is_transient(&self) -> bool {
        matches!(self, PaymentError::Unavailable(_))
    }
}

/// A payment provider. Calls are idempotent by booking id: charging the same
/// booking twice charges once, refunding twice refunds once (and answers the
/// amount both times).
#[async_trait]
pub trait PaymentService: Send + Sync + 'static {
    /// Charges the card for the booking; returns the provider's payment id.
    async fn charge(
        &self,
        booking_id: Uuid,
        amount: Money,
        card_token: &str,
    ) -> Result<String, PaymentError>;

    /// Refunds what was charged for the booking and returns the amount;
    /// [`PaymentError::NotCharged`] when nothing was.
    async fn refund(&self, booking_id: Uuid) -> Result<Money, PaymentError>;
}
