//! Payments: the Payment aggregate that records what the payment provider
//! said, the provider behind a trait, its simulation, and a resilient client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::{Aggregate, Handle};
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use failsafe::futures::CircuitBreaker as _;
use uuid::Uuid;

use crate::values::Money;

/// What the payment provider can say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The card was declined: final.
    #[error("declined: {0}")]
    Declined(String),
    /// The provider failed or did not answer in time: may be retried.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
}

/// A payment provider. Calls are idempotent by booking id: charging the same
/// booking twice charges once.
#[async_trait]
pub trait PaymentService: Send + Sync + 'static {
    /// Charges the card for the booking; returns the provider's payment id.
    async fn charge(
        &self,
        booking_id: Uuid,
        amount: Money,
        card_token: &str,
    ) -> Result<String, PaymentError>;

    /// Refunds whatever was charged for the booking; `None` when nothing was.
    async fn refund(&self, booking_id: Uuid) -> Result<Option<Money>, PaymentError>;
}

/// An in-process payment provider that decides by card token:
/// `tok_visa` pays, `tok_declined` is declined, `tok_timeout` never answers.
/// It can be told to fail the next calls or to be slow.
#[derive(Debug, Clone, Default)]
pub struct SimulatedPayments {
    inner: Arc<Mutex<Simulation>>,
}

#[derive(Debug, Default)]
struct Simulation {
    charges: HashMap<Uuid, (String, Money)>,
    refunded: HashMap<Uuid, Money>,
    fail_next: u32,
    delay: Duration,
    calls: u64,
}

impl SimulatedPayments {
    /// A provider that answers at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `calls` calls fail as unavailable.
    pub fn fail_next(&self, calls: u32) {
        self.with(|s| s.fail_next = calls);
    }

    /// Every call takes this long.
    pub fn set_delay(&self, delay: Duration) {
        self.with(|s| s.delay = delay);
    }

    /// What was charged for a booking and not refunded.
    pub fn charged(&self, booking_id: Uuid) -> Option<Money> {
        self.with(|s| {
            s.charges
                .get(&booking_id)
                .filter(|_| !s.refunded.contains_key(&booking_id))
                .map(|(_, m)| *m)
        })
    }

    /// What was refunded for a booking.
    pub fn refunded(&self, booking_id: Uuid) -> Option<Money> {
        self.with(|s| s.refunded.get(&booking_id).copied())
    }

    /// Calls received, failed ones included.
    pub fn calls(&self) -> u64 {
        self.with(|s| s.calls)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Simulation) -> T) -> T {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Counts the call, applies the delay, and fails it if told to.
    async fn enter(&self) -> Result<(), PaymentError> {
        let (delay, fail) = self.with(|s| {
            s.calls += 1;
            let fail = s.fail_next > 0;
            s.fail_next = s.fail_next.saturating_sub(1);
            (s.delay, fail)
        });
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if fail {
            return Err(PaymentError::Unavailable("simulated outage".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl PaymentService for SimulatedPayments {
    async fn charge(
        &self,
        booking_id: Uuid,
        amount: Money,
        card_token: &str,
    ) -> Result<String, PaymentError> {
        self.enter().await?;
        match card_token {
            "tok_visa" => Ok(self.with(|s| {
                s.charges
                    .entry(booking_id)
                    .or_insert_with(|| (format!("pay_{}", booking_id.simple()), amount))
                    .0
                    .clone()
            })),
            "tok_declined" => Err(PaymentError::Declined("card declined".into())),
            "tok_timeout" => std::future::pending().await,
            other => Err(PaymentError::Declined(format!(
                "unknown card token {other:?}"
            ))),
        }
    }

    async fn refund(&self, booking_id: Uuid) -> Result<Option<Money>, PaymentError> {
        self.enter().await?;
        Ok(self.with(|s| {
            let (_, amount) = s.charges.get(&booking_id)?.clone();
            s.refunded.insert(booking_id, amount);
            Some(amount)
        }))
    }
}

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
                .call_with(
                    |e: &PaymentError| matches!(e, PaymentError::Unavailable(_)),
                    timed,
                )
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
            .when(|e| matches!(e, PaymentError::Unavailable(_)))
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

    async fn refund(&self, booking_id: Uuid) -> Result<Option<Money>, PaymentError> {
        self.guarded(|| self.provider.refund(booking_id)).await
    }
}

/// What the payment provider did, as recorded in the payment's stream (`payment-<booking id>`).
#[derive(Debug, Clone, PartialEq, annals::DomainEvent)]
pub enum PaymentEvent {
    /// The card was charged.
    PaymentTaken {
        /// The booking paid for.
        booking_id: Uuid,
        /// The provider's payment id.
        payment_id: String,
        /// How much.
        amount: Money,
    },
    /// The card was declined.
    PaymentDeclined {
        /// The booking.
        booking_id: Uuid,
        /// The provider's reason.
        reason: String,
    },
    /// The charge was refunded.
    PaymentRefunded {
        /// The booking.
        booking_id: Uuid,
        /// How much.
        amount: Money,
    },
}

/// What the provider answered, to record.
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentOutcome {
    /// Charged.
    Taken {
        /// Provider's id.
        payment_id: String,
        /// Amount.
        amount: Money,
    },
    /// Declined.
    Declined {
        /// Why.
        reason: String,
    },
}

/// The payment record of one booking.
#[derive(Debug, Clone, Default, PartialEq, annals::Aggregate)]
pub struct Payment {
    /// Charged and not refunded.
    pub taken: Option<Money>,
    /// Declined.
    pub declined: bool,
    /// Refunded.
    pub refunded: bool,
}

/// Records the provider's answer to a charge.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordPayment {
    /// The booking.
    pub booking_id: Uuid,
    /// The answer.
    pub outcome: PaymentOutcome,
}

/// Records a refund.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRefund {
    /// The booking.
    pub booking_id: Uuid,
    /// How much.
    pub amount: Money,
}

impl Aggregate for Payment {
    type Event = PaymentEvent;
    type Error = std::convert::Infallible;

    fn apply(&mut self, event: &PaymentEvent) {
        match event {
            PaymentEvent::PaymentTaken { amount, .. } => self.taken = Some(*amount),
            PaymentEvent::PaymentDeclined { .. } => self.declined = true,
            PaymentEvent::PaymentRefunded { .. } => {
                self.refunded = true;
                self.taken = None;
            }
        }
    }
}

impl Handle<RecordPayment> for Payment {
    fn handle(&self, cmd: &RecordPayment) -> Result<Vec<PaymentEvent>, std::convert::Infallible> {
        if self.taken.is_some() || self.declined || self.refunded {
            return Ok(vec![]); // the first answer stands
        }
        Ok(vec![match &cmd.outcome {
            PaymentOutcome::Taken { payment_id, amount } => PaymentEvent::PaymentTaken {
                booking_id: cmd.booking_id,
                payment_id: payment_id.clone(),
                amount: *amount,
            },
            PaymentOutcome::Declined { reason } => PaymentEvent::PaymentDeclined {
                booking_id: cmd.booking_id,
                reason: reason.clone(),
            },
        }])
    }
}

impl Handle<RecordRefund> for Payment {
    fn handle(&self, cmd: &RecordRefund) -> Result<Vec<PaymentEvent>, std::convert::Infallible> {
        if self.refunded {
            return Ok(vec![]);
        }
        Ok(vec![PaymentEvent::PaymentRefunded {
            booking_id: cmd.booking_id,
            amount: cmd.amount,
        }])
    }
}
