//! The Booking aggregate: a passenger's seats on one or more flights.

use annals::{Aggregate, Handle};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::Money;

/// Most seats one booking may take on one flight.
pub const MAX_SEATS_PER_SEGMENT: u32 = 9;

/// Who travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Passenger {
    /// Full name.
    pub name: String,
    /// Contact e-mail.
    pub email: String,
}

/// Seats on one flight, at the price quoted when booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The flight.
    pub flight_id: Uuid,
    /// How many seats.
    pub seats: u32,
    /// Price of one seat when booked.
    pub price: Money,
}

/// Where a booking stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    /// Not requested yet.
    #[default]
    New,
    /// Requested; seats and payment under way.
    Pending,
    /// Seats held and paid.
    Confirmed,
    /// Cancelled, by the passenger or because a step failed.
    Cancelled,
}

/// The events of a booking.
#[derive(Debug, Clone, PartialEq, annals::DomainEvent)]
pub enum BookingEvent {
    /// A passenger asked for seats.
    BookingRequested {
        /// The booking.
        booking_id: Uuid,
        /// Who travels.
        passenger: Passenger,
        /// The flights and seats.
        segments: Vec<Segment>,
        /// What it costs.
        total: Money,
        /// The card to charge (a payment-provider token, not a card number).
        card_token: String,
    },
    /// Seats held and paid.
    BookingConfirmed,
    /// The booking ended without travel.
    BookingCancelled {
        /// Why.
        reason: String,
    },
}

/// The rules a booking command can break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingError {
    /// No such booking.
    #[error("no such booking")]
    NotFound,
    /// The id is taken.
    #[error("the booking already exists")]
    AlreadyRequested,
    /// A booking needs at least one flight.
    #[error("a booking needs at least one segment")]
    NoSegments,
    /// The same flight twice.
    #[error("flight {0} appears twice")]
    DuplicateFlight(Uuid),
    /// Seats per flight between 1 and the limit.
    #[error("{0} seats is not between 1 and {MAX_SEATS_PER_SEGMENT}")]
    InvalidSeats(u32),
    /// A passenger needs a name and an e-mail address.
    #[error("passenger {0}")]
    InvalidPassenger(&'static str),
    /// No card token.
    #[error("a card token is required")]
    MissingCardToken,
    /// Segments priced in different currencies, or an overflow.
    #[error("the segments cannot be totalled: {0}")]
    InvalidTotal(&'static str),
    /// Too late: it is cancelled.
    #[error("the booking is cancelled")]
    Cancelled,
}

/// A passenger's booking.
#[derive(Debug, Clone, Default, PartialEq, annals::AggregateType)]
#[aggregate(name = "booking")]
pub struct Booking {
    /// Where it stands.
    pub status: BookingStatus,
    /// Why it was cancelled.
    pub reason: Option<String>,
    /// Who travels.
    pub passenger: Option<Passenger>,
    /// The flights and seats.
    pub segments: Vec<Segment>,
    /// What it costs.
    pub total: Option<Money>,
}

/// Ask for seats on one or more flights, priced by the caller's quote.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestBooking {
    /// The new booking's id.
    pub booking_id: Uuid,
    /// Who travels.
    pub passenger: Passenger,
    /// The flights, seats and quoted prices.
    pub segments: Vec<Segment>,
    /// The card to charge.
    pub card_token: String,
}

/// Seats held and paid: confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmBooking;

/// End the booking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelBooking {
    /// Why.
    pub reason: String,
}

impl Aggregate for Booking {
    type Event = BookingEvent;
    type Error = BookingError;

    fn apply(&mut self, event: &BookingEvent) {
        match event {
            BookingEvent::BookingRequested {
                passenger,
                segments,
                total,
                ..
            } => {
                self.status = BookingStatus::Pending;
                self.passenger = Some(passenger.clone());
                self.segments = segments.clone();
                self.total = Some(*total);
            }
            BookingEvent::BookingConfirmed => self.status = BookingStatus::Confirmed,
            BookingEvent::BookingCancelled { reason } => {
                self.status = BookingStatus::Cancelled;
                self.reason = Some(reason.clone());
            }
        }
    }
}

fn total(segments: &[Segment]) -> Result<Money, BookingError> {
    let mut sum: Option<Money> = None;
    for segment in segments {
        let cost = segment
            .price
            .times(segment.seats)
            .ok_or(BookingError::InvalidTotal("overflow"))?;
        sum = Some(match sum {
            None => cost,
            Some(s) => s
                .checked_add(cost)
                .ok_or(BookingError::InvalidTotal("mixed currencies"))?,
        });
    }
    sum.ok_or(BookingError::NoSegments)
}

impl Handle<RequestBooking> for Booking {
    fn handle(&self, cmd: &RequestBooking) -> Result<Vec<BookingEvent>, BookingError> {
        if self.status != BookingStatus::New {
            return Err(BookingError::AlreadyRequested);
        }
        if cmd.passenger.name.trim().is_empty() || cmd.passenger.name.len() > 200 {
            return Err(BookingError::InvalidPassenger(
                "name must be 1 to 200 characters",
            ));
        }
        let email = cmd.passenger.email.trim();
        let valid_email = email.len() <= 254
            && email
                .split_once('@')
                .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'));
        if !valid_email {
            return Err(BookingError::InvalidPassenger(
                "email is not an e-mail address",
            ));
        }
        if cmd.card_token.trim().is_empty() {
            return Err(BookingError::MissingCardToken);
        }
        for (i, segment) in cmd.segments.iter().enumerate() {
            if !(1..=MAX_SEATS_PER_SEGMENT).contains(&segment.seats) {
                return Err(BookingError::InvalidSeats(segment.seats));
            }
            if cmd.segments[..i]
                .iter()
                .any(|s| s.flight_id == segment.flight_id)
            {
                return Err(BookingError::DuplicateFlight(segment.flight_id));
            }
        }
        let total = total(&cmd.segments)?;
        Ok(vec![BookingEvent::BookingRequested {
            booking_id: cmd.booking_id,
            passenger: cmd.passenger.clone(),
            segments: cmd.segments.clone(),
            total,
            card_token: cmd.card_token.clone(),
        }])
    }
}

impl Handle<ConfirmBooking> for Booking {
    fn handle(&self, _: &ConfirmBooking) -> Result<Vec<BookingEvent>, BookingError> {
        match self.status {
            BookingStatus::New => Err(BookingError::NotFound),
            BookingStatus::Cancelled => Err(BookingError::Cancelled),
            BookingStatus::Confirmed => Ok(vec![]),
            BookingStatus::Pending => Ok(vec![BookingEvent::BookingConfirmed]),
        }
    }
}

impl Handle<CancelBooking> for Booking {
    fn handle(&self, cmd: &CancelBooking) -> Result<Vec<BookingEvent>, BookingError> {
        match self.status {
            BookingStatus::New => Err(BookingError::NotFound),
            BookingStatus::Cancelled => Ok(vec![]),
            BookingStatus::Pending | BookingStatus::Confirmed => {
                Ok(vec![BookingEvent::BookingCancelled {
                    reason: cmd.reason.clone(),
                }])
            }
        }
    }
}
