//! The simulated payment provider: it decides by card token and remembers
//! what it charged, in memory or in PostgreSQL (so that a refund after a
//! restart or a failover finds the charge).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use super::{PaymentError, PaymentService};
use crate::values::{Currency, Money};

const CREATE_CHARGES: &str = include_str!("sql/create_charges.sql");
const CHARGE: &str = include_str!("sql/charge.sql");
const REFUND: &str = include_str!("sql/refund.sql");

/// An in-process payment provider that decides by card token: `tok_visa`
/// pays, `tok_declined` is declined, `tok_timeout` never answers. It can be
/// told to fail the next calls, to be unavailable for a while, or to be slow.
#[derive(Debug, Clone)]
pub struct SimulatedPayments {
    ledger: Arc<Ledger>,
    control: Arc<Mutex<Control>>,
}

/// What the provider charged.
#[derive(Debug)]
enum Ledger {
    Memory(Mutex<HashMap<Uuid, Charge>>),
    Postgres(PgPool),
}

/// One booking's charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// What was charged.
    pub amount: Money,
    /// Whether it was refunded.
    pub refunded: bool,
}

#[derive(Debug, Default)]
struct Control {
    fail_next: u32,
    unavailable_until: Option<Instant>,
    delay: Duration,
    calls: u64,
}

impl Default for SimulatedPayments {
    fn default() -> Self {
        Self::new()
    }
}

impl SimulatedPayments {
    /// A provider that keeps its charges in memory and answers at once.
    pub fn new() -> Self {
        Self::with_ledger(Ledger::Memory(Mutex::default()))
    }

    /// A provider that keeps its charges in PostgreSQL (its own table,
    /// created when missing), so they outlive the process.
    pub async fn on_postgres(pool: PgPool) -> Result<Self, sqlx::Error> {
        sqlx::raw_sql(CREATE_CHARGES).execute(&pool).await?;
        Ok(Self::with_ledger(Ledger::Postgres(pool)))
    }

    fn with_ledger(ledger: Ledger) -> Self {
        Self {
            ledger: Arc::new(ledger),
            control: Arc::default(),
        }
    }

    /// The next `calls` calls fail as unavailable.
    pub fn fail_next(&self, calls: u32) {
        self.with(|c| c.fail_next = calls);
    }

    /// Every call fails as unavailable for `outage` from now.
    pub fn unavailable_for(&self, outage: Duration) {
        self.with(|c| c.unavailable_until = Some(Instant::now() + outage));
    }

    /// Every call takes this long.
    pub fn set_delay(&self, delay: Duration) {
        self.with(|c| c.delay = delay);
    }

    /// Calls received, failed ones included.
    pub fn calls(&self) -> u64 {
        self.with(|c| c.calls)
    }

    /// The booking's charge, if the provider made one.
    pub async fn charge_of(&self, booking_id: Uuid) -> Result<Option<Charge>, PaymentError> {
        match &*self.ledger {
            Ledger::Memory(charges) => Ok(lock(charges).get(&booking_id).copied()),
            Ledger::Postgres(pool) => {
                let row: Option<(i64, String, bool)> = sqlx::query_as(
                    "SELECT amount, currency, refunded_at IS NOT NULL \
                     FROM airline_simulated_charges WHERE booking_id = $1",
                )
                .bind(booking_id)
                .fetch_optional(pool)
                .await
                .map_err(unavailable)?;
                row.map(|(amount, currency, refunded)| {
                    Ok(Charge {
                        amount: money(amount, &currency)?,
                        refunded,
                    })
                })
                .transpose()
            }
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Control) -> T) -> T {
        f(&mut self.control.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Counts the call, applies the delay, and fails it if told to.
    async fn enter(&self) -> Result<(), PaymentError> {
        let (delay, fail) = self.with(|c| {
            c.calls += 1;
            let failing =
                c.fail_next > 0 || c.unavailable_until.is_some_and(|t| Instant::now() < t);
            c.fail_next = c.fail_next.saturating_sub(1);
            (c.delay, failing)
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
            "tok_visa" => {}
            "tok_declined" => return Err(PaymentError::Declined("card declined".into())),
            "tok_timeout" => std::future::pending().await,
            other => {
                return Err(PaymentError::Declined(format!(
                    "unknown card token {other:?}"
                )));
            }
        }
        let payment_id = format!("pay_{}", booking_id.simple());
        match &*self.ledger {
            Ledger::Memory(charges) => {
                lock(charges).entry(booking_id).or_insert(Charge {
                    amount,
                    refunded: false,
                });
                Ok(payment_id)
            }
            Ledger::Postgres(pool) => sqlx::query_scalar(CHARGE)
                .bind(booking_id)
                .bind(&payment_id)
                .bind(amount.amount)
                .bind(amount.currency.as_str())
                .fetch_one(pool)
                .await
                .map_err(unavailable),
        }
    }

    async fn refund(&self, booking_id: Uuid) -> Result<Money, PaymentError> {
        self.enter().await?;
        let refunded = match &*self.ledger {
            Ledger::Memory(charges) => lock(charges).get_mut(&booking_id).map(|charge| {
                charge.refunded = true;
                charge.amount
            }),
            Ledger::Postgres(pool) => {
                let row: Option<(i64, String)> = sqlx::query_as(REFUND)
                    .bind(booking_id)
                    .fetch_optional(pool)
                    .await
                    .map_err(unavailable)?;
                row.map(|(amount, currency)| money(amount, &currency))
                    .transpose()?
            }
        };
        refunded.ok_or(PaymentError::NotCharged(booking_id))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The provider's own storage failing makes the provider unavailable.
fn unavailable(error: sqlx::Error) -> PaymentError {
    PaymentError::Unavailable(format!("provider storage: {error}"))
}

fn money(amount: i64, currency: &str) -> Result<Money, PaymentError> {
    let currency: Currency = currency
        .parse()
        .map_err(|e| PaymentError::Unavailable(format!("provider storage holds {e}")))?;
    Ok(Money::new(amount, currency))
}
