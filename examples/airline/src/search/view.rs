//! The flight as readers see it: one definition of the read model, folded
//! from the flight's events by every backend.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::scheduling::FlightEvent;
use crate::values::{AirportCode, FlightNumber, Money};

/// A flight as readers see it (`GET /flights/{id}` and search results).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlightView {
    /// The flight.
    pub id: Uuid,
    /// Marketing number.
    pub flight_number: FlightNumber,
    /// Origin.
    pub from: AirportCode,
    /// Destination.
    pub to: AirportCode,
    /// Departure, UTC.
    pub departure: DateTime<Utc>,
    /// Arrival, UTC.
    pub arrival: DateTime<Utc>,
    /// Price of one seat.
    pub price: Money,
    /// Seats on the flight.
    pub seats_total: u32,
    /// Seats still on sale.
    pub seats_available: u32,
    /// `scheduled` or `cancelled`.
    pub status: FlightViewStatus,
}

/// A flight's status on the read side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlightViewStatus {
    /// On sale.
    Scheduled,
    /// Will not fly: out of search, still readable by id.
    Cancelled,
}

impl FlightView {
    /// Folds one flight event into the view: the one definition of the read
    /// model, shared by every backend. `None` before the flight is scheduled.
    pub fn fold(view: Option<FlightView>, event: &FlightEvent) -> Option<FlightView> {
        if let FlightEvent::FlightScheduled {
            flight_id,
            flight_number,
            from,
            to,
            departure,
            arrival,
            seats,
            price,
        } = event
        {
            return Some(FlightView {
                id: *flight_id,
                flight_number: flight_number.clone(),
                from: *from,
                to: *to,
                departure: *departure,
                arrival: *arrival,
                price: *price,
                seats_total: *seats,
                seats_available: *seats,
                status: FlightViewStatus::Scheduled,
            });
        }
        let mut view = view?;
        match event {
            FlightEvent::FlightScheduled { .. } => {}
            FlightEvent::FlightRescheduled { departure, arrival } => {
                view.departure = *departure;
                view.arrival = *arrival;
            }
            FlightEvent::PriceChanged { price } => view.price = *price,
            FlightEvent::SeatsReserved { seats, .. } => {
                view.seats_available = view.seats_available.saturating_sub(*seats);
            }
            FlightEvent::SeatsReleased { seats, .. } => {
                view.seats_available = (view.seats_available + seats).min(view.seats_total);
            }
            FlightEvent::FlightCancelled { .. } => view.status = FlightViewStatus::Cancelled,
        }
        Some(view)
    }

    /// The text a `q` search matches: flight number, codes, cities, airport names.
    pub fn search_text(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}",
            self.flight_number,
            self.from,
            self.from.city(),
            self.from.name(),
            self.to,
            self.to.city(),
            self.to.name()
        )
    }
}
