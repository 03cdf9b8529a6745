//! What can be asked of a flight.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::values::{AirportCode, FlightNumber, Money};

/// Put a new flight on the schedule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFlight {
    /// The new flight's id (the stream is `flight-<id>`).
    #[serde(skip, default = "Uuid::now_v7")]
    pub flight_id: Uuid,
    /// Marketing flight number.
    pub flight_number: FlightNumber,
    /// Origin.
    pub from: AirportCode,
    /// Destination.
    pub to: AirportCode,
    /// Departure, UTC.
    pub departure: DateTime<Utc>,
    /// Arrival, UTC.
    pub arrival: DateTime<Utc>,
    /// Seats on sale (at least one).
    pub seats: u32,
    /// Price of one seat (positive).
    pub price: Money,
}

/// Move a flight's departure and arrival.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RescheduleFlight {
    /// New departure.
    pub departure: DateTime<Utc>,
    /// New arrival.
    pub arrival: DateTime<Utc>,
}

/// Set the price of a seat.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePrice {
    /// The new price (positive, same currency).
    pub price: Money,
}

/// Hold seats for a booking. Holding again for the same booking is a no-op.
#[derive(Debug, Clone, PartialEq)]
pub struct ReserveSeats {
    /// The booking.
    pub booking_id: Uuid,
    /// How many seats.
    pub seats: u32,
}

/// Put a booking's seats back on sale. Releasing seats not held is a no-op.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseSeats {
    /// The booking.
    pub booking_id: Uuid,
}

/// Cancel the flight.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelFlight {
    /// Why (optional).
    #[serde(default)]
    pub reason: String,
}
