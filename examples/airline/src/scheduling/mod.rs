//! Scheduling: the Flight aggregate, its seats and its price.
//!
//! Other contexts see flights only through [`FlightEvent`]s.

mod commands;
mod events;
mod flight;

pub use commands::{
    CancelFlight, ChangePrice, ReleaseSeats, RescheduleFlight, ReserveSeats, ScheduleFlight,
};
pub use events::FlightEvent;
pub use flight::{Flight, FlightError, FlightStatus, MAX_SEATS};
