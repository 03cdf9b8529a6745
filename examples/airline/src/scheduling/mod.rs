//! Scheduling: the Flight aggregate, its seats and its price.
//!
//! Other contexts see flights only through [`FlightEvent`]s.

mod commands;
mod events;
mod flight;
mod schedule;

pub use commands::{
    CancelFlight, ChangePrice, ReleaseSeats, RescheduleFlight, ReserveSeats, ScheduleFlight,
};
pub use events::{FlightEvent, number_day_tag};
pub use flight::{Flight, FlightError, FlightStatus, MAX_SEATS};
pub use schedule::{FlightScheduledOnce, NumberOnDay};
