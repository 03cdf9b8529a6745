//! The flight search over gRPC (`proto/flights.proto`): `SearchFlights`,
//! `StreamFlights` and `GetFlight`, served by `airline serve` on its own
//! port (`AIRLINE_GRPC_LISTEN`) beside the REST API.
//!
//! It shares the REST API's query code ([`FlightQueries`]): the same
//! parameter validation ([`SearchInput`]), the same guarded read side, the
//! same `min_position` wait. Errors map to gRPC status codes as the REST
//! API maps them to HTTP statuses, with the REST error code in the message
//! and in a `google.rpc.ErrorInfo` detail; the client's deadline bounds
//! every call.
//!
//! The messages, server and client are generated from the proto at build
//! time ([`proto`]).
//!
//! [`FlightQueries`]: crate::search::FlightQueries
//! [`SearchInput`]: crate::search::SearchInput

mod convert;
mod deadline;
pub mod proto;
mod search;
mod server;
mod status;

use std::time::Duration;

pub use search::{FlightSearchService, POSITION_METADATA};
pub use server::{GrpcError, serve};
pub use status::{ERROR_CODE_KEY, ERROR_DOMAIN};

/// Limits of the gRPC server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcSettings {
    /// Longest a call without a shorter client deadline may take
    /// (`UNAVAILABLE` `timeout` after), and longest a stream may wait for
    /// one page.
    pub request_timeout: Duration,
    /// How long a shutdown waits for calls in flight.
    pub drain_timeout: Duration,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(15),
        }
    }
}
