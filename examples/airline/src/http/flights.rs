//! Flight commands (admin) and flight queries (open).

use std::future::Future;
use std::time::Instant;

use annals::process::derive_id;
use annals::projection::ProjectionStore;
use annals::{CommandContext, Position};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use uuid::Uuid;

use super::auth::{Authorized, FlightCommands};
use super::error::ApiError;
use super::extract::{Id, Json, JsonOrEmpty, Query, hyphenated_uuid};
use super::{AppState, POSITION_HEADER, metrics};
use crate::app::Done;
use crate::error::AppError;
use crate::scheduling::{CancelFlight, ChangePrice, MAX_SEATS, RescheduleFlight, ScheduleFlight};
use crate::search::{FlightView, Raw, SearchInput, position};

/// Runs a command, counting it and timing it.
pub(super) async fn run<T>(
    command: &'static str,
    work: impl Future<Output = Result<T, AppError>>,
) -> Result<T, AppError> {
    let started = Instant::now();
    let result = work.await;
    metrics::record_command(command, metrics::outcome(&result), started.elapsed());
    result
}

/// The command context of a request: who asked (the role, never the
/// token), a correlation id (`X-Request-Id` when it is a UUID), and a
/// command id from `Idempotency-Key` (a UUID) so that a retried request runs
/// once.
pub(super) fn command_context(
    role: super::Role,
    headers: &HeaderMap,
) -> Result<CommandContext, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let correlation = header("x-request-id")
        .and_then(|v| v.trim().parse::<Uuid>().ok())
        .unwrap_or_else(Uuid::now_v7);
    let command_id = match header("idempotency-key") {
        None => None,
        Some(key) => Some(hyphenated_uuid(key).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be a UUID (hyphenated)",
            )
        })?),
    };
    let mut context = CommandContext {
        command_id,
        ..CommandContext::default()
    };
    context.metadata.correlation_id = Some(correlation);
    context.metadata.actor = Some(format!("http:{role}"));
    Ok(context)
}

/// A command's answer: the body, with the position also in `X-Annals-Position`.
pub(super) fn accepted(status: StatusCode, position: Position, body: impl Serialize) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&position.to_string()) {
        response.headers_mut().insert(POSITION_HEADER, value);
    }
    response
}

/// Checks a seat count against the bounds the OpenAPI document states.
///
/// The aggregates check it too, but a retry with a known `Idempotency-Key`
/// is answered from the log without running them: checked here, a body the
/// document rejects is refused whatever the key.
pub(super) fn check_seats(seats: u32, max: u32) -> Result<(), ApiError> {
    if (1..=max).contains(&seats) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_seats",
            format!("{seats} seats is not between 1 and {max}"),
        ))
    }
}

fn flight_error(error: AppError) -> ApiError {
    ApiError::from_app(error, "flight_not_found")
}

/// Schedule a flight.
#[utoipa::path(
    post, path = "/flights", tag = "flights",
    request_body = super::openapi::ScheduleFlightBody,
    params(super::openapi::CommandHeaders),
    responses(
        (status = 201, description = "Scheduled", body = super::openapi::DoneBody,
            headers(("X-Annals-Position" = String, description = "Read-your-writes token"))),
        (status = 400, response = super::openapi::BadRequest),
        super::openapi::Command, super::openapi::Limited, super::openapi::AnyRoute,
    ),
    security(("bearer" = []))
)]
pub(super) async fn schedule<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Authorized(role, ..): Authorized<FlightCommands>,
    headers: HeaderMap,
    Json(mut command): Json<ScheduleFlight>,
) -> Result<Response, ApiError> {
    let context = command_context(role, &headers)?;
    check_seats(command.seats, MAX_SEATS)?;
    if let Some(key) = context.command_id {
        command.flight_id = derive_id(key, "flight");
    }
    let done = run(
        "schedule_flight",
        state.airline().schedule_flight(command, context),
    )
    .await
    .map_err(flight_error)?;
    Ok(accepted(StatusCode::CREATED, done.position, done))
}

/// Move a flight.
#[utoipa::path(
    post, path = "/flights/{id}/reschedule", tag = "flights",
    request_body = super::openapi::RescheduleBody,
    params(("id" = Uuid, Path, description = "Flight id"), super::openapi::CommandHeaders),
    responses(
        (status = 200, description = "Rescheduled", body = super::openapi::DoneBody,
            headers(("X-Annals-Position" = String, description = "Read-your-writes token"))),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, description = "flight_not_found", body = super::ErrorBody),
        (status = 422, description = "Rule broken (e.g. flight_cancelled)", body = super::ErrorBody),
        super::openapi::Command, super::openapi::Limited, super::openapi::AnyRoute,
    ),
    security(("bearer" = []))
)]
pub(super) async fn reschedule<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Authorized(role, ..): Authorized<FlightCommands>,
    Id(id): Id,
    headers: HeaderMap,
    Json(command): Json<RescheduleFlight>,
) -> Result<Response, ApiError> {
    let context = command_context(role, &headers)?;
    let done = run(
        "reschedule_flight",
        state.airline().reschedule_flight(id, command, context),
    )
    .await
    .map_err(flight_error)?;
    Ok(accepted(StatusCode::OK, done.position, done))
}

/// Change a flight's price.
#[utoipa::path(
    post, path = "/flights/{id}/price", tag = "flights",
    request_body = super::openapi::PriceBody,
    params(("id" = Uuid, Path, description = "Flight id"), super::openapi::CommandHeaders),
    responses(
        (status = 200, description = "Price changed", body = super::openapi::DoneBody,
            headers(("X-Annals-Position" = String, description = "Read-your-writes token"))),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, description = "flight_not_found", body = super::ErrorBody),
        (status = 422, description = "Rule broken (flight_cancelled, currency_mismatch)", body = super::ErrorBody),
        super::openapi::Command, super::openapi::Limited, super::openapi::AnyRoute,
    ),
    security(("bearer" = []))
)]
pub(super) async fn change_price<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Authorized(role, ..): Authorized<FlightCommands>,
    Id(id): Id,
    headers: HeaderMap,
    Json(command): Json<ChangePrice>,
) -> Result<Response, ApiError> {
    let context = command_context(role, &headers)?;
    let done = run(
        "change_price",
        state.airline().change_price(id, command, context),
    )
    .await
    .map_err(flight_error)?;
    Ok(accepted(StatusCode::OK, done.position, done))
}

/// Cancel a flight.
#[utoipa::path(
    post, path = "/flights/{id}/cancel", tag = "flights",
    request_body(content = Option<super::openapi::CancelFlightBody>, description = "`{}` or `{\"reason\"}`; may be empty"),
    params(("id" = Uuid, Path, description = "Flight id"), super::openapi::CommandHeaders),
    responses(
        (status = 200, description = "Cancelled", body = super::openapi::DoneBody,
            headers(("X-Annals-Position" = String, description = "Read-your-writes token"))),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, description = "flight_not_found", body = super::ErrorBody),
        super::openapi::Command, super::openapi::Limited, super::openapi::AnyRoute,
    ),
    security(("bearer" = []))
)]
pub(super) async fn cancel<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Authorized(role, ..): Authorized<FlightCommands>,
    Id(id): Id,
    headers: HeaderMap,
    JsonOrEmpty(command): JsonOrEmpty<CancelFlight>,
) -> Result<Response, ApiError> {
    let context = command_context(role, &headers)?;
    let done: Done = run(
        "cancel_flight",
        state.airline().cancel_flight(id, command, context),
    )
    .await
    .map_err(flight_error)?;
    Ok(accepted(StatusCode::OK, done.position, done))
}

/// Read-your-writes for a single flight.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ReadParams {
    /// A position token from a command: answer only once the read side has
    /// seen it (waits up to about 5 s, then 503 `read_side_behind`).
    #[param(value_type = String, required = false, pattern = r"^[0-9]+\.[0-9]+$", example = "12.40")]
    min_position: Option<String>,
}

/// The search parameters of `GET /flights/search`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct SearchParams {
    /// Origin: an IATA airport code from the reference list, e.g. `JFK` (any case).
    #[param(value_type = String, required = false, example = "JFK")]
    from: Option<String>,
    /// Destination airport code.
    #[param(value_type = String, required = false, example = "LHR")]
    to: Option<String>,
    /// Departure day (UTC), `YYYY-MM-DD`; the first day of a range with `date_to`.
    #[param(value_type = String, format = Date, required = false)]
    date: Option<String>,
    /// Last departure day of a range (UTC, inclusive), `YYYY-MM-DD`; not before `date`.
    #[param(value_type = String, format = Date, required = false)]
    date_to: Option<String>,
    /// Highest price of a seat, in minor units.
    #[param(value_type = i64, minimum = 0, required = false)]
    max_price: Option<String>,
    /// Fewest seats still available.
    #[param(value_type = i64, minimum = 0, maximum = 4294967295_i64, required = false)]
    min_seats: Option<String>,
    /// Free text over cities, airport names and codes, and flight number.
    #[param(value_type = String, max_length = 200, required = false)]
    q: Option<String>,
    /// Sort order (default `departure`).
    #[param(value_type = super::openapi::SortBody, required = false)]
    sort: Option<String>,
    /// Page size (default 20).
    #[param(value_type = i64, minimum = 1, maximum = 100, required = false)]
    limit: Option<String>,
    /// The `next` cursor of the previous page.
    #[param(value_type = String, required = false)]
    after: Option<String>,
    /// A position token: answer only once the read side has seen it.
    #[param(value_type = String, required = false, pattern = r"^[0-9]+\.[0-9]+$", example = "12.40")]
    min_position: Option<String>,
}

/// One page of search results.
#[derive(Debug, Serialize)]
pub(super) struct SearchPage {
    flights: Vec<FlightView>,
    next: Option<String>,
    position: Position,
}

impl SearchParams {
    /// The parameters as the shared validation takes them: numbers still
    /// text, read by its rules.
    fn input(&self) -> SearchInput<'_> {
        SearchInput {
            from: self.from.as_deref(),
            to: self.to.as_deref(),
            date: self.date.as_deref(),
            date_to: self.date_to.as_deref(),
            max_price: self.max_price.as_deref().map(Raw::Text),
            min_seats: self.min_seats.as_deref().map(Raw::Text),
            q: self.q.as_deref(),
            sort: self.sort.as_deref(),
            limit: self.limit.as_deref().map(Raw::Text),
            after: self.after.as_deref(),
        }
    }
}

/// A `min_position` parameter, taken as sent.
fn parse_position(value: &Option<String>) -> Result<Option<Position>, ApiError> {
    Ok(value.as_deref().map(position).transpose()?)
}

/// Search scheduled flights.
#[utoipa::path(
    get, path = "/flights/search", tag = "flights",
    params(SearchParams),
    responses(
        (status = 200, description = "One page of scheduled flights", body = super::openapi::SearchPageBody),
        (status = 400, description = "Invalid parameter (invalid_query, invalid_airport, invalid_date, invalid_date_range, invalid_price, invalid_seats, invalid_text, invalid_limit, invalid_sort, invalid_cursor, invalid_position)", body = super::ErrorBody),
        (status = 503, response = super::openapi::Unavailable),
        super::openapi::Limited, super::openapi::AnyRoute,
    )
)]
pub(super) async fn search<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Query(params): Query<SearchParams>,
) -> Result<Response, ApiError> {
    let search = params.input().validate()?;
    let min_position = parse_position(&params.min_position)?;
    let queries = state.queries();
    let answer = queries
        .search(&search, min_position, queries.read_wait())
        .await?;
    Ok(axum::Json(SearchPage {
        flights: answer.value.flights,
        next: answer.value.next,
        position: answer.position,
    })
    .into_response())
}

/// One flight from the read model, cancelled ones included.
#[utoipa::path(
    get, path = "/flights/{id}", tag = "flights",
    params(("id" = Uuid, Path, description = "Flight id"), ReadParams),
    responses(
        (status = 200, description = "The flight", body = super::openapi::FlightBody),
        (status = 400, description = "Invalid id (invalid_id), position token (invalid_position) or query (invalid_query)", body = super::ErrorBody),
        (status = 404, description = "flight_not_found (yet: pass min_position to read your writes)", body = super::ErrorBody),
        (status = 503, response = super::openapi::Unavailable),
        super::openapi::Limited, super::openapi::AnyRoute,
    )
)]
pub(super) async fn flight<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Id(id): Id,
    Query(params): Query<ReadParams>,
) -> Result<Response, ApiError> {
    let min_position = parse_position(&params.min_position)?;
    let queries = state.queries();
    match queries
        .flight(id, min_position, queries.read_wait())
        .await?
        .value
    {
        Some(view) => Ok(axum::Json(view).into_response()),
        None => Err(ApiError::not_found(
            "flight_not_found",
            format!("flight {id} does not exist"),
        )),
    }
}
