//! The airline: the annals showcase. Flights, seats, prices, bookings and flight search,
//! each a bounded context that meets the others only through events.
#![warn(missing_docs)]

pub mod airports;
pub mod app;
pub mod booking;
pub mod config;
pub mod error;
pub mod http;
pub mod reads;
pub mod scheduling;
pub mod search;
pub mod values;
