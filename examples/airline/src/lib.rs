//! The airline: the annals showcase. Flights, seats, prices, bookings and flight search,
//! each a bounded context that meets the others only through events.
//!
//! - [`scheduling`]: the Flight aggregate (schedule, reschedule, price, seats, cancel).
//! - [`booking`]: the Booking and Payment aggregates and the booking saga.
//! - [`search`]: the flight read side: its view, the port the API reads through, in memory and on Elasticsearch.
//! - [`app`]: the application layer that composes them; [`http`]: the REST API;
//!   [`grpc`]: the flight search over gRPC.
//! - [`integration`]: the integration events other services consume over RabbitMQ (the
//!   public contract, mapped from the domain events and published by a relay);
//!   [`notifications`]: a small consuming service that records a notice per booking through
//!   an inbox.
//! - [`invariants`]: what must hold of seats, money, bookings and the read model,
//!   checked against the whole log (by tests, and by `airline check`).
//!
//! ```
//! use std::sync::Arc;
//! use airline::app::Airline;
//! use airline::booking::SimulatedPayments;
//! use airline::scheduling::{ReserveSeats, ScheduleFlight};
//! use airline::values::Money;
//! use annals::memory::MemoryStore;
//! use annals::CommandContext;
//! use uuid::Uuid;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let airline = Airline::new(MemoryStore::new(), Arc::new(SimulatedPayments::new()));
//! let flight = ScheduleFlight {
//!     flight_id: Uuid::now_v7(),
//!     flight_number: "AN123".parse().unwrap(),
//!     from: "JFK".parse().unwrap(),
//!     to: "LHR".parse().unwrap(),
//!     departure: "2026-12-01T18:00:00Z".parse().unwrap(),
//!     arrival: "2026-12-02T06:00:00Z".parse().unwrap(),
//!     seats: 2,
//!     price: Money::usd(45_000),
//! };
//! let id = flight.flight_id;
//! let done = airline.schedule_flight(flight, CommandContext::default()).await.unwrap();
//! assert_eq!(done.stream_version, 1);
//!
//! // Three seats on a two-seat flight: the aggregate refuses, nothing is written.
//! let flights = airline.flights();
//! let refused = flights.execute(id, ReserveSeats { booking_id: Uuid::now_v7(), seats: 3 }).await;
//! assert!(refused.is_err());
//! assert_eq!(flights.load(id).await.unwrap().state.seats_available(), 2);
//! # });
//! ```
#![warn(missing_docs)]

pub mod airports;
pub mod app;
pub mod background;
pub mod booking;
pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod integration;
pub mod invariants;
pub mod notifications;
pub mod scheduling;
pub mod search;
pub mod seed;
pub mod setup;
pub mod values;
