//! Booking commands (agent, admin) and reads (any role).

use annals::Position;
use annals::projection::ProjectionStore;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use super::auth::{Authorized, BookingCommands, BookingReads};
use super::error::ApiError;
use super::extract::{Id, Json, JsonOrEmpty};
use super::flights::{accepted, check_seats, command_context, run};
use crate::app::{BookingOrder, SeatsOn};
use crate::booking::MAX_SEATS_PER_SEGMENT;
use crate::booking::Passenger;

/// The body of `POST /bookings`: flights and seats, no prices (the airline
/// quotes them). Documented by `openapi::BookingRequestBody`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingRequest {
    /// Who travels.
    pub passenger: Passenger,
    /// Which flights, how many seats.
    pub segments: Vec<SegmentRequest>,
    /// How to pay.
    pub payment: PaymentDetails,
}

/// One flight of a booking request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRequest {
    /// The flight.
    pub flight_id: Uuid,
    /// Seats wanted.
    pub seats: u32,
}

/// Payment details of a booking request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentDetails {
    /// The payment provider's card token.
    pub card_token: String,
}

impl From<BookingRequest> for BookingOrder {
    fn from(request: BookingRequest) -> Self {
        BookingOrder {
            passenger: request.passenger,
            segments: request
                .segments
                .into_iter()
                .map(|s| SeatsOn {
                    flight_id: s.flight_id,
                    seats: s.seats,
                })
                .collect(),
            card_token: request.payment.card_token,
        }
    }
}

/// The answer to a booking command.
#[derive(Debug, Serialize)]
struct Accepted {
    id: Uuid,
    position: Position,
}

/// The body of `POST /bookings/{id}/cancel`: `{}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CancelBookingBody {}

/// Request a booking; the saga holds seats, takes payment and confirms (or
/// compensates) after the answer.
#[utoipa::path(
    post, path = "/bookings", tag = "bookings",
    request_body = super::openapi::BookingRequestBody,
    params(super::openapi::CommandHeaders),
    responses(
        (status = 202, description = "Requested; poll GET /bookings/{id}", body = super::openapi::AcceptedBody,
            headers(("X-Annals-Position" = String, description = "Read-your-writes token"))),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, description = "flight_not_found", body = super::ErrorBody),
        (status = 422, description = "Rule broken (flight_cancelled, ...)", body = super::ErrorBody),
        super::openapi::Command, super::openapi::Limited, super::openapi::AnyRoute,
    ),
    security(("bearer" = []))
)]
pub(super) async fn request<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Authorized(role, ..): Authorized<BookingCommands>,
    headers: HeaderMap,
    Json(request): Json<BookingRequest>,
) -> Result<Response, ApiError> {
    let context = command_context(role, &headers)?;
    // As in `check_seats`: what the document bounds is checked before an
    // idempotent retry could be answered from the log.
    if request.segments.is_empty() {
        return Err(ApiError::bad_request(
            "no_segments",
            "a booking needs at least one flight",
        ));
    }
    for segment in &request.segments {
        check_seats(segment.seats, MAX_SEATS_PER_SEGMENT)?;
    }
    let done = run(
        "request_booking",
        state.airline().request_booking(request.into(), context),
    )
    .await
    .map_err(|e| ApiError::from_app(e, "flight_not_found"))?;
    Ok(accepted(
        StatusCode::ACCEPTED,
        done.position,
        Accepted {
            id: done.id,
            position: done.position,
        },
    ))
}

/// A booking as it stands.
#[utoipa::path(
    get, path = "/bookings/{id}", tag = "bookings",
    params(("id" = Uuid, Path, description = "Booking id")),
    responses(
        (status = 200, description = "The booking", body = super::openapi::BookingBody),
        (status = 400, description = "invalid_id", body = super::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, description = "booking_not_found", body = super::ErrorBody),
        (status = 503, response = super::openapi::Unavailable),
        super::openapi::Limited, super::openapi::AnyRoute,
    ),
    security(("bearer" = []))
)]
pub(super) async fn booking<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Authorized(..): Authorized<BookingReads>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let view = state
        .airline()
        .booking(id)
        .await
        .map_err(|e| ApiError::from_app(e, "booking_not_found"))?;
    Ok(axum::Json(view).into_response())
}

/// Cancel a booking; the saga releases its seats and refunds it.
#[utoipa::path(
    post, path = "/bookings/{id}/cancel", tag = "bookings",
    request_body(content = Option<super::openapi::EmptyBody>, description = "`{}`; may be empty"),
    params(("id" = Uuid, Path, description = "Booking id"), super::openapi::CommandHeaders),
    responses(
        (status = 200, description = "Cancelled (or already cancelled)", body = super::openapi::AcceptedBody,
            headers(("X-Annals-Position" = String, description = "Read-your-writes token"))),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, description = "booking_not_found", body = super::ErrorBody),
        super::openapi::Command, super::openapi::Limited, super::openapi::AnyRoute,
    ),
    security(("bearer" = []))
)]
pub(super) async fn cancel<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Authorized(role, ..): Authorized<BookingCommands>,
    Id(id): Id,
    headers: HeaderMap,
    JsonOrEmpty(CancelBookingBody {}): JsonOrEmpty<CancelBookingBody>,
) -> Result<Response, ApiError> {
    let context = command_context(role, &headers)?;
    let done = run(
        "cancel_booking",
        state.airline().cancel_booking(id, context),
    )
    .await
    .map_err(|e| ApiError::from_app(e, "booking_not_found"))?;
    Ok(accepted(
        StatusCode::OK,
        done.position,
        Accepted {
            id: done.id,
            position: done.position,
        },
    ))
}
