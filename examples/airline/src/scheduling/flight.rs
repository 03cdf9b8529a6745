//! The Flight aggregate: schedule, price and seat inventory of one flight.

use std::collections::BTreeMap;

use annals::{Aggregate, Handle};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::{
    CancelFlight, ChangePrice, ReleaseSeats, RescheduleFlight, ReserveSeats, ScheduleFlight,
};
use super::events::FlightEvent;
use crate::values::{AirportCode, FlightNumber, Money};

/// Most seats one flight may sell.
pub const MAX_SEATS: u32 = 1000;

/// Where a flight stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlightStatus {
    /// Not scheduled yet: the stream is empty.
    #[default]
    Unscheduled,
    /// On sale.
    Scheduled,
    /// Will not fly.
    Cancelled,
}

/// The rules a flight command can break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlightError {
    /// The flight does not exist.
    #[error("no such flight")]
    NotFound,
    /// Scheduling a flight id twice.
    #[error("the flight is already scheduled")]
    AlreadyScheduled,
    /// The flight number already flies that day.
    #[error("flight number {number} is already scheduled on {day}")]
    NumberTaken {
        /// The flight number.
        number: FlightNumber,
        /// The departure day (UTC).
        day: chrono::NaiveDate,
    },
    /// The flight is cancelled.
    #[error("the flight is cancelled")]
    Cancelled,
    /// Origin and destination are the same airport.
    #[error("origin and destination are both {0}")]
    SameAirport(AirportCode),
    /// Arrival is not after departure.
    #[error("arrival {arrival} is not after departure {departure}")]
    ArrivalBeforeDeparture {
        /// Departure given.
        departure: DateTime<Utc>,
        /// Arrival given.
        arrival: DateTime<Utc>,
    },
    /// Seat counts must be between 1 and [`MAX_SEATS`].
    #[error("{0} seats is not between 1 and {MAX_SEATS}")]
    InvalidSeats(u32),
    /// Prices are positive.
    #[error("price must be positive, got {0}")]
    InvalidPrice(Money),
    /// A price change may not switch currency.
    #[error("price is in {current}, not {given}")]
    CurrencyMismatch {
        /// The flight's currency.
        current: String,
        /// The currency given.
        given: String,
    },
    /// Fewer seats left than requested: no overbooking.
    #[error("{requested} seats requested, {available} available")]
    NotEnoughSeats {
        /// Seats asked for.
        requested: u32,
        /// Seats left.
        available: u32,
    },
}

/// A scheduled flight: the consistency boundary for its seats and price.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, annals::AggregateType)]
#[aggregate(name = "flight", snapshot)]
pub struct Flight {
    status: FlightStatus,
    flight_number: Option<FlightNumber>,
    departure: Option<DateTime<Utc>>,
    arrival: Option<DateTime<Utc>>,
    price: Option<Money>,
    seats_total: u32,
    seats_reserved: u32,
    reservations: BTreeMap<Uuid, u32>,
}

impl Flight {
    /// Where the flight stands.
    pub fn status(&self) -> FlightStatus {
        self.status
    }

    /// Seats still on sale.
    pub fn seats_available(&self) -> u32 {
        self.seats_total.saturating_sub(self.seats_reserved)
    }

    /// The current price of a seat.
    pub fn price(&self) -> Option<Money> {
        self.price
    }

    /// Seats held by a booking.
    pub fn reserved_for(&self, booking_id: Uuid) -> u32 {
        self.reservations.get(&booking_id).copied().unwrap_or(0)
    }

    fn on_sale(&self) -> Result<(), FlightError> {
        match self.status {
            FlightStatus::Unscheduled => Err(FlightError::NotFound),
            FlightStatus::Cancelled => Err(FlightError::Cancelled),
            FlightStatus::Scheduled => Ok(()),
        }
    }
}

fn check_times(departure: DateTime<Utc>, arrival: DateTime<Utc>) -> Result<(), FlightError> {
    if arrival <= departure {
        return Err(FlightError::ArrivalBeforeDeparture { departure, arrival });
    }
    Ok(())
}

fn check_price(price: Money) -> Result<(), FlightError> {
    if price.amount <= 0 {
        return Err(FlightError::InvalidPrice(price));
    }
    Ok(())
}

impl Aggregate for Flight {
    type Event = FlightEvent;
    type Error = FlightError;

    fn apply(&mut self, event: &FlightEvent) {
        match event {
            FlightEvent::FlightScheduled {
                flight_number,
                departure,
                arrival,
                seats,
                price,
                ..
            } => {
                self.status = FlightStatus::Scheduled;
                self.flight_number = Some(flight_number.clone());
                self.departure = Some(*departure);
                self.arrival = Some(*arrival);
                self.seats_total = *seats;
                self.price = Some(*price);
            }
            FlightEvent::FlightRescheduled { departure, arrival } => {
                self.departure = Some(*departure);
                self.arrival = Some(*arrival);
            }
            FlightEvent::PriceChanged { price } => self.price = Some(*price),
            FlightEvent::SeatsReserved { booking_id, seats } => {
                *self.reservations.entry(*booking_id).or_default() += seats;
                self.seats_reserved += seats;
            }
            FlightEvent::SeatsReleased { booking_id, seats } => {
                self.reservations.remove(booking_id);
                self.seats_reserved = self.seats_reserved.saturating_sub(*seats);
            }
            FlightEvent::FlightCancelled { .. } => self.status = FlightStatus::Cancelled,
        }
    }
}

impl Handle<ScheduleFlight> for Flight {
    fn handle(&self, cmd: &ScheduleFlight) -> Result<Vec<FlightEvent>, FlightError> {
        if self.status != FlightStatus::Unscheduled {
            return Err(FlightError::AlreadyScheduled);
        }
        if cmd.from == cmd.to {
            return Err(FlightError::SameAirport(cmd.from));
        }
        check_times(cmd.departure, cmd.arrival)?;
        if !(1..=MAX_SEATS).contains(&cmd.seats) {
            return Err(FlightError::InvalidSeats(cmd.seats));
        }
        check_price(cmd.price)?;
        Ok(vec![FlightEvent::FlightScheduled {
            flight_id: cmd.flight_id,
            flight_number: cmd.flight_number.clone(),
            from: cmd.from,
            to: cmd.to,
            departure: cmd.departure,
            arrival: cmd.arrival,
            seats: cmd.seats,
            price: cmd.price,
        }])
    }
}

impl Handle<RescheduleFlight> for Flight {
    fn handle(&self, cmd: &RescheduleFlight) -> Result<Vec<FlightEvent>, FlightError> {
        self.on_sale()?;
        check_times(cmd.departure, cmd.arrival)?;
        if self.departure == Some(cmd.departure) && self.arrival == Some(cmd.arrival) {
            return Ok(vec![]);
        }
        Ok(vec![FlightEvent::FlightRescheduled {
            departure: cmd.departure,
            arrival: cmd.arrival,
        }])
    }
}

impl Handle<ChangePrice> for Flight {
    fn handle(&self, cmd: &ChangePrice) -> Result<Vec<FlightEvent>, FlightError> {
        self.on_sale()?;
        check_price(cmd.price)?;
        match self.price {
            Some(current) if current == cmd.price => Ok(vec![]),
            Some(current) if current.currency != cmd.price.currency => {
                Err(FlightError::CurrencyMismatch {
                    current: current.currency.to_string(),
                    given: cmd.price.currency.to_string(),
                })
            }
            _ => Ok(vec![FlightEvent::PriceChanged { price: cmd.price }]),
        }
    }
}

impl Handle<ReserveSeats> for Flight {
    fn handle(&self, cmd: &ReserveSeats) -> Result<Vec<FlightEvent>, FlightError> {
        self.on_sale()?;
        if self.reservations.contains_key(&cmd.booking_id) {
            return Ok(vec![]);
        }
        if !(1..=MAX_SEATS).contains(&cmd.seats) {
            return Err(FlightError::InvalidSeats(cmd.seats));
        }
        let available = self.seats_available();
        if cmd.seats > available {
            return Err(FlightError::NotEnoughSeats {
                requested: cmd.seats,
                available,
            });
        }
        Ok(vec![FlightEvent::SeatsReserved {
            booking_id: cmd.booking_id,
            seats: cmd.seats,
        }])
    }
}

impl Handle<ReleaseSeats> for Flight {
    fn handle(&self, cmd: &ReleaseSeats) -> Result<Vec<FlightEvent>, FlightError> {
        // Compensation must always be possible, even on a cancelled flight.
        Ok(self
            .reservations
            .get(&cmd.booking_id)
            .map(|&seats| FlightEvent::SeatsReleased {
                booking_id: cmd.booking_id,
                seats,
            })
            .into_iter()
            .collect())
    }
}

impl Handle<CancelFlight> for Flight {
    fn handle(&self, cmd: &CancelFlight) -> Result<Vec<FlightEvent>, FlightError> {
        match self.status {
            FlightStatus::Unscheduled => Err(FlightError::NotFound),
            FlightStatus::Cancelled => Ok(vec![]),
            FlightStatus::Scheduled => Ok(vec![FlightEvent::FlightCancelled {
                reason: cmd.reason.clone(),
            }]),
        }
    }
}
