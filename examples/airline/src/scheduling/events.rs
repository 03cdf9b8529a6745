//! What happens to a flight.

use annals::{DomainEvent, UpcastError};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::values::{AirportCode, FlightNumber, Money};

/// The tag of a flight number on a departure day (UTC):
/// `flight_number:AN123@2026-12-01`.
pub fn number_day_tag(number: &FlightNumber, day: NaiveDate) -> String {
    format!("flight_number:{number}@{day}")
}

/// The events of the Flight aggregate.
#[derive(Debug, Clone, PartialEq, DomainEvent)]
pub enum FlightEvent {
    /// A flight was put on the schedule.
    ///
    /// v1 stored the price as `price_cents` (always US dollars); v2 stores [`Money`].
    /// Tagged with the flight (`flight:<id>`) and its number on its departure
    /// day ([`number_day_tag`]), which the scheduling rule queries.
    #[event(
        version = 2,
        upcast(v1 = price_cents_to_money),
        tag = number_day_tag(flight_number, departure.date_naive())
    )]
    FlightScheduled {
        /// The flight's id.
        #[tag("flight")]
        flight_id: Uuid,
        /// Marketing flight number.
        flight_number: FlightNumber,
        /// Origin.
        from: AirportCode,
        /// Destination.
        to: AirportCode,
        /// Departure time, UTC.
        departure: DateTime<Utc>,
        /// Arrival time, UTC.
        arrival: DateTime<Utc>,
        /// Seats on sale.
        seats: u32,
        /// Price of one seat.
        price: Money,
    },
    /// Departure and arrival moved.
    FlightRescheduled {
        /// New departure.
        departure: DateTime<Utc>,
        /// New arrival.
        arrival: DateTime<Utc>,
    },
    /// The price of a seat changed (v1: `price_cents`, US dollars).
    #[event(version = 2, upcast(v1 = price_cents_to_money))]
    PriceChanged {
        /// The new price.
        price: Money,
    },
    /// Seats were held for a booking.
    SeatsReserved {
        /// The booking holding them.
        booking_id: Uuid,
        /// How many.
        seats: u32,
    },
    /// A booking's seats went back on sale.
    SeatsReleased {
        /// The booking that held them.
        booking_id: Uuid,
        /// How many.
        seats: u32,
    },
    /// The flight will not fly.
    FlightCancelled {
        /// Why, for the passengers.
        reason: String,
    },
}

/// v1 → v2 of `FlightScheduled` and `PriceChanged`: `price_cents` became `price`.
fn price_cents_to_money(mut payload: Value) -> Result<Value, UpcastError> {
    let object = payload
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("payload is not an object"))?;
    let cents = object
        .remove("price_cents")
        .and_then(|v| v.as_i64())
        .ok_or_else(|| UpcastError::new("price_cents is missing or not an integer"))?;
    object.insert(
        "price".into(),
        json!({ "amount": cents, "currency": "USD" }),
    );
    Ok(payload)
}
