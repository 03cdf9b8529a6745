//! The OpenAPI 3.1 document (utoipa): every route, request and response
//! schema, the error shape and the bearer security scheme.
//!
//! The schema types here document the JSON of DESIGN §5.1; the handlers
//! serialize the domain's own types, and the HTTP tests check that both
//! agree field by field.
#![allow(dead_code)]

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::error::{ErrorBody, ErrorDetail};
use super::{bookings, flights, ops};

/// The API's OpenAPI document: `ApiDoc::openapi()`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "annals airline",
        description = "Flights, seats, prices and bookings, event-sourced with annals. \
            Commands need a bearer token with a role (reader, agent, admin); flight queries are open. \
            Every error is `{\"error\": {\"code\", \"message\"}}`. Command answers carry a position \
            token (also in `X-Annals-Position`); pass it as `min_position` to read your writes."
    ),
    paths(
        flights::schedule,
        flights::reschedule,
        flights::change_price,
        flights::cancel,
        flights::search,
        flights::flight,
        bookings::request,
        bookings::booking,
        bookings::cancel,
        ops::health,
        ops::metrics,
        ops::openapi,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, MoneyBody, FlightBody, SearchPageBody, DoneBody, AcceptedBody,
        BookingBody, BookingRequestBody,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "flights", description = "Scheduling (admin) and search (open)"),
        (name = "bookings", description = "Bookings and the booking saga"),
        (name = "operations", description = "Health, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token configured in AIRLINE_TOKENS (\"token:role,...\")",
                    ))
                    .build(),
            ),
        );
    }
}

/// Headers every command accepts.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub(super) struct CommandHeaders {
    /// A UUID: a retried request with the same key runs once and answers as the first did.
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<uuid::Uuid>,
    /// A UUID kept as the events' correlation id.
    #[param(rename = "X-Request-Id")]
    request_id: Option<uuid::Uuid>,
}

/// Money: integer minor units and an ISO 4217 currency.
#[derive(ToSchema)]
#[schema(as = Money)]
pub(super) struct MoneyBody {
    /// Minor units: 45000 USD is $450.00.
    #[schema(example = 45000)]
    amount: i64,
    /// ISO 4217 code, upper case.
    #[schema(example = "USD", pattern = "^[A-Z]{3}$")]
    currency: String,
}

/// `POST /flights`.
#[derive(ToSchema)]
#[schema(as = ScheduleFlight)]
pub(super) struct ScheduleFlightBody {
    /// Two-character airline code and 1-4 digits.
    #[schema(example = "AN123")]
    flight_number: String,
    /// Origin: an IATA airport code (any airport that has one).
    #[schema(example = "JFK")]
    from: String,
    /// Destination: an IATA airport code (any airport that has one).
    #[schema(example = "LHR")]
    to: String,
    /// Departure, RFC 3339 UTC.
    #[schema(example = "2026-12-01T18:00:00Z")]
    departure: chrono::DateTime<chrono::Utc>,
    /// Arrival, after departure.
    #[schema(example = "2026-12-02T06:00:00Z")]
    arrival: chrono::DateTime<chrono::Utc>,
    /// Seats on sale (at least one).
    #[schema(example = 180, minimum = 1)]
    seats: u32,
    /// Price of one seat (positive).
    price: MoneyBody,
}

/// `POST /flights/{id}/reschedule`.
#[derive(ToSchema)]
#[schema(as = Reschedule)]
pub(super) struct RescheduleBody {
    /// New departure.
    departure: chrono::DateTime<chrono::Utc>,
    /// New arrival.
    arrival: chrono::DateTime<chrono::Utc>,
}

/// `POST /flights/{id}/price`.
#[derive(ToSchema)]
#[schema(as = ChangePrice)]
pub(super) struct PriceBody {
    /// The new price (positive, same currency).
    price: MoneyBody,
}

/// `POST /flights/{id}/cancel`.
#[derive(ToSchema)]
#[schema(as = CancelFlight)]
pub(super) struct CancelFlightBody {
    /// Why.
    reason: Option<String>,
}

/// An empty object, `{}`.
#[derive(ToSchema)]
#[schema(as = Empty)]
pub(super) struct EmptyBody {}

/// A flight command's answer.
#[derive(ToSchema)]
#[schema(as = Done)]
pub(super) struct DoneBody {
    /// The flight.
    id: uuid::Uuid,
    /// Position token: pass as `min_position` to read your writes.
    #[schema(example = "12.40")]
    position: String,
    /// The flight's version after the command.
    stream_version: u64,
}

/// A booking command's answer.
#[derive(ToSchema)]
#[schema(as = Accepted)]
pub(super) struct AcceptedBody {
    /// The booking.
    id: uuid::Uuid,
    /// Position token.
    position: String,
}

/// Who travels.
#[derive(ToSchema)]
#[schema(as = Passenger)]
pub(super) struct PassengerBody {
    /// Full name.
    #[schema(example = "Ada Lovelace")]
    name: String,
    /// E-mail address.
    #[schema(example = "ada@example.com")]
    email: String,
}

/// One flight of a booking request.
#[derive(ToSchema)]
#[schema(as = SegmentRequest)]
pub(super) struct SegmentRequestBody {
    /// The flight.
    flight_id: uuid::Uuid,
    /// Seats wanted (1 to 9).
    #[schema(minimum = 1, maximum = 9)]
    seats: u32,
}

/// How to pay.
#[derive(ToSchema)]
#[schema(as = PaymentDetails)]
pub(super) struct PaymentBody {
    /// The simulated provider pays `tok_visa`, declines `tok_declined`, never answers `tok_timeout`.
    #[schema(example = "tok_visa")]
    card_token: String,
}

/// `POST /bookings`.
#[derive(ToSchema)]
#[schema(as = BookingRequest)]
pub(super) struct BookingRequestBody {
    /// Who travels.
    passenger: PassengerBody,
    /// Flights and seats; the airline quotes the prices.
    segments: Vec<SegmentRequestBody>,
    /// How to pay.
    payment: PaymentBody,
}

/// A booked flight with its quoted price.
#[derive(ToSchema)]
#[schema(as = Segment)]
pub(super) struct SegmentBody {
    /// The flight.
    flight_id: uuid::Uuid,
    /// Seats.
    seats: u32,
    /// Price of one seat when booked.
    price: MoneyBody,
}

/// Where a booking stands.
#[derive(ToSchema)]
#[schema(as = BookingStatus)]
#[serde(rename_all = "snake_case")]
pub(super) enum BookingStatusBody {
    /// Seats and payment under way.
    Pending,
    /// Seats held and paid.
    Confirmed,
    /// Cancelled, by the passenger or because a step failed.
    Cancelled,
}

/// `GET /bookings/{id}`.
#[derive(ToSchema)]
#[schema(as = Booking)]
pub(super) struct BookingBody {
    /// The booking.
    id: uuid::Uuid,
    /// Where it stands.
    status: BookingStatusBody,
    /// Why it was cancelled (only when cancelled).
    reason: Option<String>,
    /// Who travels.
    passenger: PassengerBody,
    /// Flights, seats and prices.
    segments: Vec<SegmentBody>,
    /// What it costs.
    total: MoneyBody,
}

/// A flight's status on the read side.
#[derive(ToSchema)]
#[schema(as = FlightStatus)]
#[serde(rename_all = "snake_case")]
pub(super) enum FlightStatusBody {
    /// On sale.
    Scheduled,
    /// Will not fly: out of search, still readable by id.
    Cancelled,
}

/// `GET /flights/{id}` and each search result.
#[derive(ToSchema)]
#[schema(as = Flight)]
pub(super) struct FlightBody {
    /// The flight.
    id: uuid::Uuid,
    /// Marketing number.
    #[schema(example = "AN123")]
    flight_number: String,
    /// Origin.
    #[schema(example = "JFK")]
    from: String,
    /// Destination.
    #[schema(example = "LHR")]
    to: String,
    /// Departure, UTC.
    departure: chrono::DateTime<chrono::Utc>,
    /// Arrival, UTC.
    arrival: chrono::DateTime<chrono::Utc>,
    /// Price of one seat.
    price: MoneyBody,
    /// Seats on the flight.
    seats_total: u32,
    /// Seats still on sale.
    seats_available: u32,
    /// `scheduled` or `cancelled`.
    status: FlightStatusBody,
}

/// `GET /flights/search`.
#[derive(ToSchema)]
#[schema(as = SearchPage)]
pub(super) struct SearchPageBody {
    /// One page of scheduled flights.
    flights: Vec<FlightBody>,
    /// Pass as `after` for the next page; null on the last page.
    next: Option<String>,
    /// A position the results reflect; pass on as `min_position`.
    position: String,
}
