//! The booking saga: reserve seats on every segment, take payment, confirm;
//! on any failure, compensate in reverse (refund, release seats, cancel).

use annals::process::{Effects, Input, ProcessManager};
use annals::{Aggregate, EventFilter, RecordedEvent};
use chrono::Duration;
use serde::Deserialize;
use uuid::Uuid;

use super::{BookingEvent, PaymentEvent};
// Contexts meet at events: the saga follows scheduling's seat events by name.
use crate::scheduling::FlightEvent;
use crate::values::Money;

/// How long the saga waits for the payment provider before it compensates.
pub const PAYMENT_TIMEOUT: Duration = Duration::seconds(3);

/// The deadline name for the payment timeout.
const PAYMENT_DEADLINE: &str = "payment-timeout";

/// What the saga asks of flights, payments and bookings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaCommand {
    /// Hold seats on a flight.
    ReserveSeats {
        /// The flight.
        flight_id: Uuid,
        /// The booking.
        booking_id: Uuid,
        /// How many.
        seats: u32,
    },
    /// Give a booking's seats on a flight back.
    ReleaseSeats {
        /// The flight.
        flight_id: Uuid,
        /// The booking.
        booking_id: Uuid,
    },
    /// Charge the card.
    TakePayment {
        /// The booking.
        booking_id: Uuid,
        /// How much.
        amount: Money,
        /// The card token.
        card_token: String,
    },
    /// Refund whatever was charged.
    RefundPayment {
        /// The booking.
        booking_id: Uuid,
    },
    /// Confirm the booking.
    ConfirmBooking {
        /// The booking.
        booking_id: Uuid,
    },
    /// Cancel the booking.
    CancelBooking {
        /// The booking.
        booking_id: Uuid,
        /// Why.
        reason: String,
    },
}

/// One flight of the booking, as the saga tracks it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct SagaSegment {
    /// The flight.
    pub flight_id: Uuid,
    /// Seats.
    pub seats: u32,
}

/// What the saga records.
#[derive(Debug, Clone, PartialEq, annals::DomainEvent)]
pub enum SagaEvent {
    /// A booking was requested: reserve its seats.
    SagaStarted {
        /// The booking.
        booking_id: Uuid,
        /// Its flights.
        segments: Vec<SagaSegment>,
        /// What to charge.
        amount: Money,
        /// The card.
        card_token: String,
    },
    /// One flight confirmed the seats.
    SeatsHeld {
        /// The flight.
        flight_id: Uuid,
    },
    /// Every seat is held: charge the card, and give up on the provider
    /// [`PAYMENT_TIMEOUT`] after asking.
    PaymentRequested {
        /// The booking.
        booking_id: Uuid,
        /// What to charge.
        amount: Money,
        /// The card.
        card_token: String,
    },
    /// Paid: confirm.
    PaymentSucceeded {
        /// The booking.
        booking_id: Uuid,
        /// The provider's payment id.
        payment_id: String,
    },
    /// The booking is confirmed: done.
    SagaConfirmed,
    /// Something failed (or the passenger cancelled): undo in reverse.
    CompensationStarted {
        /// The booking.
        booking_id: Uuid,
        /// Why.
        reason: String,
        /// Refund the payment first.
        refund: bool,
        /// Flights whose seats to release, last held first.
        release: Vec<Uuid>,
        /// Then cancel the booking (false when the passenger already did).
        cancel_booking: bool,
    },
    /// Seats held after compensation began: give them back.
    LateSeatsReleased {
        /// The booking.
        booking_id: Uuid,
        /// The flight.
        flight_id: Uuid,
    },
    /// Payment taken after compensation began: refund it.
    LatePaymentRefunded {
        /// The booking.
        booking_id: Uuid,
    },
    /// The provider has no charge to refund (it never charged, or the
    /// charge is still on its way and will be refunded when it is recorded).
    NothingCharged {
        /// The booking.
        booking_id: Uuid,
        /// What the provider said.
        reason: String,
    },
    /// The booking is cancelled: done.
    SagaCancelled {
        /// Why.
        reason: String,
    },
}

/// Where the saga stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SagaStage {
    /// No booking yet.
    #[default]
    NotStarted,
    /// Waiting for seats.
    Reserving,
    /// Waiting for the payment provider.
    Paying,
    /// Waiting for the booking to confirm.
    Confirming,
    /// Confirmed: done unless the passenger cancels.
    Confirmed,
    /// Undoing.
    Compensating,
    /// Cancelled: done.
    Cancelled,
}

/// The state of one booking's saga (stream `booking_saga-<booking id>`).
#[derive(Debug, Clone, Default, PartialEq, annals::AggregateType)]
#[aggregate(name = "booking_saga")]
pub struct BookingSaga {
    /// Where it stands.
    pub stage: SagaStage,
    booking_id: Uuid,
    segments: Vec<SagaSegment>,
    held: Vec<Uuid>,
    amount: Option<Money>,
    card_token: String,
    paid: bool,
}

impl BookingSaga {
    fn compensate(&self, reason: String, refund: bool, cancel_booking: bool) -> SagaEvent {
        SagaEvent::CompensationStarted {
            booking_id: self.booking_id,
            reason,
            refund,
            release: self.held.iter().rev().copied().collect(),
            cancel_booking,
        }
    }

    fn on_event(&self, event: &RecordedEvent) -> Vec<SagaEvent> {
        match (event.event_type.as_str(), self.stage) {
            (BookingEvent::BOOKING_REQUESTED, SagaStage::NotStarted) => {
                started(event).into_iter().collect()
            }
            (FlightEvent::SEATS_RESERVED, SagaStage::Reserving) => {
                let Some(flight_id) = flight_of(event) else {
                    return vec![];
                };
                let wanted = self.segments.iter().any(|s| s.flight_id == flight_id);
                if !wanted || self.held.contains(&flight_id) {
                    return vec![];
                }
                let mut out = vec![SagaEvent::SeatsHeld { flight_id }];
                if self.held.len() + 1 == self.segments.len() {
                    out.push(SagaEvent::PaymentRequested {
                        booking_id: self.booking_id,
                        amount: self.amount.unwrap_or(Money::usd(0)),
                        card_token: self.card_token.clone(),
                    });
                }
                out
            }
            (FlightEvent::SEATS_RESERVED, SagaStage::Compensating | SagaStage::Cancelled) => {
                flight_of(event)
                    .map(|flight_id| SagaEvent::LateSeatsReleased {
                        booking_id: self.booking_id,
                        flight_id,
                    })
                    .into_iter()
                    .collect()
            }
            (PaymentEvent::PAYMENT_TAKEN, SagaStage::Paying) => vec![SagaEvent::PaymentSucceeded {
                booking_id: self.booking_id,
                payment_id: Fields::of(event).payment_id.unwrap_or_default(),
            }],
            (PaymentEvent::PAYMENT_TAKEN, SagaStage::Compensating | SagaStage::Cancelled) => {
                vec![SagaEvent::LatePaymentRefunded {
                    booking_id: self.booking_id,
                }]
            }
            (PaymentEvent::PAYMENT_DECLINED, SagaStage::Paying) => {
                let why = Fields::of(event).reason;
                let why = why.as_deref().unwrap_or("declined");
                vec![self.compensate(format!("payment failed: {why}"), false, true)]
            }
            (BookingEvent::BOOKING_CONFIRMED, SagaStage::Confirming) => {
                vec![SagaEvent::SagaConfirmed]
            }
            (BookingEvent::BOOKING_CANCELLED, stage) => {
                let reason = Fields::of(event).reason.unwrap_or_default();
                match stage {
                    SagaStage::Compensating => vec![SagaEvent::SagaCancelled { reason }],
                    SagaStage::Reserving
                    | SagaStage::Paying
                    | SagaStage::Confirming
                    | SagaStage::Confirmed => vec![
                        self.compensate(
                            reason.clone(),
                            self.paid || stage == SagaStage::Paying,
                            false,
                        ),
                        SagaEvent::SagaCancelled { reason },
                    ],
                    SagaStage::NotStarted | SagaStage::Cancelled => vec![],
                }
            }
            _ => vec![],
        }
    }
}

/// The flight a `SeatsReserved` event came from: its stream is `flight-<id>`.
fn flight_of(event: &RecordedEvent) -> Option<Uuid> {
    event.stream_id.strip_prefix("flight-")?.parse().ok()
}

/// The saga's view of a `BookingRequested` event: only the fields it needs.
fn started(event: &RecordedEvent) -> Option<SagaEvent> {
    #[derive(Deserialize)]
    struct Requested {
        booking_id: Uuid,
        segments: Vec<SagaSegment>,
        total: Money,
        card_token: String,
    }
    let r: Requested = event.payload.decode().ok()?;
    Some(SagaEvent::SagaStarted {
        booking_id: r.booking_id,
        segments: r.segments,
        amount: r.total,
        card_token: r.card_token,
    })
}

/// The fields the saga reads from the other events it follows, where they
/// have them.
#[derive(Debug, Default, Deserialize)]
struct Fields {
    booking_id: Option<String>,
    payment_id: Option<String>,
    reason: Option<String>,
}

impl Fields {
    /// Decoded only by the arms that read them: most events the saga sees
    /// need none.
    fn of(event: &RecordedEvent) -> Self {
        event.payload.decode().unwrap_or_default()
    }
}

impl Aggregate for BookingSaga {
    type Event = SagaEvent;
    type Error = std::convert::Infallible;

    fn apply(&mut self, event: &SagaEvent) {
        match event {
            SagaEvent::SagaStarted {
                booking_id,
                segments,
                amount,
                card_token,
            } => {
                self.stage = SagaStage::Reserving;
                self.booking_id = *booking_id;
                self.segments = segments.clone();
                self.amount = Some(*amount);
                self.card_token = card_token.clone();
            }
            SagaEvent::SeatsHeld { flight_id } => self.held.push(*flight_id),
            SagaEvent::PaymentRequested { .. } => self.stage = SagaStage::Paying,
            SagaEvent::PaymentSucceeded { .. } => {
                self.stage = SagaStage::Confirming;
                self.paid = true;
            }
            SagaEvent::SagaConfirmed => self.stage = SagaStage::Confirmed,
            SagaEvent::CompensationStarted { .. } => {
                self.stage = SagaStage::Compensating;
                self.held.clear();
            }
            SagaEvent::LateSeatsReleased { .. }
            | SagaEvent::LatePaymentRefunded { .. }
            | SagaEvent::NothingCharged { .. } => {}
            SagaEvent::SagaCancelled { .. } => self.stage = SagaStage::Cancelled,
        }
    }
}

impl ProcessManager for BookingSaga {
    type Command = SagaCommand;

    fn filter() -> EventFilter {
        EventFilter::types([
            BookingEvent::BOOKING_REQUESTED,
            BookingEvent::BOOKING_CONFIRMED,
            BookingEvent::BOOKING_CANCELLED,
            FlightEvent::SEATS_RESERVED,
            PaymentEvent::PAYMENT_TAKEN,
            PaymentEvent::PAYMENT_DECLINED,
        ])
    }

    fn correlate(event: &RecordedEvent) -> Option<Uuid> {
        match event.stream_id.split_once('-') {
            Some(("booking", id)) => id.parse().ok(),
            _ => Fields::of(event).booking_id?.parse().ok(),
        }
    }

    fn react(&self, input: &Input<SagaCommand>) -> Vec<SagaEvent> {
        match input {
            Input::Event(event) => self.on_event(event),
            Input::Deadline { name, .. }
                if name == PAYMENT_DEADLINE && self.stage == SagaStage::Paying =>
            {
                // The provider never answered: it may still have charged, so refund too.
                vec![self.compensate("payment timed out".into(), true, true)]
            }
            Input::Rejected { command, reason } => match (command, self.stage) {
                (SagaCommand::ReserveSeats { flight_id, .. }, SagaStage::Reserving) => {
                    vec![self.compensate(
                        format!("no seats on flight {flight_id}: {reason}"),
                        false,
                        true,
                    )]
                }
                (SagaCommand::ConfirmBooking { .. }, SagaStage::Confirming) => {
                    vec![self.compensate(format!("confirmation refused: {reason}"), true, false)]
                }
                (
                    SagaCommand::RefundPayment { booking_id },
                    SagaStage::Compensating | SagaStage::Cancelled,
                ) => vec![SagaEvent::NothingCharged {
                    booking_id: *booking_id,
                    reason: reason.clone(),
                }],
                _ => vec![],
            },
            Input::Deadline { .. } => vec![],
        }
    }

    fn effects(event: &SagaEvent) -> Effects<SagaCommand> {
        match event {
            SagaEvent::SagaStarted {
                booking_id,
                segments,
                ..
            } => Effects {
                commands: segments
                    .iter()
                    .map(|s| SagaCommand::ReserveSeats {
                        flight_id: s.flight_id,
                        booking_id: *booking_id,
                        seats: s.seats,
                    })
                    .collect(),
                deadlines: vec![],
                cancels: vec![],
            },
            SagaEvent::PaymentRequested {
                booking_id,
                amount,
                card_token,
            } => Effects::command(SagaCommand::TakePayment {
                booking_id: *booking_id,
                amount: *amount,
                card_token: card_token.clone(),
            })
            .with_timeout(PAYMENT_DEADLINE, PAYMENT_TIMEOUT),
            // Answered in time: the timeout has nothing left to do.
            SagaEvent::PaymentSucceeded { booking_id, .. } => {
                Effects::command(SagaCommand::ConfirmBooking {
                    booking_id: *booking_id,
                })
                .cancelling(PAYMENT_DEADLINE)
            }
            SagaEvent::CompensationStarted {
                booking_id,
                reason,
                refund,
                release,
                cancel_booking,
            } => {
                let mut commands = Vec::new();
                if *refund {
                    commands.push(SagaCommand::RefundPayment {
                        booking_id: *booking_id,
                    });
                }
                commands.extend(release.iter().map(|flight_id| SagaCommand::ReleaseSeats {
                    flight_id: *flight_id,
                    booking_id: *booking_id,
                }));
                if *cancel_booking {
                    commands.push(SagaCommand::CancelBooking {
                        booking_id: *booking_id,
                        reason: reason.clone(),
                    });
                }
                Effects {
                    commands,
                    deadlines: vec![],
                    cancels: vec![PAYMENT_DEADLINE.into()],
                }
            }
            SagaEvent::LateSeatsReleased {
                booking_id,
                flight_id,
            } => Effects::command(SagaCommand::ReleaseSeats {
                flight_id: *flight_id,
                booking_id: *booking_id,
            }),
            SagaEvent::LatePaymentRefunded { booking_id } => {
                Effects::command(SagaCommand::RefundPayment {
                    booking_id: *booking_id,
                })
            }
            SagaEvent::SeatsHeld { .. }
            | SagaEvent::SagaConfirmed
            | SagaEvent::NothingCharged { .. }
            | SagaEvent::SagaCancelled { .. } => Effects::none(),
        }
    }
}
