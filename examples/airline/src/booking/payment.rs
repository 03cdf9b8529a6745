//! The Payment aggregate: what the payment provider said about a booking's
//! charge, as recorded in the payment's stream (`payment-<booking id>`). The
//! provider itself is behind [`PaymentService`](super::PaymentService).

use annals::{Aggregate, Handle};
use uuid::Uuid;

use crate::values::Money;

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
#[derive(Debug, Clone, Default, PartialEq, annals::AggregateType)]
#[aggregate(name = "payment")]
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
