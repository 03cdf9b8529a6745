//! The OpenAPI 3.1 document (utoipa): every route, request and response
//! schema, the error shape and the bearer security scheme.
//!
//! The schema types here document the JSON of DESIGN §5.1; the handlers
//! serialize the domain's own types, and the HTTP tests check that both
//! agree field by field.
#![allow(dead_code)]

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToResponse, ToSchema};

use super::error::{ErrorBody, ErrorDetail};
use super::{bookings, flights, ops};

/// The API's OpenAPI document: `ApiDoc::openapi()`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "annals airline",
        description = "Flights, seats, prices and bookings, event-sourced with annals. \
            Commands need a bearer token with a role (reader, agent, admin); flight queries are open. \
            Every error is `{\"error\": {\"code\", \"message\"}}`, including unknown paths (404 \
            `not_found`), methods a path does not take (405 `method_not_allowed`, with `Allow`) and \
            requests that are not parseable HTTP (400 `bad_request`, 414 `uri_too_long`, 431 \
            `headers_too_large`). Command answers carry a position token (also in \
            `X-Annals-Position`); pass it as `min_position` to read your writes. The flight and \
            booking routes are rate limited per client (429 with `Retry-After`)."
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
    components(
        schemas(
            ErrorBody, ErrorDetail, MoneyBody, FlightBody, SearchPageBody, DoneBody, AcceptedBody,
            BookingBody, BookingRequestBody, SortBody,
        ),
        responses(
            BadRequest, Unauthorized, Forbidden, Conflict, PayloadTooLarge, UriTooLong,
            UnsupportedMediaType, RateLimited, HeadersTooLarge, Internal, Unavailable,
        ),
    ),
    modifiers(&BearerAuth, &OptionalBodies),
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

/// Request bodies declared `Option<T>` (cancellations may have none) become
/// optional bodies of type `T`; utoipa would document them as `T` or JSON
/// `null`, and the server refuses `null`.
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::Schema;
        use utoipa::openapi::{RefOr, Required};
        let is_null = |schema: &RefOr<Schema>| {
            serde_json::to_value(schema).ok() == Some(serde_json::json!({"type": "null"}))
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let Some(body) = operation.request_body.as_mut() else {
                    continue;
                };
                for content in body.content.values_mut() {
                    let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
                        continue;
                    };
                    let mut rest: Vec<_> = one_of
                        .items
                        .iter()
                        .filter(|s| !is_null(s))
                        .cloned()
                        .collect();
                    if rest.len() == 1 && one_of.items.len() == 2 {
                        content.schema = rest.pop();
                        body.required = Some(Required::False);
                    }
                }
            }
        }
    }
}

/// Headers every command accepts.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub(super) struct CommandHeaders {
    /// A UUID (hyphenated, e.g. `0190c6d8-7d2a-7c3e-9a51-6a1f0c2e4b7d`): a retried request
    /// with the same key runs once and answers as the first did. Anything else is refused
    /// with 400 `invalid_idempotency_key`.
    #[param(rename = "Idempotency-Key", required = false)]
    idempotency_key: uuid::Uuid,
    /// Any value, for the caller's own tracing. When it is a UUID it becomes the correlation
    /// id of the events the command records; otherwise the server picks one.
    #[param(rename = "X-Request-Id", required = false)]
    request_id: String,
}

// The error answers several routes share, each a `#/components/responses`
// entry. Routes list them through the groups below (or one by one with
// `response = ...`), so each status is described once.

/// Malformed or invalid input; `error.code` says what: `bad_request` (not parseable HTTP),
/// `malformed_json`, `invalid_body`, `unknown_field`, `missing_field`, `invalid_id`,
/// `invalid_query`, `invalid_idempotency_key`, or a field's own code (`invalid_airport`,
/// `invalid_seats`, ...).
#[derive(ToResponse)]
pub(super) struct BadRequest(ErrorBody);

/// `unauthorized`: no bearer token, or an unknown one.
#[derive(ToResponse)]
#[response(headers(
    ("WWW-Authenticate" = String, description = "`Bearer realm=\"airline\"`")
))]
pub(super) struct Unauthorized(ErrorBody);

/// `forbidden`: the token's role may not do this.
#[derive(ToResponse)]
pub(super) struct Forbidden(ErrorBody);

/// `conflict`: a concurrent change to the same resource won; retry. Creating commands also
/// answer `flight_exists` or `booking_exists`, and `POST /flights` answers
/// `flight_number_taken` for a number that already flies on that departure day.
#[derive(ToResponse)]
pub(super) struct Conflict(ErrorBody);

/// `payload_too_large`: the body (or its declared `Content-Length`) is over the body limit
/// (64 KiB by default).
#[derive(ToResponse)]
pub(super) struct PayloadTooLarge(ErrorBody);

/// `uri_too_long`: the request URI is over 64 KiB.
#[derive(ToResponse)]
pub(super) struct UriTooLong(ErrorBody);

/// `unsupported_media_type`: a body that is not `application/json` (or `+json`).
#[derive(ToResponse)]
pub(super) struct UnsupportedMediaType(ErrorBody);

/// `rate_limited`: this client's token bucket is empty.
#[derive(ToResponse)]
#[response(headers(
    ("Retry-After" = u64, description = "Seconds to wait before retrying (at least 1)")
))]
pub(super) struct RateLimited(ErrorBody);

/// `headers_too_large`: more than 100 headers, or a header section too large to buffer.
#[derive(ToResponse)]
pub(super) struct HeadersTooLarge(ErrorBody);

/// `internal`: a bug or an unexpected failure; the server log has the details.
#[derive(ToResponse)]
pub(super) struct Internal(ErrorBody);

/// The service cannot answer now; retry later. `error.code`: `timeout` (the request took
/// longer than the request timeout, 10 s by default), `unavailable` (the event store is
/// down), `read_side_behind` (`min_position` not reached in time), `read_side_unavailable`.
#[derive(ToResponse)]
pub(super) struct Unavailable(ErrorBody);

/// `/health`'s 503: its report, or the `timeout` error when the checks took too long.
#[derive(ToSchema)]
#[serde(untagged)]
pub(super) enum HealthOrTimeout {
    /// Something is down.
    Report(super::ops::Health),
    /// The checks took too long.
    Timeout(ErrorBody),
}

/// What any route may answer, whatever it does: the HTTP layer's limits and failures.
#[derive(IntoResponses)]
pub(super) enum AnyRoute {
    /// Body over the limit.
    #[response(status = 413)]
    PayloadTooLarge(#[ref_response] PayloadTooLarge),
    /// URI too long.
    #[response(status = 414)]
    UriTooLong(#[ref_response] UriTooLong),
    /// Headers too large.
    #[response(status = 431)]
    HeadersTooLarge(#[ref_response] HeadersTooLarge),
    /// Internal error.
    #[response(status = 500)]
    Internal(#[ref_response] Internal),
}

/// What the routes behind the rate limiter (every flight and booking route) add.
#[derive(IntoResponses)]
pub(super) enum Limited {
    /// Rate limited.
    #[response(status = 429)]
    RateLimited(#[ref_response] RateLimited),
}

/// What commands add: they need a token with the right role and a JSON body (or, for
/// cancellations, none), and they may race other commands.
#[derive(IntoResponses)]
pub(super) enum Command {
    /// No or unknown token.
    #[response(status = 401)]
    Unauthorized(#[ref_response] Unauthorized),
    /// Role not allowed.
    #[response(status = 403)]
    Forbidden(#[ref_response] Forbidden),
    /// Not JSON.
    #[response(status = 415)]
    UnsupportedMediaType(#[ref_response] UnsupportedMediaType),
    /// A concurrent change won, or the resource exists.
    #[response(status = 409)]
    Conflict(#[ref_response] Conflict),
    /// The service cannot answer now.
    #[response(status = 503)]
    Unavailable(#[ref_response] Unavailable),
}

/// The order of search results.
#[derive(ToSchema)]
#[schema(as = Sort)]
pub(super) enum SortBody {
    /// Cheapest first.
    #[serde(rename = "price")]
    Price,
    /// Dearest first.
    #[serde(rename = "-price")]
    PriceDesc,
    /// Earliest first.
    #[serde(rename = "departure")]
    Departure,
    /// Latest first.
    #[serde(rename = "-departure")]
    DepartureDesc,
}

/// Money: integer minor units and an ISO 4217 currency.
#[derive(ToSchema)]
#[schema(as = Money)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
    /// Seats on sale, 1 to 1000.
    #[schema(example = 180, minimum = 1, maximum = 1000)]
    seats: u32,
    /// Price of one seat (positive).
    price: MoneyBody,
}

/// `POST /flights/{id}/reschedule`.
#[derive(ToSchema)]
#[schema(as = Reschedule)]
#[serde(deny_unknown_fields)]
pub(super) struct RescheduleBody {
    /// New departure.
    departure: chrono::DateTime<chrono::Utc>,
    /// New arrival.
    arrival: chrono::DateTime<chrono::Utc>,
}

/// `POST /flights/{id}/price`.
#[derive(ToSchema)]
#[schema(as = ChangePrice)]
#[serde(deny_unknown_fields)]
pub(super) struct PriceBody {
    /// The new price (positive, same currency).
    price: MoneyBody,
}

/// `POST /flights/{id}/cancel`.
#[derive(ToSchema)]
#[schema(as = CancelFlight)]
#[serde(deny_unknown_fields)]
pub(super) struct CancelFlightBody {
    /// Why (a string; leave it out for no reason).
    #[schema(required = false)]
    reason: String,
}

/// An empty object, `{}`.
#[derive(ToSchema)]
#[schema(as = Empty)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub(super) struct PaymentBody {
    /// The simulated provider pays `tok_visa`, declines `tok_declined`, never answers `tok_timeout`.
    #[schema(example = "tok_visa")]
    card_token: String,
}

/// `POST /bookings`.
#[derive(ToSchema)]
#[schema(as = BookingRequest)]
#[serde(deny_unknown_fields)]
pub(super) struct BookingRequestBody {
    /// Who travels.
    passenger: PassengerBody,
    /// Flights and seats (at least one flight, each once); the airline quotes the prices.
    #[schema(min_items = 1)]
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
