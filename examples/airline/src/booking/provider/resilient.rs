//! A client around any payment provider: a timeout per call, bounded
//! retries with backoff for unavailability, and a circuit breaker.

use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use failsafe::futures::CircuitBreaker as _;
use uuid::Uuid;

use super::{PaymentError, PaymentService};
use crate::values::Money;

/// A payment client with a timeout per call, bounded retries with backoff
/// and jitter for unavailability, and a circuit breaker that fails fast
/// while the provider is down.
pub struct ResilientPayments<P> {
    provider: P,
    timeout: Duration,
    retries: usize,
    breaker: failsafe::StateMachine<
        failsafe::failure_policy::ConsecutiveFailures<failsafe::backoff::Constant>,
        (),
    >,
}

impl<P: PaymentService> ResilientPayments<P> {
    /// Wraps a provider: each call times out after `timeout`, is retried up to
    /// `retries` times when unavailable, and the circuit opens after 5
    /// consecutive failures for 10 seconds.
    pub fn new(provider: P, timeout: Duration, retries: usize) -> Self {
        let policy = failsafe::failure_policy::consecutive_failures(
            5,
            failsafe::backoff::constant(Duration::from_secs(10)),
        );
        Self {
            provider,
            timeout,
            retries,
            breaker: failsafe::Config::new().failure_policy(policy).build(),
        }
    }

    /// The provider behind the client.
    pub fn provider(&self) -> &P {
        &self.provider
    }

    async fn guarded<T, F, Fut>(&self, call: F) -> Result<T, PaymentError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, PaymentError>>,
    {
        let attempt = || async {
            let timed = async {
                tokio::time::timeout(self.timeout, call())
                    .await
                    .unwrap_or_else(|_| Err(PaymentError::Unavailable("timed out".into())))
            };
            // Only unavailability counts against the circuit; a decline is an answer.
            match self
                .breaker
                .call_with(PaymentError::is_transient, timed)
                .await
            {
                Ok(value) => Ok(value),
                Err(failsafe::Error::Inner(error)) => Err(error),
                Err(failsafe::Error::Rejected) => {
                    Err(PaymentError::Unavailable("circuit open".into()))
                }
            }
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_secs(1))
                    .with_jitter()
                    .with_max_times(self.retries),
            )
            .when(PaymentError::is_transient)
            .await
    }
}

#[async_trait]
impl<P: PaymentService> PaymentService for ResilientPayments<P> {
    async fn charge(
        &self,
        booking_id: Uuid,
        amount: Money,
        card_token: &str,
    ) -> Result<String, PaymentError> {
        self.guarded(|| self.provider.charge(booking_id, amount, card_token))
            .await
    }

    async fn refund(&self, booking_id: Uuid) -> Result<Money, PaymentError> {
        self.guarded(|| self.provider.refund(booking_id)).await
    }
}
